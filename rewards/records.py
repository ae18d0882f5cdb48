"""Raw benchmark records (the public datasets' own field names) -> `Sample`, for `mm-gpg score`.

A record is one JSON object holding the model's `response` plus the benchmark's fields:

| benchmark | recognised by / required fields |
|---|---|
| VQAv2 | `answers`: list of strings or `{"answer": ...}` dicts |
| ChartQA | `label` / `labels` (list or string), or `answer` with `type` `human_test`/`augmented_test` (or `--verifier relaxed`) |
| MathVista | `question_type`, `answer_type`, `answer` (+ `choices`, `precision`, `extraction`) |
| MMMU | `options` (list, or its string form as on the hub), `answer`, `question_type` (an open gold like `"['24/7', '3.429']"` lists answers) |
| ScienceQA | `choices` (list) and `answer` (0-based int index) |
| generic | `answer` (+ `answer_type` from our schema, `choices`, `precision`) |

Malformed records raise `RecordError` naming the line and field.
"""
from __future__ import annotations

import ast
import math

from data_prep.schema import ANSWER_TYPES, Sample

from .verifiers.benchmarks import mmmu_gold_answers


class RecordError(ValueError):
    def __init__(self, line: int, field: str, message: str):
        self.line, self.field = line, field
        super().__init__(f"line {line}: field {field!r}: {message}")


BENCHMARK_OF_VERIFIER = {"vqa": "vqav2", "relaxed": "chartqa", "mathvista": "mathvista",
                         "mmmu": "mmmu", "scienceqa": "scienceqa"}


def detect_benchmark(record: dict) -> str:
    """Which benchmark's schema `record` follows (`generic` when none)."""
    if "answers" in record:
        return "vqav2"
    if "label" in record or "labels" in record:
        return "chartqa"
    if record.get("type") in ("human_test", "augmented_test") and "answer" in record:
        return "chartqa"  # lmms-lab/ChartQA: question, answer, type
    if "options" in record and "answer" in record:
        return "mmmu"
    if {"question_type", "answer_type"} <= set(record) and record.get("question_type") in (
            "multi_choice", "free_form"):
        return "mathvista"
    if isinstance(record.get("choices"), list) and isinstance(record.get("answer"), int) \
            and not isinstance(record.get("answer"), bool) and "answer_type" not in record:
        return "scienceqa"
    return "generic"


def _require(record: dict, field: str, line: int):
    if field not in record or record[field] is None:
        raise RecordError(line, field, "missing")
    return record[field]


