"""`mm-gpg score` (eval.score.main) over `rewards.score_samples`: raw benchmark records (read by
their adapter) or Samples in our schema in, scored lines out, one-line errors for bad lines."""
import json
import re

import pytest

from data_prep.adapters import BadRecord, record_to_sample
from data_prep.schema import Sample
from eval.score import default_output, main, scored_record
from rewards import score_samples

# One record a benchmark, with the public datasets' own field names (as on the hub) plus a
# `response`, the verifier its samples route to, and the last line in our own schema.
RECORDS = [
    ("vqav2", {"question_id": 1, "question": "What animal?", "response": "<answer>dog</answer>",
               "multiple_choice_answer": "dog",
               "answers": [{"answer": "dog", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]},
     "vqa"),
    ("chartqa", {"query": "Share?", "response": "<answer>12%</answer>", "label": ["0.12"], "human_or_machine": 0},
     "relaxed"),
    ("mathvista", {"pid": "7", "question": "How many?", "response": "<answer>3.7</answer>",
                   "question_type": "free_form", "answer_type": "integer", "answer": "3", "precision": None,
                   "choices": None, "unit": None}, "mathvista"),
    ("mathvista", {"pid": "8", "question": "Which?", "response": "<answer>(B)</answer>",
                   "question_type": "multi_choice", "answer_type": "text", "answer": "cat", "choices": ["dog", "cat"],
                   "precision": None}, "mathvista"),
    ("mmmu", {"id": "validation_Art_1", "question": "Which?", "response": "(C)", "options": "['p', 'q', 'r', 's']",
              "answer": "C", "question_type": "multiple-choice"}, "mmmu"),
    ("scienceqa", {"question": "Which?", "response": "The answer is B.", "choices": ["x", "y", "z"], "answer": 1,
                   "hint": "", "subject": "natural science"}, "scienceqa"),
    (None, {"response": "<answer>9</answer>", "answer": "9", "answer_type": "math"}, "math"),
]


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def read(path):
    return [json.loads(line) for line in open(path)]


def benchmark_args(benchmark):
    return ["--benchmark", benchmark] if benchmark else []


@pytest.mark.parametrize("benchmark, record, verifier", RECORDS, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(RECORDS)])
def test_each_benchmark_scores_officially(tmp_path, benchmark, record, verifier):
    src, dst = write(tmp_path / "in.jsonl", [record]), str(tmp_path / "out.jsonl")
    assert main([src, "-o", dst, "--workers", "0", *benchmark_args(benchmark)]) == 0
    (row,) = read(dst)
    # every line scores 1 officially; MathVista truncates 3.7 to "3". (Officially "A dog." would
    # score 0 against ten "dog": unanimous answers are compared as written; and ChartQA's
    # official rule reads "12%" as 0.12.)
    assert row["verifier"] == verifier and row["score"] == 1.0
    assert {k: row[k] for k in record} == record  # the record as it was
    assert row["parse_failure"] is False and isinstance(row["extraction"], str)


def test_lenient_mode_and_named_verifier(tmp_path):
    src, dst = write(tmp_path / "in.jsonl", [RECORDS[2][1]]), str(tmp_path / "out.jsonl")
    assert main([src, "--benchmark", "mathvista", "--verifier", "mathvista", "--mode", "lenient", "-o", dst,
                 "--workers", "0"]) == 0
    assert read(dst)[0]["score"] == 0.0  # 3.7 is not 3 when compared as numbers
    # a named verifier overrides the routing: an integer routes to `numeric` (3.0 == 3 -> 1), while
    # `vqa` compares the normalised strings "3.0" and "3" -> 0
    src = write(tmp_path / "ours.jsonl", [{"response": "<answer>3.0</answer>", "answer": "3", "answer_type": "integer"}])
    for verifier, score in (("auto", 1.0), ("vqa", 0.0)):
        assert main([src, "--verifier", verifier, "-o", dst, "--workers", "0"]) == 0
        assert read(dst)[0]["score"] == score and read(dst)[0]["verifier"] == {"auto": "numeric"}.get(verifier, verifier)


def test_pool_workers_score_as_in_process(tmp_path, capsys):
    ours = [{"response": f"<answer>{k % 4}</answer>", "answer": str(k % 3), "answer_type": "integer", "id": k}
            for k in range(35)]
    src = write(tmp_path / "in.jsonl", ours)
    assert main([src, "-o", str(tmp_path / "pool.jsonl"), "--workers", "1"]) == 0
    assert main([src, "-o", str(tmp_path / "here.jsonl"), "--workers", "0"]) == 0
    pool, here = read(tmp_path / "pool.jsonl"), read(tmp_path / "here.jsonl")
    assert len(pool) == 35 and pool == here
    # k % 4 == k % 3 for k in 0, 1, 2, 12, 13, 14, 24, 25, 26 (k < 12 * 3 = 36 and k % 12 < 3): 9 of 35
    assert sum(r["score"] for r in pool) == 9
    assert capsys.readouterr().out.startswith("in.jsonl (official rule): accuracy 25.7")  # 9 / 35


def test_score_samples_is_the_library_call():
    # pairs in, results out in the same order, read lazily in batches (here of 2)
    pairs = [("<answer>3</answer>", Sample(id=str(k), answer=str(k), answer_type="integer")) for k in range(5)]
    results = list(score_samples(iter(pairs), verifier="auto", num_workers=0, batch_size=2))
    assert [r.score for r in results] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert results[3].info["verifiers"] == {"score": "numeric"}
    with pytest.raises(ValueError, match="did you mean 'vqa'"):
        score_samples(pairs, verifier="vqaa", num_workers=0)  # refused at the call, not at the first result


