"""ChartQA (`HuggingFaceM4/ChartQA`).

Hub schema: `image` (Image), `query` (str), `label` (list of str: the gold answers),
`human_or_machine` (ClassLabel: 0 human, 1 machine). There is no id column: ids are
`chartqa-<split>-<row>`.

`Sample.answer` is the first label; `meta["labels"]` holds them all (the relaxed-accuracy scorer
takes the best over them) and `meta["human_or_machine"]` the question's origin by name.
`answer_type` is `float` for a numeric gold (`%` allowed), else `text`; `meta["metric"]` is
`relaxed_accuracy` either way.
"""
from __future__ import annotations

from ..schema import Sample
from ._text import is_number
from .base import Ctx, SourceDef, bad, class_label_name, define_source, get_str, get_str_list, image_ref, record_id

NAME = "chartqa"
ORIGINS = ("human", "machine")


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    question = get_str(rec, "query", ctx, rid)
    labels = [s.strip() for s in get_str_list(rec, "label", ctx, rid)]
    if not all(labels):
        raise bad(ctx, rid, "label", f"expected non-empty gold labels, got {labels!r}")
    origin = class_label_name(rec.get("human_or_machine"), "human_or_machine", ctx)
    if isinstance(origin, int) and not isinstance(origin, bool) and 0 <= origin < len(ORIGINS):
        origin = ORIGINS[origin]  # a file without the ClassLabel metadata
    if origin not in ORIGINS:
        raise bad(ctx, rid, "human_or_machine", f"expected one of {list(ORIGINS)} (or 0/1), got {origin!r}")
    image = image_ref(rec.get("image"), "image", ctx, rid)
    answer = labels[0]
    numeric = is_number(answer.rstrip("%"))
    return Sample(id=rid, images=[image] if image is not None else [], question=question.strip(),
                  answer=answer, answer_type="float" if numeric else "text", task=NAME,
                  meta={"labels": labels, "human_or_machine": origin, "metric": "relaxed_accuracy"})


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="HuggingFaceM4/ChartQA", split="train",
    image_columns=("image",), doc=__doc__,
    required_columns=(("query",), ("label",))))
