"""Answer extraction and number reading (rewards.extract, rewards.textnorm)."""
from fractions import Fraction

import pytest

from rewards.extract import MAX_ANSWER_CHARS, extract_answer, find_boxed
from rewards.textnorm import parse_number, single_number


@pytest.mark.parametrize("response, text, rule", [
    # the <answer> span wins over anything in the reasoning
    ("<think>12 + 128 = 140, not 150</think><answer>140</answer>", "140", "answer_tag"),
    # a \boxed{} inside the span is unwrapped
    ("<think>x</think><answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}", "answer_tag"),
    # the last brace-balanced box, nested braces kept
    ("so \\boxed{\\frac{3}{4}}", "\\frac{3}{4}", "boxed"),
    ("\\fbox{7}", "7", "boxed"),
    # boxes inside the reasoning are ignored once </think> closed it
    ("<think>\\boxed{1}</think> the answer is 2", "2", "answer_is"),
    ("Reasoning...\nThe final answer is: (B).", "(B).", "answer_is"),
    ("first line\nsecond line\n\n  last line  \n", "last line", "last_line"),
])
def test_extraction_rules(response, text, rule):
    ex = extract_answer(response)
    assert (ex.text, ex.rule) == (text, rule)
    assert not ex.ambiguous


def test_several_different_answers_are_flagged():
    assert extract_answer("\\boxed{3} or \\boxed{4} or \\boxed{5}").n_candidates == 3
    assert extract_answer("<answer>A</answer><answer>B</answer>").ambiguous
    # the same answer twice is not a shotgun
    assert not extract_answer("\\boxed{3} so \\boxed{ 3 }").ambiguous


def test_nothing_to_extract():
    assert extract_answer("").rule == "none"
    assert extract_answer("   \n  ").text is None
    assert extract_answer(None).text is None


def test_too_long_answer_is_refused():
    ex = extract_answer("<answer>" + "9" * (MAX_ANSWER_CHARS + 1) + "</answer>")
    assert ex.text is None and ex.rule == "too_long"


def test_find_boxed_balances_braces_and_ignores_unclosed():
    assert find_boxed("\\boxed{a{b}c} \\boxed{d") == ["a{b}c"]
    # a box inside a box belongs to the outer one
    assert find_boxed("\\boxed{\\boxed{1}+1}") == ["\\boxed{1}+1"]
    assert find_boxed("no boxes {here}") == []


def test_unclosed_answer_tag_then_closed_one():
    # "<answer>" never closed, then a complete span: the complete span is used
    assert extract_answer("<answer>oops <answer>5</answer>").text == "5"


@pytest.mark.parametrize("text, value, pct", [
    ("1,234.5", Fraction(2469, 2), False),     # thousands separator
    ("-3/4", Fraction(-3, 4), False),
    ("\\frac{3}{4}", Fraction(3, 4), False),
    ("\\dfrac34", Fraction(3, 4), False),
    ("25%", Fraction(25), True),
    ("25\\%", Fraction(25), True),
    ("3 cm", Fraction(3), False),              # unit dropped
    ("140^\\circ", Fraction(140), False),      # degrees dropped
    ("140°", Fraction(140), False),
    ("12 m^2", Fraction(12), False),
    ("three", Fraction(3), False),
    ("twenty-one", Fraction(21), False),
    ("１２", Fraction(12), False),              # full-width digits are digits (NFKC)
    ("𝟑", Fraction(3), False),                 # mathematical bold digit (NFKC)
    (".5", Fraction(1, 2), False),
    ("1.5e3", Fraction(1500), False),
    ("$5$", Fraction(5), False),
])
def test_parse_number(text, value, pct):
    assert parse_number(text) == (value, pct)


@pytest.mark.parametrize("text", ["٣", "З", "O", "l", "", "abc", "1" * 100, "1e99999"])
def test_not_numbers(text):
    # Arabic-Indic digits, Cyrillic Ze and Latin O/l are look-alikes, not ASCII digits;
    # absurdly long digit runs and exponents are refused
    assert parse_number(text) is None


@pytest.mark.parametrize("text, expected", [
    ("There are 3 red shapes.", (Fraction(3), "ok")),
    ("x = 5", (Fraction(5), "ok")),
    ("3 and 4", (None, "multiple")),
    ("1 2 3 4 5", (None, "multiple")),
    ("2^{10}", (None, "expression")),
    ("9^{9^{9^{9}}}", (None, "expression")),
    ("no digits", (None, "none")),
])
def test_single_number(text, expected):
    parsed, status = single_number(text)
    assert (parsed[0] if parsed else None, status) == expected