GOOD_OF = {b: r for b, r, _ in reversed(RECORDS)}


@pytest.mark.parametrize("benchmark, bad, message", [
    (None, '{"response": 5, "answer": "a"}', "line 2: field 'response': expected a string"),
    ("vqav2", '{"question_id": 2, "question": "q", "multiple_choice_answer": "a", "answers": ["a"]}',
     "line 2: field 'response': missing"),
    ("vqav2", '{"response": "x", "question_id": 2, "question": "q", "multiple_choice_answer": "a", "answers": []}',
     "line 2: vqav2: record '2': field 'answers': expected a non-empty list"),
    ("vqav2", '{"response": "x", "question_id": 2, "question": "q", "multiple_choice_answer": "a", "answers": [["a"]]}',
     r"line 2: vqav2: record '2': field 'answers\[0\].answer'"),
    (None, 'not json', "line 2: field '<json>': not valid JSON"),
    ("mathvista", '{"response": "x", "pid": "9", "question": "q", "question_type": "multi_choice", '
                  '"answer_type": "text", "answer": "z", "choices": ["a", "b"]}',
     "line 2: mathvista: record '9': field 'answer': expected one of the choices"),
    ("mathvista", '{"response": "x", "pid": "9", "question": "q", "question_type": "free_form", '
                  '"answer_type": "float", "answer": "1.5", "precision": -1}',
     "line 2: mathvista: record '9': field 'precision'"),
    ("scienceqa", '{"response": "x", "question": "q", "choices": ["a", "b"], "answer": 5}',
     "line 2: scienceqa: record 'scienceqa-test-1': field 'answer': expected an index"),
    ("mmmu", '{"response": "x", "id": "v_1", "question": "q", "question_type": "multiple-choice", '
             '"options": "not a list", "answer": "A"}', "line 2: mmmu: record 'v_1': field 'options'"),
    (None, '{"response": "x", "answer": "1", "answer_type": "number"}', "line 2: field 'answer_type'"),
    (None, '{"response": "x", "answers": ["1"]}', "line 2: field 'answer': missing .*--benchmark NAME"),
])
def test_malformed_line_names_line_and_field(tmp_path, capsys, benchmark, bad, message):
    src = write(tmp_path / "in.jsonl", [GOOD_OF[benchmark], bad])
    dst = tmp_path / "out.jsonl"
    rc = main([src, "-o", str(dst), "--workers", "0", *benchmark_args(benchmark)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err  # bad input: exit status 2, one line
    assert re.search(message, err), err
    assert err.startswith(f"mm-gpg score: error: {src}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no temporary file


def test_unknown_names_and_missing_input(tmp_path, capsys):
    src = write(tmp_path / "in.jsonl", [RECORDS[-1][1]])
    assert main([src, "--verifier", "vqaa"]) == 2
    assert "did you mean 'vqa'" in capsys.readouterr().err
    assert main([src, "--benchmark", "mathvist"]) == 2
    assert "did you mean 'mathvista'" in capsys.readouterr().err
    assert main([src, "--benchmark", "synthetic"]) == 2  # a source, but no reader of raw records
    assert "no benchmark adapter" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_default_output_name(tmp_path):
    assert default_output("runs/preds.jsonl") == "runs/preds.scored.jsonl"
    assert default_output("preds.txt") == "preds.txt.scored.jsonl"
    src = write(tmp_path / "p.jsonl", [RECORDS[-1][1]])
    assert main([src, "--workers", "0"]) == 0
    assert read(tmp_path / "p.scored.jsonl")[0]["score"] == 1.0


def test_record_to_sample_is_the_adapter():
    s = record_to_sample("mmmu", RECORDS[4][1])
    assert s.choices == ["p", "q", "r", "s"] and s.answer == "C" and s.task == "mmmu" and s.images == []
    # an open MMMU gold stored as a list literal lists its acceptable answers
    open_q = {"id": "v_2", "question": "q", "options": "[]", "question_type": "open"}
    s = record_to_sample("mmmu", {**open_q, "answer": "['24/7', '3.429']"})
    assert s.answer == "['24/7', '3.429']" and s.meta["answers"] == ["24/7", "3.429"]
    # ... read as a literal only: code, or a string that is no list literal, stays the one answer
    for gold in ("[__import__('os').getcwd()]", "[0, 1)", "24/7"):
        assert record_to_sample("mmmu", {**open_q, "answer": gold}).meta["answers"] == [gold]
    # hub MMMU options are a string; they are read as a literal, never evaluated
    with pytest.raises(BadRecord, match="field 'options'"):
        record_to_sample("mmmu", {**open_q, "options": "__import__('os').getcwd()", "answer": "A"})
    # a record without an id column is named by source, split and position
    with pytest.raises(BadRecord, match="record 'chartqa-val-4': field 'label'"):
        record_to_sample("chartqa", {"query": "q"}, index=4, split="val")


def test_a_records_own_fields_are_kept(tmp_path):
    # MathVista records may carry the official GPT step's answer as `extraction`; ours (the name
    # of the rule that found the answer) must not replace it
    rec = {**RECORDS[2][1], "response": "a long answer we do not parse", "extraction": "3"}
    src, dst = write(tmp_path / "in.jsonl", [rec]), str(tmp_path / "out.jsonl")
    assert main([src, "--benchmark", "mathvista", "-o", dst, "--workers", "0"]) == 0
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
