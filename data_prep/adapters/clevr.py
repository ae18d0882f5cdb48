"""CLEVR counting (R1-V's `leonardPKU/clevr_cogen_a_train`) and SuperCLEVR counting rows.

- `clevr_count`: `image` (Image), `problem` (str), `solution` (str, e.g. `<answer> 3 </answer>`).
- `superclevr`: R1-V's evaluation rows `{"image_path", "question", "ground_truth": int}` (a local
  JSON/JSONL file; `image_path` (`./images/superCLEVR_new_025000.png`) is looked for beside the
  file first, then under `image_dir`). There is no hub copy.

Both golds are integer counts (stored as strings, like every other integer gold).
"""
from __future__ import annotations

from ..schema import Sample
from ._text import is_integer_text, strip_bare_image_tokens, unwrap_answer_tags
from .base import Ctx, SourceDef, bad, define_source, get_int, get_str, image_ref, record_id


def convert_clevr(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    question = strip_bare_image_tokens(get_str(rec, "problem", ctx, rid))
    raw = get_str(rec, "solution", ctx, rid)
    answer = unwrap_answer_tags(raw)
    if not is_integer_text(answer):
        raise bad(ctx, rid, "solution", f"expected an integer count (optionally in <answer> tags), got {raw!r}")
    image = image_ref(rec.get("image"), "image", ctx, rid)
    return Sample(id=rid, images=[image] if image is not None else [], question=question,
                  answer=str(int(answer)), answer_type="integer", task="clevr_count",
                  meta={"solution_raw": raw, "category": "counting", "metric": "integer"})


def convert_superclevr(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    question = strip_bare_image_tokens(get_str(rec, "question", ctx, rid))
    count = get_int(rec, "ground_truth", ctx, rid)
    field = "image_path" if rec.get("image_path") is not None else "image"
    image = image_ref(rec.get(field), field, ctx, rid)
    return Sample(id=rid, images=[image] if image is not None else [], question=question,
                  answer=str(count), answer_type="integer", task="superclevr",
                  meta={"category": "counting", "metric": "integer"})


load_clevr = define_source(SourceDef(
    name="clevr_count", convert=convert_clevr, hub_id="leonardPKU/clevr_cogen_a_train", split="train",
    image_columns=("image",), doc=__doc__,
    required_columns=(("problem", "question"), ("solution", "ground_truth"))))
load_superclevr = define_source(SourceDef(
    name="superclevr", convert=convert_superclevr, hub_id=None, split="test",
    image_columns=("image_path", "image"), doc=__doc__,
    required_columns=(("problem", "question"), ("solution", "ground_truth"))))
