"""GeoQA in the R1-V forms.

- Training set `leonardPKU/GEOQA_R1V_Train_8K`: `image` (Image), `problem` (str),
  `solution` (str, the gold, possibly wrapped in `<answer>...</answer>`).
- Evaluation rows (R1-V's `geoqa_test_prompts.jsonl`): `{"image_path", "question",
  "ground_truth"}`; `image_path` (`./Geo170K/images/test/0.png`) is looked for beside the
  file first, then under `image_dir`.

Golds keep their units (`140°`, `3cm`): the math verifiers normalise them, and dropping them here
would lose the information for anyone printing the gold.
"""
from __future__ import annotations

from ..schema import Sample
from ._text import strip_bare_image_tokens, unwrap_answer_tags
from .base import Ctx, SourceDef, bad, define_source, get_str, image_ref, record_id

NAME = "geoqa"


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    if rec.get("problem") is not None:  # R1-V training form
        question = get_str(rec, "problem", ctx, rid)
        raw_answer = get_str(rec, "solution", ctx, rid)
        image_field = "image"
        form = "r1v_train"
    elif rec.get("question") is not None:  # R1-V evaluation rows
        question = get_str(rec, "question", ctx, rid)
        raw_answer = get_str(rec, "ground_truth", ctx, rid)
        image_field = "image_path" if rec.get("image_path") is not None else "image"
        form = "r1v_eval"
    else:
        raise bad(ctx, rid, "problem", "expected `problem` (R1-V training form) or `question` (evaluation rows)")
    answer = unwrap_answer_tags(raw_answer)
    if not answer:
        raise bad(ctx, rid, "solution" if form == "r1v_train" else "ground_truth", "expected a non-empty answer")
    image = image_ref(rec.get(image_field), image_field, ctx, rid)
    return Sample(id=rid, images=[image] if image is not None else [],
                  question=strip_bare_image_tokens(question), answer=answer, answer_type="math",
                  task=NAME, meta={"form": form, "solution_raw": raw_answer, "metric": "math"})


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="leonardPKU/GEOQA_R1V_Train_8K", split="train",
    image_columns=("image", "image_path"), doc=__doc__,
    required_columns=(("problem", "question"), ("solution", "ground_truth"))))
