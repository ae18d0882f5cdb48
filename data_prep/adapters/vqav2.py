"""VQAv2 (`lmms-lab/VQAv2`, split `validation`).

Hub schema: `question_type` (str), `multiple_choice_answer` (str), `answers` (list of
{`answer` str, `answer_confidence` str, `answer_id` int}), `image_id` (int), `answer_type`
(`yes/no` | `number` | `other`), `question_id` (int, the sample id), `question` (str),
`image` (Image).

`Sample.answer` is `multiple_choice_answer` (the most common annotator answer);
`meta["answers"]` holds all ten annotator answers, which the VQA soft accuracy needs.
`answer_type` is `vqa`; VQAv2's own answer type is `meta["answer_type"]`. Records without
annotator answers (the test splits) are malformed for training and scoring.
"""
from __future__ import annotations

from ..schema import Sample
from .base import Ctx, SourceDef, bad, define_source, get_str, image_ref, record_id

NAME = "vqav2"


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "question_id", ctx)
    question = get_str(rec, "question", ctx, rid)
    raw_answers = rec.get("answers")
    if not isinstance(raw_answers, (list, tuple)) or not raw_answers:
        raise bad(ctx, rid, "answers", "expected a non-empty list of annotator answers")
    answers, confidences = [], []
    for i, item in enumerate(raw_answers):
        if isinstance(item, dict):
            text, confidence = item.get("answer"), item.get("answer_confidence")
        else:  # some re-uploads flatten the list to plain strings
            text, confidence = item, None
        if not isinstance(text, str):
            raise bad(ctx, rid, f"answers[{i}].answer", f"expected a string, got {type(text).__name__}")
        answers.append(text)
        confidences.append(confidence)
    gold = get_str(rec, "multiple_choice_answer", ctx, rid)
    image = image_ref(rec.get("image"), "image", ctx, rid)
    return Sample(id=rid, images=[image] if image is not None else [], question=question.strip(),
                  answer=gold, answer_type="vqa", task=NAME,
                  meta={"answers": answers, "answer_confidences": confidences,
                        "answer_type": rec.get("answer_type"), "question_type": rec.get("question_type"),
                        "image_id": rec.get("image_id"), "metric": "vqa_soft"})


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="lmms-lab/VQAv2", split="validation",
    image_columns=("image",), doc=__doc__,
    required_columns=(("question",), ("answers",), ("multiple_choice_answer",))))
