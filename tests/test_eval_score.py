"""`mm-gpg score --benchmark NAME` (here through its alias `mm-gpg eval score`) against hand-worked
cases of each benchmark's official rule.

Each case is a record in the benchmark's own schema plus a `response`, read by the benchmark's
adapter; the expected score is worked out by hand from the official scoring code (the working is
in the comment). Scoring runs in this process (`--workers 0`) to keep the test fast; the worker
pool is tested in test_rewards_cli.py."""
from __future__ import annotations

import json

import pytest

from eval.cli import main


def vqa_answers(values):
    return [{"answer": v, "answer_confidence": "yes", "answer_id": k + 1} for k, v in enumerate(values)]


def vqa(qid, answers, response, answer_type="other"):
    return {"question_id": qid, "question": "q?", "question_type": "what", "multiple_choice_answer": answers[0],
            "answer_type": answer_type, "image_id": 1, "answers": vqa_answers(answers), "response": response}


def mathvista(pid, answer, response, question_type="free_form", answer_type="integer", precision=None,
              choices=None, **extra):
    return {"pid": pid, "question": "q", "image": "images/1.jpg", "choices": choices, "unit": None,
            "precision": precision, "answer": answer, "question_type": question_type, "answer_type": answer_type,
            "metadata": {"category": "math-targeted-vqa", "context": "c", "grade": "g", "img_height": 1,
                         "img_width": 1, "language": "english", "skills": ["arithmetic reasoning"],
                         "source": "s", "split": "testmini", "task": "math word problem"},
            "query": "q", "response": response, **extra}


MMMU_OPTIONS = "['The first', 'The second', \"They're the same age\"]"


def mmmu(rid, answer, response, options=MMMU_OPTIONS, question_type="multiple-choice"):
    return {"id": f"validation_Art_{rid}", "question": "<image 1> Which?", "options": options, "explanation": "",
            "img_type": "['Paintings']", "answer": answer, "topic_difficulty": "Easy",
            "question_type": question_type, "subfield": "Fine Arts", "response": response}


def scienceqa(answer, response):
    return {"question": "Which animal's feet are adapted for snow?", "choices": ["hare", "camel"], "answer": answer,
            "hint": "", "task": "closed choice", "grade": "grade5", "subject": "natural science",
            "topic": "biology", "category": "Adaptations", "skill": "s", "lecture": "", "solution": "",
            "response": response}


MATHVERSE_MC = ("As shown in the figure, AB is parallel to CD, angle 1 = 50°, find angle 2 ()\n"
                "Choices:\nA:40°\nB:50°\nC:130°\nD:140°")


def mathverse(idx, question, answer, question_type, response, version="Text Dominant"):
    return {"sample_index": str(idx), "problem_index": "1", "problem_version": version, "question": question,
            "answer": answer, "question_type": question_type,
            "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"},
            "query_wo": "", "query_cot": "", "question_for_eval": question, "response": response}


