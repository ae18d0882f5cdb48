"""`official` mode against the official scorers' own verdicts.

Each line of tests/fixtures/rewards/official_cases/*.jsonl is a case built for one documented
quirk family (unanimous vs disagreeing VQA answers, unstripped ChartQA text, empty MathVista
extractions, MMMU responses with trailing whitespace, ...) whose `expected` score was produced
once, offline, by running the unmodified official code:

- vqa.jsonl: GT-Vision-Lab/VQA `vqaEval.py` (master), `evalQA` of a one-question evaluation;
- chartqa.jsonl: pix2struct `relaxed_correctness`, best over the labels;
- mathvista.jsonl: lupantech/MathVista `normalize_extracted_answer` + `safe_equal` on the
  record's `extraction`;
- mmmu.jsonl: MMMU `parse_multi_choice_response` + `eval_multi_choice` / `parse_open_response`
  + `eval_open`, with the random choice scored 0 (our one deliberate exception).

The issue asks for >= 99 % agreement; we hold every case, so any drift fails with the list of
disagreements.
"""
import json
from pathlib import Path

import pytest

from data_prep import Sample
from rewards import get_verifier

CASES = Path(__file__).parent / "fixtures" / "rewards" / "official_cases"


def load(name):
    with open(CASES / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", ["vqa", "chartqa", "mathvista", "mmmu"])
def test_official_mode_agrees_with_the_official_scorer(name):
    cases = load(name)
    assert len(cases) >= 100
    wrong = []
    for case in cases:
        sample = Sample(id=case["id"], **case["sample"])
        got = get_verifier(case["verifier"])(case["response"], sample, mode="official").score
        if abs(got - case["expected"]) > 1e-6:
            wrong.append(f"{case['id']}: {case['response']!r} -> {got}, official {case['expected']}")
    assert not wrong, f"{len(wrong)}/{len(cases)} disagree:\n" + "\n".join(wrong[:20])


def test_the_cases_cover_the_quirks():
    """The fixture is not trivially all-correct or all-wrong, and holds the quirk cases."""
    vqa = {(c["response"], tuple(c["sample"]["meta"]["answers"])): c["expected"] for c in load("vqa")}
    assert vqa[("Yes", ("yes",) * 10)] == 0.0       # unanimous: compared as written
    assert vqa[("two", ("two",) * 10)] == 1.0
    assert vqa[("two", ("2",) * 10)] == 0.0
    assert vqa[("two", ("2",) * 5 + ("two",) * 5)] == 1.0  # disagreeing: both sides normalised
    chart = {(c["response"], tuple(c["sample"]["meta"]["labels"])): c["expected"] for c in load("chartqa")}
    assert chart[("yes\n", ("yes",))] == 0.0        # lower-cased, not stripped
    assert chart[(" 12", ("12",))] == 1.0           # float() strips
    mv = {(c["response"], c["sample"]["answer"], tuple(c["sample"].get("choices") or ())): c["expected"]
          for c in load("mathvista")}
    assert mv[("", "cat", ("cat", "cow", "horse"))] == 1.0  # "" is nearest to the shortest option
    mmmu = {(c["response"], c["sample"]["answer"]): c["expected"] for c in load("mmmu") if "mc" in c["id"]}
    assert mmmu[("B.", "B")] == 1.0 and mmmu[("B.\n", "B")] == 0.0
    for name in ("vqa", "chartqa", "mathvista", "mmmu"):
        scores = [c["expected"] for c in load(name)]
        assert 0.03 < sum(s > 0 for s in scores) / len(scores) < 0.97


def test_math_agrees_with_math_verify_default():
    """math_verify.jsonl: (gold, response) pairs from Math-Verify's own test files plus our cases
    of the issue's kinds (thousands separators, decimal commas, display math, relations,
    matrices, several boxed answers, float vs fraction, a response equal to its gold), each with
    math-verify 0.9.0's default `verify(parse(gold), parse(response))`, kept only where that
    verdict is the right one (its tests' expectation, or ours by hand). Issue bar: >= 97 %; we
    hold every case (before this change: 75.8 %)."""
    cases = load("math_verify")
    assert len(cases) >= 300
    math = get_verifier("math")
    wrong = []
    for case in cases:
        sample = Sample(id=case["id"], answer=case["gold"], answer_type="math")
        got = math(case["response"], sample).score
        if got != case["expected"]:
            wrong.append(f"{case['id']}: gold {case['gold'][:60]!r} response {case['response'][:60]!r} -> {got}")
    assert not wrong, f"{len(wrong)}/{len(cases)} disagree:\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("gold, response, expected", [
    ("1000", "1 000", 1.0),                       # thousands with a space
    ("1000.99", "1,000.99", 1.0),                 # thousands comma + decimal point
    ("2.74", "2,74", 1.0),                        # decimal comma: 2 digits after it, not a group
    ("0.111", "0,111", 1.0),                      # "0,111" cannot be thousands (leading 0)
    ("1000", "1,001", 0.0),
    ("9", "Answer \\[ 9 \\]", 1.0),               # display math
    ("9", "Answer $$ 9 $$", 1.0),
    ("$x \\geq 5$", "Therefore $x >= 5$.", 1.0),  # relations written two ways
    ("$x \\neq 3$", "We find $x != 3$.", 1.0),
    ("$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$", "$\\begin{bmatrix}1 & 2 \\\\ 3 & 4\\end{bmatrix}$", 1.0),
    ("$\\{1,2,3\\}$", "\\boxed{1} and \\boxed{2} and \\boxed{3}", 1.0),  # boxes form a set
    ("$\\frac{1}{12}$", "$0.0833333333$", 1.0),  # |1/12 - 0.0833333333| rounds away at 6 decimals
    ("$\\frac{1}{12}$", "$0.0833$", 0.0),
    ("$12:00$", "$12:00$", 1.0),                  # identical to its gold: the string fallback
    ("$1 - \\frac{1}{\\mathrm{e}}$", "$1 - \\frac{1}{\\mathrm{e}}$", 1.0),
    ("<answer>9</answer>", "<answer>9</answer>", 1.0),
])
def test_math_verify_kinds_hand_checked(gold, response, expected):
    assert get_verifier("math")(response, Sample(id="k", answer=gold, answer_type="math")).score == expected
