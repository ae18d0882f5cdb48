"""MMMU (`MMMU/MMMU`: 30 subject configs; split `validation` by default).

Hub schema: `id` (str, e.g. `validation_Art_1`), `question` (str, with `<image N>` markers),
`options` (str holding a Python list literal, e.g. "['A drawing', '<image 2>']"), `explanation`,
`image_1` ... `image_7` (Image or null), `img_type` (str holding a list), `answer` (str: a letter
for multiple choice, free text for open questions), `topic_difficulty`, `question_type`
(`multiple-choice` | `open`), `subfield`.

`options` is parsed with `ast.literal_eval`, never `eval`. `Sample.images[k]` is `image_{k+1}`
so that the `<image N>` markers in the question and options point at the right image (the prompt
builder places images where the markers say); a marker naming an absent image is a bad record.
`config=None` on the hub loads all 30 subjects; a local folder laid out like the hub
(`<Subject>/<split>-*.parquet`) takes `config=<Subject>` or is read whole.
"""
from __future__ import annotations

import re

from ..schema import Sample
from ._text import MARKER, is_number, literal_list
from .base import Ctx, SourceDef, bad, define_source, get_str, image_ref, letter, record_id

NAME = "mmmu"
N_IMAGES = 7
SUBJECTS = (
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
    "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science",
    "Design", "Diagnostics_and_Laboratory_Medicine", "Economics", "Electronics", "Energy_and_Power",
    "Finance", "Geography", "History", "Literature", "Manage", "Marketing", "Materials", "Math",
    "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology", "Public_Health", "Sociology",
)
QUESTION_TYPES = ("multiple-choice", "open")
_ID_SUBJECT = re.compile(r"^(?:dev|validation|test)_(.+)_\d+$")


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx)
    question = get_str(rec, "question", ctx, rid)
    question_type = get_str(rec, "question_type", ctx, rid)
    if question_type not in QUESTION_TYPES:
        raise bad(ctx, rid, "question_type", f"expected one of {list(QUESTION_TYPES)}, got {question_type!r}")
    raw_options = get_str(rec, "options", ctx, rid, allow_empty=True)
    options = literal_list(raw_options)
    if options is None or not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in options):
        raise bad(ctx, rid, "options", f"expected a string holding a list of options, got {raw_options[:80]!r}")
    options = [str(o) for o in options]
    answer = get_str(rec, "answer", ctx, rid).strip()

    images = []
    if ctx.images_loaded:
        present = [rec.get(f"image_{k}") is not None for k in range(1, N_IMAGES + 1)]
        last = max((k for k in range(N_IMAGES) if present[k]), default=-1)
        for k in range(last + 1):
            if not present[k]:
                raise bad(ctx, rid, f"image_{k + 1}", f"missing although image_{last + 1} is present")
            images.append(image_ref(rec[f"image_{k + 1}"], f"image_{k + 1}", ctx, rid))
        for text in [question, *options]:
            for m in MARKER.finditer(text):
                n = int(m.group(1))
                if not 1 <= n <= len(images):
                    raise bad(ctx, rid, f"image_{n}", f"{m.group(0)!r} is referenced but the record has "
                                                      f"{len(images)} image(s)")

    subject = None
    m = _ID_SUBJECT.match(rid)
    if m:
        subject = m.group(1)
    img_type = rec.get("img_type")
    meta = {"question_type": question_type, "subfield": rec.get("subfield"), "subject": subject,
            "topic_difficulty": rec.get("topic_difficulty"), "explanation": rec.get("explanation"),
            "img_type": literal_list(img_type) if isinstance(img_type, str) else img_type,
            "metric": "mmmu"}
    if question_type == "multiple-choice":
        if len(options) < 2:
            raise bad(ctx, rid, "options", f"expected at least 2 options for a multiple-choice question, got {options}")
        if not re.fullmatch(r"[A-Z]", answer) or ord(answer) - ord("A") >= len(options):
            raise bad(ctx, rid, "answer", f"expected a letter A-{letter(len(options) - 1)}, got {answer!r}")
        meta["answer_text"] = options[ord(answer) - ord("A")]
        return Sample(id=rid, images=images, question=question.strip(), answer=answer,
                      answer_type="multiple_choice", choices=options, task=NAME, meta=meta)
    # Open questions: a few golds are list literals of acceptable answers.
    golds = literal_list(answer)
    meta["answers"] = [str(g) for g in golds] if golds else [answer]
    answer_type = "math" if all(is_number(g) for g in meta["answers"]) else "text"
    return Sample(id=rid, images=images, question=question.strip(), answer=answer,
                  answer_type=answer_type, choices=None, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="MMMU/MMMU", split="validation", hub_configs=SUBJECTS,
    image_columns=tuple(f"image_{k}" for k in range(1, N_IMAGES + 1)), doc=__doc__,
    required_columns=(("question",), ("question_type",), ("options",), ("answer",))))
