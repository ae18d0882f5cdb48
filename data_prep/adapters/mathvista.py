"""MathVista (`AI4Math/MathVista`, split `testmini` by default).

Hub schema: `pid`, `question`, `image` (str, relative path), `decoded_image` (Image),
`choices` (list of str or null), `unit` (str or null), `precision` (float or null), `answer` (str),
`question_type` (`multi_choice` | `free_form`), `answer_type` (`text` | `integer` | `float` |
`list`), `metadata` (struct: category, context, grade, img_height, img_width, language, skills,
source, split, task), `query` (the official full prompt).

For multiple choice the gold is the option *text*, as MathVista gives it (the official scorer
compares option text); `meta["answer_letter"]` holds its letter. `meta` carries what the MathVista
verifier needs: `precision`, `unit`, `question_type`, `answer_type` (MathVista's own, also as
`mathvista_answer_type`, the key `rewards` reads), `metadata`, and `extraction` when a prediction
file's record carries the answer MathVista's GPT step extracted (the verifier then uses it).
`meta["hint"]` (shown by the prompt builder) says what form the answer takes; `hints=False`
leaves it out.
"""
from __future__ import annotations

from ..schema import Sample
from ._text import is_number, literal_list
from .base import (Ctx, SourceDef, bad, define_source, get_str, get_str_list, image_ref, letter,
                   record_id)

NAME = "mathvista"
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = {"integer": "integer", "float": "float", "text": "text", "list": "list"}


def _hint(question_type: str, answer_type: str, precision: int | None) -> str | None:
    if question_type == "multi_choice":
        return "Choose the correct option and answer with its letter."
    if answer_type == "integer":
        return "The answer is an integer."
    if answer_type == "float":
        if precision is not None:
            return f"The answer is a number with {precision} digit(s) after the decimal point."
        return "The answer is a decimal number."
    if answer_type == "list":
        return "The answer is a Python list."
    return None


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "pid", ctx)
    question = get_str(rec, "question", ctx, rid)
    question_type = get_str(rec, "question_type", ctx, rid)
    if question_type not in QUESTION_TYPES:
        raise bad(ctx, rid, "question_type", f"expected one of {list(QUESTION_TYPES)}, got {question_type!r}")
    mv_answer_type = get_str(rec, "answer_type", ctx, rid)
    if mv_answer_type not in ANSWER_TYPES:
        raise bad(ctx, rid, "answer_type", f"expected one of {list(ANSWER_TYPES)}, got {mv_answer_type!r}")
    answer = get_str(rec, "answer", ctx, rid).strip()

    precision_raw = rec.get("precision")
    if isinstance(precision_raw, float) and precision_raw != precision_raw:
        precision_raw = None  # NaN: how pandas-written files spell a null float
    if precision_raw is not None and (isinstance(precision_raw, bool) or not isinstance(precision_raw, (int, float))
                                      or precision_raw < 0):
        raise bad(ctx, rid, "precision", f"expected a non-negative number or null, got {precision_raw!r}")
    precision = int(precision_raw) if precision_raw is not None else None
    unit = get_str(rec, "unit", ctx, rid, optional=True)
    unit = unit.strip() if unit else None
    metadata = rec.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad(ctx, rid, "metadata", f"expected a struct, got {type(metadata).__name__}")
    metadata = dict(metadata or {})

    # The image: embedded bytes, else the relative path in `image`.
    image = None
    if ctx.images_loaded:
        if rec.get("decoded_image") is not None:
            image = image_ref(rec["decoded_image"], "decoded_image", ctx, rid)
        elif rec.get("image"):
            image = image_ref(rec["image"], "image", ctx, rid)
        else:
            raise bad(ctx, rid, "decoded_image", "expected an image (`decoded_image` or an `image` path)")

    meta = {
        "question_type": question_type, "answer_type": mv_answer_type,
        "mathvista_answer_type": mv_answer_type, "precision": precision,
        "unit": unit, "metadata": metadata, "query": rec.get("query"), "metric": "mathvista",
        "category": metadata.get("category"), "task_name": metadata.get("task"),
        "skills": list(metadata.get("skills") or []), "context": metadata.get("context"),
        "grade": metadata.get("grade"), "language": metadata.get("language"),
    }
    if question_type == "multi_choice":
        choices = get_str_list(rec, "choices", ctx, rid)
        stripped = [c.strip() for c in choices]
        if answer not in stripped:
            raise bad(ctx, rid, "answer", f"expected one of the choices {choices}, got {answer!r}")
        meta["answer_letter"] = letter(stripped.index(answer))
        sample_type = "multiple_choice"
    else:
        choices = None
        if mv_answer_type == "integer" and not (is_number(answer) and float(answer.replace(",", "")).is_integer()):
            raise bad(ctx, rid, "answer", f"expected an integer (answer_type integer), got {answer!r}")
        if mv_answer_type == "float" and not is_number(answer):
            raise bad(ctx, rid, "answer", f"expected a number (answer_type float), got {answer!r}")
        if mv_answer_type == "list":
            parsed = literal_list(answer)
            if parsed is None:
                raise bad(ctx, rid, "answer", f"expected a list literal (answer_type list), got {answer!r}")
            meta["answer_list"] = parsed
        sample_type = ANSWER_TYPES[mv_answer_type]
    if rec.get("extraction") is not None:  # a prediction file's answer from MathVista's GPT extraction step
        meta["extraction"] = str(rec["extraction"])
    if ctx.options["hints"]:
        hint = _hint(question_type, mv_answer_type, precision)
        if hint:
            meta["hint"] = hint
    return Sample(id=rid, images=[image] if image is not None else [], question=question.strip(),
                  answer=answer, answer_type=sample_type, choices=choices, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="AI4Math/MathVista", split="testmini",
    image_columns=("decoded_image",), options={"hints": True}, doc=__doc__,
    required_columns=(("question",), ("question_type",), ("answer_type",), ("answer",))))
