"""`mm-gpg score` (rewards.cli.main): benchmark records in, scored records out, clear errors."""
import json
import re

import pytest

from rewards.cli import main, scored_record
from rewards.records import RecordError, detect_benchmark, record_to_sample

# Records with the public datasets' own field names (VQAv2 / ChartQA / MathVista / MMMU /
# ScienceQA as on the hub) plus a `response`.
RECORDS = [
    {"question_id": 1, "question": "What animal?", "response": "<answer>dog</answer>",
     "answers": [{"answer": "dog", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]},
    {"question": "Share?", "response": "<answer>12%</answer>", "label": ["0.12"]},
    {"pid": "7", "question": "How many?", "response": "<answer>3.7</answer>", "question_type": "free_form",
     "answer_type": "integer", "answer": "3", "precision": None, "choices": None, "unit": None},
    {"pid": "8", "response": "<answer>(B)</answer>", "question_type": "multi_choice", "answer_type": "text",
     "answer": "cat", "choices": ["dog", "cat"], "precision": None},
    {"id": "validation_Art_1", "response": "(C)", "options": "['p', 'q', 'r', 's']", "answer": "C",
     "question_type": "multiple-choice"},
    {"response": "The answer is B.", "choices": ["x", "y", "z"], "answer": 1, "hint": "", "subject": "natural science"},
    {"response": "<answer>9</answer>", "answer": "9", "answer_type": "math"},
]


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def read(path):
    return [json.loads(line) for line in open(path)]


def test_auto_scores_every_benchmark_officially(tmp_path):
    src, dst = write(tmp_path / "in.jsonl", RECORDS), str(tmp_path / "out.jsonl")
    assert main(["--verifier", "auto", "--input", src, "--output", dst, "--workers", "0"]) == 0
    out = read(dst)
    assert [r["verifier"] for r in out] == ["vqa", "relaxed", "mathvista", "mathvista", "mmmu",
                                            "scienceqa", "math"]
    # every line scores 1 officially; MathVista truncates 3.7 to "3". (Officially "A dog." would
    # score 0 against ten "dog": unanimous answers are compared as written; and ChartQA's
    # official rule sees a response without a span as written, "The answer is 12%" included.)
    assert [r["score"] for r in out] == [1.0] * 7
    assert out[0]["question_id"] == 1 and out[0]["answers"][0]["answer_id"] == 1  # record kept
    assert out[0]["extraction"] == "answer_tag" and out[0]["parse_failure"] is False


def test_lenient_mode_and_named_verifier(tmp_path):
    src, dst = write(tmp_path / "in.jsonl", RECORDS[2:3]), str(tmp_path / "out.jsonl")
    assert main(["--verifier", "mathvista", "--mode", "lenient", "--input", src, "--output", dst,
                 "--workers", "0"]) == 0
    assert read(dst)[0]["score"] == 0.0  # 3.7 is not 3 when compared as numbers


def test_pool_workers(tmp_path):
    src, dst = write(tmp_path / "in.jsonl", RECORDS * 5), str(tmp_path / "out.jsonl")
    assert main(["--verifier", "auto", "--input", src, "--output", dst, "--workers", "1"]) == 0
    assert len(read(dst)) == 35


@pytest.mark.parametrize("bad, message", [
    ('{"response": 5, "answers": ["a"]}', "line 2: field 'response': expected a string"),
    ('{"answers": ["a"]}', "line 2: field 'response': missing"),
    ('{"response": "x", "answers": []}', "line 2: field 'answers': expected a non-empty list"),
    ('{"response": "x", "answers": [["a"]]}', r"line 2: field 'answers\[0\]'"),
    ('not json', "line 2: field '<json>': not valid JSON"),
    ('{"response": "x", "question_type": "multi_choice", "answer_type": "text", "answer": "z", "choices": ["a"]}',
     "line 2: field 'answer': 'z' is not one of the choices"),
    ('{"response": "x", "question_type": "free_form", "answer_type": "float", "answer": "1.5"}',
     "line 2: field 'precision'"),
    ('{"response": "x", "choices": ["a", "b"], "answer": 5}', "line 2: field 'answer': expected a 0-based index"),
    ('{"response": "x", "options": "not a list", "answer": "A"}', "line 2: field 'options'"),
    ('{"response": "x", "answer": "1", "answer_type": "number"}', "line 2: field 'answer_type'"),
])
def test_malformed_line_names_line_and_field(tmp_path, capsys, bad, message):
    src = write(tmp_path / "in.jsonl", [RECORDS[0], bad])
    dst = tmp_path / "out.jsonl"
    assert main(["--verifier", "auto", "--input", src, "--output", str(dst), "--workers", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mm-gpg-score-")]  # no temp left


def test_unknown_verifier_and_missing_input(tmp_path, capsys):
    assert main(["--verifier", "vqaa", "--input", "x", "--output", str(tmp_path / "o")]) == 2
    assert "did you mean 'vqa'" in capsys.readouterr().err
    assert main(["--verifier", "vqa", "--input", str(tmp_path / "nope.jsonl"),
                 "--output", str(tmp_path / "o")]) == 2


def test_detect_and_map_records():
    assert [detect_benchmark(r) for r in RECORDS] == ["vqav2", "chartqa", "mathvista", "mathvista",
                                                     "mmmu", "scienceqa", "generic"]
    lmms_chartqa = {"question": "q", "answer": "12", "type": "human_test", "response": "12.4"}
    assert detect_benchmark(lmms_chartqa) == "chartqa"
    assert record_to_sample(lmms_chartqa, 1)[1].meta["labels"] == ["12"]
    _, s = record_to_sample(RECORDS[4], 1)
    assert s.choices == ["p", "q", "r", "s"] and s.answer == "C" and s.task == "mmmu"
    with pytest.raises(RecordError, match="line 9: field 'response'"):
        record_to_sample({"answers": ["a"]}, 9)
    # an open MMMU gold stored as a list literal lists its acceptable answers
    _, s = record_to_sample({"response": "x", "options": "[]", "answer": "['24/7', '3.429']",
                             "question_type": "open"}, 1)
    assert s.answer == "['24/7', '3.429']" and s.meta["answers"] == ["24/7", "3.429"]
    # ... read as a literal only: code, or a string that is no list literal, stays the one answer
    for gold in ("[__import__('os').getcwd()]", "[0, 1)", "24/7"):
        _, s = record_to_sample({"response": "x", "options": "[]", "answer": gold, "question_type": "open"}, 1)
        assert s.meta["answers"] == [gold]
    # hub MMMU options are a string; they are read as a literal, never evaluated
    with pytest.raises(RecordError, match="field 'options'"):
        record_to_sample({"response": "x", "options": "__import__('os').getcwd()", "answer": "A"}, 3)


def test_a_records_own_fields_are_kept(tmp_path):
    # MathVista records may carry the official GPT step's answer as `extraction`; ours (the name
    # of the rule that found the answer) must not replace it
    rec = {**RECORDS[2], "response": "a long answer we do not parse", "extraction": "3"}
    src, dst = write(tmp_path / "in.jsonl", [rec]), str(tmp_path / "out.jsonl")
    assert main(["--verifier", "auto", "--input", src, "--output", dst, "--workers", "0"]) == 0
    (row,) = read(dst)
    assert {k: row[k] for k in rec} == rec  # every input field as it was, `extraction` included
    assert row["score"] == 1.0  # the record's "3" -> str(int(float("3"))) == "3"
    assert set(row) - set(rec) == {"score", "components", "verifier", "scoring_extraction", "parse_failure",
                                   "timeout"}


def test_scored_record_renames_instead_of_overwriting():
    record = {"verifier": "theirs", "scoring_verifier": "also theirs", "score": 0.25, "answer": "3"}
    out = scored_record(record, {"score": 1.0, "verifier": "mmmu", "timeout": False})
    # `score` is ours (the documented output); any other taken name is prefixed until it is free
    assert out == {"verifier": "theirs", "scoring_verifier": "also theirs", "score": 1.0, "answer": "3",
                   "scoring_scoring_verifier": "mmmu", "timeout": False}
    assert record["score"] == 0.25  # the input dict itself is not modified