# (benchmark, [(record, expected score, expected parse_failure)])
CASES = {
    "vqav2": [
        # golds disagree -> both sides normalised: pred "two" -> processDigitArticle -> "2".
        # 2 of 10 golds are "2": leaving out a "2" (2 subsets) -> 1 match -> 1/3; leaving out a "3"
        # (8 subsets) -> 2 matches -> 2/3; mean = (2 * 1/3 + 8 * 2/3) / 10 = 0.6
        (vqa(1, ["2", "2"] + ["3"] * 8, "<answer>two</answer>", "number"), 0.6, False),
        # "Red." -> punctuation drops the period -> "red"; 8 of 10 golds: every subset has >= 7 -> 1
        (vqa(2, ["red"] * 7 + ["dark red", "maroon", "red"], "<think>hmm</think><answer>Red.</answer>"), 1.0, False),
        # quirk: when all annotators agree neither side is normalised (vqaEval.py master):
        # "two" == "two" -> 1, while "Two" != "two" -> 0
        (vqa(3, ["two"] * 10, "<answer>two</answer>", "number"), 1.0, False),
        (vqa(4, ["yes"] * 10, "<answer>no</answer>", "yes/no"), 0.0, False),
    ],
    "chartqa": [
        # |24 - 23.5| / 23.5 = 0.021 <= 0.05 -> 1; |25 - 23.5| / 23.5 = 0.064 -> 0
        ({"query": "v?", "label": ["23.5"], "human_or_machine": 0, "response": "<answer>24</answer>"}, 1.0, False),
        ({"query": "v?", "label": ["23.5"], "human_or_machine": 0, "response": "<answer>25</answer>"}, 0.0, False),
        # "45%" -> float("45") / 100 = 0.45 == 0.45 -> 1 (best over the labels)
        ({"query": "v?", "label": ["45%", "45"], "human_or_machine": 1, "response": "<answer>0.45</answer>"}, 1.0, False),
        # not numbers: case-insensitive exact match
        ({"query": "c?", "label": ["Chile"], "human_or_machine": 1, "response": "<answer>chile</answer>"}, 1.0, False),
        # quirks: float("1,000") fails -> string compare "1000" != "1,000"; gold 0 -> exact string "0.0" != "0"
        ({"query": "v?", "label": ["1,000"], "human_or_machine": 0, "response": "<answer>1000</answer>"}, 0.0, False),
        ({"query": "v?", "label": ["0"], "human_or_machine": 0, "response": "<answer>0.0</answer>"}, 0.0, False),
    ],
    "mathvista": [
        # integer: str(int(float("1000.7"))) = "1000" == "1000" (truncation, not rounding) -> 1
        (mathvista("1", "1000", "<answer>1000.7</answer>"), 1.0, False),
        # float, precision 2: str(round(0.251, 2)) = "0.25" -> 1; "0.26" -> 0
        (mathvista("2", "0.25", "<answer>0.251</answer>", answer_type="float", precision=2.0), 1.0, False),
        (mathvista("3", "0.25", "<answer>0.26</answer>", answer_type="float", precision=2.0), 0.0, False),
        # multiple choice compares option text: "(B)" -> letter B -> "half" -> 1
        (mathvista("4", "half", "<answer>(B)</answer>", "multi_choice", "text", choices=["twice", "half", "same"]),
         1.0, False),
        # "hal" is no letter and no option: the official closest-option (Levenshtein) step -> "half" -> 1
        (mathvista("5", "half", "<answer>hal</answer>", "multi_choice", "text", choices=["twice", "half", "same"]),
         1.0, False),
        (mathvista("6", "half", "<answer>A</answer>", "multi_choice", "text", choices=["twice", "half", "same"]),
         0.0, False),
        # a record's own `extraction` (the official GPT step's output) is used as is: "1000" -> 1
        (mathvista("7", "1000", "a long answer we do not parse", extraction="1000"), 1.0, False),
        # integer rule on a non-number -> None -> 0 and a parse failure
        (mathvista("8", "1000", "<answer>many</answer>"), 0.0, True),
    ],
    "mmmu": [
        (mmmu(1, "B", "<answer>(B)</answer>"), 1.0, False),
        # two bracketed letters: the last mentioned wins -> (C) -> 0
        (mmmu(2, "B", "<answer>Not (B) but (C)</answer>"), 0.0, False),
        # no letter, too short for option text: the official code picks at random; we score 0 + parse failure
        (mmmu(3, "B", "<answer>I cannot tell</answer>"), 0.0, True),
        # open: "so the answer is 3" -> key "3" -> number 3.0 == round(3, 2) -> 1
        (mmmu(4, "3", "there are three figures, so the answer is 3", options="[]", question_type="open"), 1.0, False),
        (mmmu(5, "3", "<answer>4</answer>", options="[]", question_type="open"), 0.0, False),
        # open, gold stored as a list literal: ast.literal_eval -> ['24/7', '3.429'], any of them counts.
        # normalize_str: '24/7' is no float -> '24/7'; '3.429' -> round(3.429, 2) = 3.43; golds ['24/7', 3.43].
        # "24/7" -> no indicator, key "24/7"; numbers 24, 7 -> ['24/7', 24.0, 7.0]; '24/7' in '24/7' -> 1
        (mmmu(6, "['24/7', '3.429']", "<answer>24/7</answer>", options="[]", question_type="open"), 1.0, False),
        # "so it is 3.43" -> key after "is " = "3.43" -> [3.43]; 3.43 == round(3.429, 2) -> 1
        (mmmu(7, "['24/7', '3.429']", "so it is 3.43", options="[]", question_type="open"), 1.0, False),
        # "3.42" -> [3.42]: not 3.43, and a number never matches a string gold -> 0
        (mmmu(8, "['24/7', '3.429']", "<answer>3.42</answer>", options="[]", question_type="open"), 0.0, False),
    ],
    "scienceqa": [
        (scienceqa(1, "<answer>B</answer>"), 1.0, False),
        (scienceqa(1, "The answer is B."), 1.0, False),        # exactly one "The answer is X."
        (scienceqa(1, "<answer>A</answer>"), 0.0, False),
        # option text is not a letter: the official code picks at random; we score 0 + parse failure
        (scienceqa(1, "<answer>camel</answer>"), 0.0, True),
    ],
    "mathverse": [
        (mathverse(1, MATHVERSE_MC, "C", "multi-choice", "<answer>C</answer>"), 1.0, False),
        (mathverse(2, MATHVERSE_MC, "C", "multi-choice", "<answer>D</answer>"), 0.0, False),
        # free-form: symbolic equivalence, sqrt(12) = 2 sqrt(3) -> 1
        (mathverse(3, "Find AB.", "2\\sqrt{3}", "free-form", "<answer>\\sqrt{12}</answer>", "Vision Dominant"),
         1.0, False),
    ],
    "geometry3k": [
        ({"images": None, "problem": "<image>Find x.", "answer": "4", "id": 1, "choices": ["3", "4", "5", "6"],
          "ground_truth": "B", "response": "<think>x = 4</think><answer>4</answer>"}, 1.0, False),
        ({"images": None, "problem": "<image>Find x.", "answer": "4", "id": 2, "choices": ["3", "4", "5", "6"],
          "ground_truth": "B", "response": "<answer>5</answer>"}, 0.0, False),
    ],
    "geoqa": [
        # units are normalised away: 140 == 140°
        ({"image_path": "./a.png", "question": "Find the angle.", "ground_truth": "140°",
          "response": "<answer>140</answer>"}, 1.0, False),
        ({"image_path": "./b.png", "question": "Find the length.", "ground_truth": "3cm",
          "response": "<answer>4 cm</answer>"}, 0.0, False),
    ],
    "superclevr": [
        ({"image_path": "a.png", "question": "How many?", "ground_truth": 3, "response": "<answer>3</answer>"},
         1.0, False),
        ({"image_path": "b.png", "question": "How many?", "ground_truth": 3, "response": "<answer>4</answer>"},
         0.0, False),
    ],
}


