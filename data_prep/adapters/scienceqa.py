"""ScienceQA-IMG (`lmms-lab/ScienceQA`, config `ScienceQA-IMG`, split `test` by default).

Hub schema: `image` (Image), `question` (str), `choices` (list of str), `answer` (int8: the
index of the gold in `choices`), `hint` (str, the context; often empty), `task`, `grade`,
`subject`, `topic`, `category`, `skill`, `lecture`, `solution` (str). No id column: ids are
`scienceqa-<split>-<row>`.

`Sample.answer` is the gold *letter*; the raw index is `meta["answer_index"]`. The hint goes to
`meta["hint"]`, where the prompt builder places it before the question (ScienceQA's context).
`require_image=False` admits the text-only questions of the `ScienceQA-FULL` config.
"""
from __future__ import annotations

from ..schema import Sample
from .base import Ctx, SourceDef, bad, define_source, get_int, get_str, get_str_list, image_ref, letter, record_id

NAME = "scienceqa"
_TEXT_FIELDS = ("task", "grade", "subject", "topic", "category", "skill", "lecture", "solution")


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    question = get_str(rec, "question", ctx, rid)
    choices = get_str_list(rec, "choices", ctx, rid)
    if len(choices) < 2:
        raise bad(ctx, rid, "choices", f"expected at least 2 choices, got {len(choices)}")
    index = get_int(rec, "answer", ctx, rid)
    if not 0 <= index < len(choices):
        raise bad(ctx, rid, "answer", f"expected an index into the {len(choices)} choices, got {index}")
    hint = get_str(rec, "hint", ctx, rid, allow_empty=True, optional=True)
    image = image_ref(rec.get("image"), "image", ctx, rid, optional=not ctx.options["require_image"])
    meta = {"answer_index": index, "answer_text": choices[index], "metric": "multiple_choice"}
    if hint and hint.strip():
        meta["hint"] = hint.strip()
    for name in _TEXT_FIELDS:
        value = rec.get(name)
        if value is not None:
            meta[name] = value
    return Sample(id=rid, images=[image] if image is not None else [], question=question.strip(),
                  answer=letter(index), answer_type="multiple_choice", choices=choices, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="lmms-lab/ScienceQA", split="test", config="ScienceQA-IMG",
    image_columns=("image",), options={"require_image": True}, doc=__doc__,
    required_columns=(("question",), ("choices",), ("answer",))))
