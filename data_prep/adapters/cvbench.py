"""CV-Bench, the Cambrian vision-centric benchmark (`nyu-visionx/CV-Bench`, split `test`, 2638
questions): the evaluation set of VisualThinker-R1-Zero's SAT -> CV-Bench recipe.

Hub schema (`test.parquet`; the same rows split by type in `test_2d.parquet` / `test_3d.parquet`):
`idx` (int), `type` (`2D` or `3D`), `task` (`Count`, `Relation`, `Depth`, `Distance`), `image`
(Image), `question` (str), `choices` (list of str), `answer` (str, the gold letter in brackets:
`(A)`), `prompt` (str, the question with its lettered options, as the benchmark's own evaluation
asks it), `filename`, `source` (`ADE20K`, `COCO`, `Omni3D`), `source_dataset`, `source_filename`,
`target_class`, `target_size`, `bbox`.

`Sample.answer` is the gold letter and `choices` the options. `meta` keeps `task`, `type` and
`source`, the keys the benchmark's accuracies are broken down by (eval's CV-Bench overall reads
`task` and `source`), and `prompt`.
"""
from __future__ import annotations

import re

from ..schema import Sample
from .base import Ctx, SourceDef, bad, define_source, get_str, get_str_list, image_ref, letter, record_id

NAME = "cv_bench"
_GOLD = re.compile(r"\(\s*([A-Za-z])\s*\)|([A-Za-z])")


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "idx", ctx)
    question = get_str(rec, "question", ctx, rid)
    choices = get_str_list(rec, "choices", ctx, rid)
    if len(choices) < 2:
        raise bad(ctx, rid, "choices", f"expected at least 2 choices, got {len(choices)}")
    raw = get_str(rec, "answer", ctx, rid)
    m = _GOLD.fullmatch(raw.strip())
    index = ord((m.group(1) or m.group(2)).upper()) - ord("A") if m else -1
    if not 0 <= index < len(choices):
        raise bad(ctx, rid, "answer", f"expected a letter such as '(A)' naming one of the {len(choices)} "
                                      f"choices, got {raw!r}")
    meta = {"task": get_str(rec, "task", ctx, rid), "type": get_str(rec, "type", ctx, rid),
            "source": get_str(rec, "source", ctx, rid), "answer_text": choices[index],
            "metric": "multiple_choice"}
    for name in ("prompt", "filename", "source_dataset", "source_filename"):
        value = rec.get(name)
        if isinstance(value, str) and value:
            meta[name] = value
    image = image_ref(rec.get("image"), "image", ctx, rid)
    return Sample(id=rid, images=[image] if image is not None else [], question=question.strip(),
                  answer=letter(index), answer_type="multiple_choice", choices=choices, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="nyu-visionx/CV-Bench", split="test", image_columns=("image",),
    doc=__doc__,
    required_columns=(("idx",), ("question",), ("choices",), ("answer",), ("task",), ("type",), ("source",),
                      ("image",))))