def _str_list(value, line: int, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise RecordError(line, field, f"expected a non-empty list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            if "answer" not in item:
                raise RecordError(line, f"{field}[{i}]", "expected a string or {'answer': ...}")
            item = item["answer"]
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise RecordError(line, f"{field}[{i}]", f"expected a string, got {type(item).__name__}")
        out.append(str(item))
    return out


def _options(value, line: int, field: str) -> list[str]:
    if isinstance(value, str):  # the hub's MMMU stores "['a', 'b']"; parse as a literal only
        if len(value) > 100_000:
            raise RecordError(line, field, "too long")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise RecordError(line, field, "expected a list of option strings") from None
    if not isinstance(value, (list, tuple)):
        raise RecordError(line, field, f"expected a list of option strings, got {type(value).__name__}")
    return [str(v) for v in value]


def _precision(record: dict, line: int):
    p = record.get("precision")
    if p is None or p == "":
        return None
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise RecordError(line, "precision", f"expected a number, got {p!r}") from None
    return None if math.isnan(p) else int(p)


def record_to_sample(record, line: int, verifier: str = "auto") -> tuple[str, Sample]:
    """`(response, Sample)` for one input line; `verifier` picks the schema when it is a
    benchmark verifier, else the fields decide."""
    if not isinstance(record, dict):
        raise RecordError(line, "<record>", f"expected a JSON object, got {type(record).__name__}")
    response = _require(record, "response", line)
    if not isinstance(response, str):
        raise RecordError(line, "response", f"expected a string, got {type(response).__name__}")
    kind = BENCHMARK_OF_VERIFIER.get(verifier) or detect_benchmark(record)
    rid = str(record.get("id", record.get("question_id", record.get("pid", line))))
    question = str(record.get("question", record.get("query", "")) or "")
    meta = {}
    if kind == "vqav2":
        answers = _str_list(_require(record, "answers", line), line, "answers")
        return response, Sample(id=rid, question=question, answer=answers[0], answer_type="vqa",
                                task="vqav2", meta={"answers": answers})
    if kind == "chartqa":
        field = "labels" if "labels" in record else "label" if "label" in record else "answer"
        labels = _str_list(_require(record, field, line), line, field)
        return response, Sample(id=rid, question=question, answer=labels[0], answer_type="text",
                                task="chartqa", meta={"labels": labels})
    if kind == "mathvista":
        qtype = _require(record, "question_type", line)
        atype = _require(record, "answer_type", line)
        if qtype not in ("multi_choice", "free_form"):
            raise RecordError(line, "question_type", f"expected 'multi_choice' or 'free_form', got {qtype!r}")
        if atype not in ("text", "integer", "float", "list"):
            raise RecordError(line, "answer_type", f"expected text/integer/float/list, got {atype!r}")
        answer = str(_require(record, "answer", line))
        choices = record.get("choices")
        if qtype == "multi_choice":
            if not isinstance(choices, list) or not choices:
                raise RecordError(line, "choices", "a multi_choice record needs a list of choices")
            choices = [str(c) for c in choices]
            if answer not in choices:
                raise RecordError(line, "answer", f"{answer!r} is not one of the choices")
        else:
            choices = None
        ours = "multiple_choice" if qtype == "multi_choice" else atype
        meta = {"question_type": qtype, "mathvista_answer_type": atype,
                "precision": _precision(record, line), "unit": record.get("unit")}
        if atype == "float" and meta["precision"] is None:
            raise RecordError(line, "precision", "a float answer needs a precision")
        if atype in ("integer", "float"):
            try:
                float(answer)
            except ValueError:
                raise RecordError(line, "answer", f"expected a number for answer_type {atype!r}") from None
        if record.get("extraction") is not None:
            meta["extraction"] = str(record["extraction"])
        return response, Sample(id=rid, question=question, answer=answer, answer_type=ours,
                                choices=choices, task="mathvista", meta=meta)
    if kind == "mmmu":
        options = _options(_require(record, "options", line), line, "options")
        answer = _require(record, "answer", line)
        qtype = record.get("question_type") or ("multiple-choice" if options else "open")
        if qtype not in ("multiple-choice", "open"):
            raise RecordError(line, "question_type", f"expected 'multiple-choice' or 'open', got {qtype!r}")
        if qtype == "multiple-choice":
            letters = [chr(65 + i) for i in range(len(options))]
            if not options:
                raise RecordError(line, "options", "a multiple-choice record needs options")
            golds = answer if isinstance(answer, list) else [answer]
            if any(str(g) not in letters for g in golds):
                raise RecordError(line, "answer", f"expected a letter in {letters}, got {answer!r}")
            return response, Sample(id=rid, question=question, answer=answer if isinstance(answer, list) else str(answer),
                                    answer_type="multiple_choice", choices=options, task="mmmu",
                                    meta={"question_type": qtype})
        # a gold stored as a list literal ("['24/7', '3.429']") lists the acceptable answers
        meta = {"question_type": qtype, "answers": mmmu_gold_answers(answer)}
        return response, Sample(id=rid, question=question, answer=answer, answer_type="text",
                                task="mmmu", meta=meta)
    if kind == "scienceqa":
        choices = record.get("choices")
        if not isinstance(choices, list) or not choices:
            raise RecordError(line, "choices", "expected a non-empty list of option strings")
        answer = _require(record, "answer", line)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise RecordError(line, "answer", f"expected a 0-based index below {len(choices)}, got {answer!r}")
        return response, Sample(id=rid, question=question, answer=answer,
                                answer_type="multiple_choice", choices=[str(c) for c in choices],
                                task="scienceqa")
    # generic: our own schema's field names
    answer = _require(record, "answer", line)
    atype = record.get("answer_type") or ("multiple_choice" if record.get("choices") else "text")
    if atype not in ANSWER_TYPES:
        raise RecordError(line, "answer_type", f"expected one of {list(ANSWER_TYPES)}, got {atype!r}")
    choices = record.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise RecordError(line, "choices", f"expected a list, got {type(choices).__name__}")
    meta = dict(record.get("meta") or {}) if isinstance(record.get("meta"), dict) else {}
    if "precision" in record:
        meta["precision"] = _precision(record, line)
    for key in ("answers", "labels", "unit", "rel_tol"):
        if key in record and key not in meta:
            meta[key] = record[key]
    return response, Sample(id=rid, question=question, answer=answer, answer_type=atype,
                            choices=choices, task=str(record.get("task", "")), meta=meta)