@pytest.mark.parametrize("benchmark", sorted(CASES))
def test_eval_score_hand_worked(tmp_path, capsys, benchmark):
    cases = CASES[benchmark]
    src = tmp_path / "preds.jsonl"
    src.write_text("".join(json.dumps(rec) + "\n" for rec, _, _ in cases))
    out = tmp_path / "out" / "scored.jsonl"
    assert main(["score", str(src), "--benchmark", benchmark, "-o", str(out),
                 "--workers", "0", "--bootstrap", "100"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(cases)
    for (record, score, parse_failure), row in zip(cases, rows):
        assert row["score"] == pytest.approx(score), (benchmark, record["response"], row)
        assert row["parse_failure"] is parse_failure, (benchmark, record["response"], row)
        # the output line is the input line plus the score fields, nothing of ours mixed in
        assert {k: row[k] for k in record} == record
        assert set(row) - set(record) <= {"score", "components", "verifier", "extraction", "parse_failure",
                                          "timeout", "error", "scoring_extraction"}
    printed = capsys.readouterr().out
    mean = sum(s for _, s, _ in cases) / len(cases)
    assert printed.startswith(f"{benchmark} (official rule): accuracy {100 * mean:.1f}")
    assert f"parse failures {sum(p for _, _, p in cases)}" in printed


def test_eval_score_summary_has_categories(tmp_path, capsys):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r, _, _ in CASES["vqav2"]))
    assert main(["score", str(src), "--benchmark", "vqav2", "-o", str(tmp_path / "o.jsonl"),
                 "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    # by VQAv2's answer_type: number (0.6, 1.0) -> 80.0; other (1.0) -> 100.0; yes/no (0.0) -> 0.0
    lines = {line.split()[0]: line.split() for line in printed.splitlines()[1:] if line.strip()}
    assert lines["number"][1:3] == ["2", "80.0"] and lines["other"][1:3] == ["1", "100.0"]
    assert lines["yes/no"][1:3] == ["1", "0.0"]


def test_eval_score_bad_input_names_the_line(tmp_path, capsys):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"question": "x", "response": "a"}) + "\n")
    for benchmark, message in (("vqav2", "line 1: vqav2: record 'vqav2-validation-0': field 'question_id'"),
                               ("geoqa", "line 1: geoqa: record 'geoqa-test-0': field 'ground_truth'")):
        assert main(["score", str(src), "--benchmark", benchmark,
                     "-o", str(tmp_path / "o.jsonl"), "--workers", "0"]) == 2  # bad input
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.jsonl").exists()


def test_mmmu_open_question_with_several_gold_answers(tmp_path):
    # gold "['24/7', '3.429']" lists two answers (official eval_open takes a list: any counts);
    # "3.429" -> [round(3.429, 2)] = [3.43], and the gold '3.429' normalises to 3.43 too -> 1
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps(mmmu(9, "['24/7', '3.429']", "<answer>3.429</answer>", options="[]",
                                   question_type="open")) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["score", str(src), "--benchmark", "mmmu", "-o", str(out), "--workers", "0"]) == 0
    assert json.loads(out.read_text())["score"] == 1.0


def test_mathvista_records_own_extraction_is_kept(tmp_path):
    record = mathvista("9", "1000", "a long answer we do not parse", extraction="1000")
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps(record) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["score", str(src), "--benchmark", "mathvista", "-o", str(out), "--workers", "0"]) == 0
    row = json.loads(out.read_text())
    assert row["extraction"] == "1000" and {k: row[k] for k in record} == record
    assert row["score"] == 1.0 and isinstance(row["scoring_extraction"], str)  # ours: the rule's name
