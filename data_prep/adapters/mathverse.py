"""MathVerse (`AI4Math/MathVerse`, config `testmini`, split `testmini`).

Hub schema: `sample_index`, `problem_index`, `problem_version` (`Text Dominant`, `Text Lite`,
`Vision Intensive`, `Vision Dominant`, `Vision Only`; `Text Only` in the `testmini_text_only`
config), `question`, `image` (Image; a relative path string in the `testmini.json` release),
`answer`, `question_type` (`multi-choice` | `free-form`), `metadata` (split, source, subject,
subfield), `query_wo`, `query_cot`, `question_for_eval`.

Multiple-choice golds are letters. The options live inside the question text
(`...\\nChoices:\\nA:30°\\nB:40°...`): when they parse, they move to `Sample.choices` (so the
prompt builder prints them once, in the house format) and `meta["answer_text"]` holds the gold
option; when they do not (`Vision Only`: the options are in the image) the question is kept as is
and `choices` is None. Options: `versions` (list of problem versions to keep; None keeps all).
"""
from __future__ import annotations

import re

from ..schema import Sample
from .base import Ctx, SourceDef, bad, define_source, get_str, image_ref, letter, record_id

NAME = "mathverse"
VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only", "Text Only")
QUESTION_TYPES = ("multi-choice", "free-form")
VISION_ONLY_QUESTION = "Answer the question shown in the image."
_CHOICES_HEAD = re.compile(r"(?:^|\n)\s*choices?\s*[:：]\s*\n", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-H])\)?\s*[:：.)]\s*(.*?)\s*$")
_LETTER = re.compile(r"^\(?([A-H])\)?\.?$")


def split_choices(question: str) -> tuple[str, list[str] | None]:
    """`"stem\\nChoices:\\nA:1\\nB:2"` -> ("stem", ["1", "2"]); (question, None) if no clean block."""
    heads = list(_CHOICES_HEAD.finditer(question))
    if not heads:
        return question, None
    head = heads[-1]
    lines = [line for line in question[head.end():].split("\n") if line.strip()]
    options = []
    for i, line in enumerate(lines):
        m = _OPTION.match(line)
        if not m or m.group(1) != letter(i):
            return question, None
        options.append(m.group(2))
    if len(options) < 2:
        return question, None
    return question[:head.start()].rstrip(), options


def convert(rec: dict, ctx: Ctx) -> Sample | None:
    rid = record_id(rec, "sample_index", ctx)
    version = get_str(rec, "problem_version", ctx, rid)
    if version not in VERSIONS:
        raise bad(ctx, rid, "problem_version", f"expected one of {list(VERSIONS)}, got {version!r}")
    wanted = ctx.options["versions"]
    if wanted is not None and version not in wanted:
        return None  # left out on purpose, not a bad record
    question_type = get_str(rec, "question_type", ctx, rid)
    if question_type not in QUESTION_TYPES:
        raise bad(ctx, rid, "question_type", f"expected one of {list(QUESTION_TYPES)}, got {question_type!r}")
    raw_question = get_str(rec, "question", ctx, rid, allow_empty=True)
    answer = get_str(rec, "answer", ctx, rid).strip()
    image = image_ref(rec.get("image"), "image", ctx, rid, optional=version == "Text Only")
    metadata = rec.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad(ctx, rid, "metadata", f"expected a struct, got {type(metadata).__name__}")
    metadata = dict(metadata or {})

    question, choices = raw_question.strip(), None
    meta = {"problem_version": version, "problem_index": rec.get("problem_index"),
            "question_type": question_type, "metadata": metadata,
            "subject": metadata.get("subject"), "subfield": metadata.get("subfield"),
            "query_wo": rec.get("query_wo"), "query_cot": rec.get("query_cot"),
            "question_for_eval": rec.get("question_for_eval"), "metric": "mathverse"}
    if question_type == "multi-choice":
        question, choices = split_choices(question)
        m = _LETTER.match(answer)
        if m:
            gold = m.group(1)
        elif choices and answer in choices:
            gold = letter(choices.index(answer))
        else:
            raise bad(ctx, rid, "answer", f"expected an option letter for a multi-choice question, got {answer!r}")
        if choices is not None:
            if ord(gold) - ord("A") >= len(choices):
                raise bad(ctx, rid, "answer", f"letter {gold} but the question lists {len(choices)} choices")
            meta["answer_text"] = choices[ord(gold) - ord("A")]
        answer, answer_type = gold, "multiple_choice"
    else:
        answer_type = "math"
    if not question:
        question = VISION_ONLY_QUESTION
    return Sample(id=rid, images=[image] if image is not None else [], question=question,
                  answer=answer, answer_type=answer_type, choices=choices, task=NAME, meta=meta)


def check_options(options: dict) -> dict:
    versions = options["versions"]
    if versions is None:
        return options
    if isinstance(versions, str):
        versions = [versions]
    unknown = [v for v in versions if v not in VERSIONS]
    if unknown:
        raise ValueError(f"data source {NAME!r}: unknown problem version(s) {unknown}, supported: {list(VERSIONS)}")
    return {**options, "versions": tuple(versions)}


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="AI4Math/MathVerse", split="testmini", config="testmini",
    image_columns=("image",), options={"versions": None}, check_options=check_options, doc=__doc__,
    required_columns=(("question",), ("answer",))))
