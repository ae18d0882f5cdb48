"""Benchmark rules: `mathvista`, `mmmu`, `scienceqa` (each with `official` and `lenient` modes).

In `official` mode each follows its benchmark's own scoring code; the one deliberate exception,
in both modes, is that where that code falls back to a *random* option we score 0 and count a
parse failure. `lenient` (the training default) maps to our consistent verifiers.

- MathVista (lupantech/MathVista `evaluation/calculate_score.py`, `normalize_extracted_answer`
  + `safe_equal`): multiple choice takes the letter of a `(X)` in the extraction, maps a letter
  to its option text, and otherwise takes the option with the smallest Levenshtein distance
  (deterministic, so kept, and an empty extraction goes through it too: "" is nearest to the
  shortest option); integers compare as `str(int(float(x)))` (truncation: 3.7 -> "3"), floats
  as `str(round(float(x), int(precision)))` (no precision: None, wrong),
  lists and text as `str(x)`; the result must equal the gold string exactly. The official
  extraction step is GPT-4; we use a record's own `extraction` field when it has one
  (`meta["extraction"]`), else MathVista's quick rules (the response itself when it is an option
  / an int / a float), else our rule-based extraction.
- MMMU (MMMU-Benchmark/MMMU `eval/eval_utils.py`): `parse_multi_choice_response` (bracketed
  letters, then spaced letters, then option texts for responses over 5 words; the *last*
  mentioned candidate wins) and, for open questions, `parse_open_response` + `eval_open`
  (any extracted number equal to the gold rounded to 2 decimals, or the gold string contained
  in a key sub-response). `eval_open` takes a list of golds, any of which counts; the hub
  dataset stores such a gold as a list-literal string (`"['24/7', '3.429']"`), which
  `mmmu_gold_answers` reads with `ast.literal_eval` (the gold only, never model text). The random
  choice on an unparsed answer is replaced by 0.
- ScienceQA (LLaVA's `eval_science_qa.py`, which wraps the ScienceQA repo's rule): the text is
  exactly an option letter, or starts with "X. ", or contains exactly one "The answer is X.";
  letters A-E within the number of choices; else 0 (the official code picks a random option).

The text the official rules see is the extracted answer when the response has an
`<answer>` tag or a `\\boxed{}`, else the response after its `</think>` part as written (not
stripped: in `"B.\\n"` the newline keeps MMMU from stripping the period, its search for `" B "`
fails, and the official code guesses at random, which scores 0 here).
"""
from __future__ import annotations

import ast
import re

from data_prep.schema import Sample

from ..extract import extract_answer, official_text
from ..registry import register_verifier
from ._common import result, unparsed
from .choice import gold_index, multiple_choice
from .numeric import exact_match, list_match, numeric


MAX_OFFICIAL_CHARS = 100_000
_LONG_DIGIT_RUN = re.compile(r"[0-9]{100}")


def _official_text(response: str, ex) -> str | None:
    """What the official parsers see; None for absurd input (over MAX_OFFICIAL_CHARS, or a run
    of 100+ digits, on which the official regexes backtrack quadratically)."""
    text = official_text(response, ex)
    if len(text) > MAX_OFFICIAL_CHARS or _LONG_DIGIT_RUN.search(text):
        return None
    return text


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert/delete/substitute, cost 1 each); O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------------------------------------
# MathVista
# ---------------------------------------------------------------------------------------------

def _mathvista_fields(sample: Sample) -> tuple[str, str, int | None]:
    meta = sample.meta
    question_type = meta.get("question_type") or (
        "multi_choice" if sample.answer_type == "multiple_choice" else "free_form")
    answer_type = meta.get("mathvista_answer_type") or {
        "multiple_choice": "text", "integer": "integer", "float": "float", "list": "list",
    }.get(sample.answer_type, "text")
    precision = meta.get("precision")
    try:
        precision = int(float(precision)) if precision not in (None, "") else None
    except (TypeError, ValueError):
        precision = None
    if precision is not None and precision != precision:  # NaN from a parquet column
        precision = None
    return question_type, answer_type, precision


def _mathvista_quick_extract(response: str, sample: Sample, question_type: str, answer_type: str):
    """MathVista's rule-based extraction steps (before its GPT step)."""
    if response == "":
        return ""
    if question_type == "multi_choice" and sample.choices and response in sample.choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    return None


def mathvista_normalize(extraction: str, choices, question_type: str, answer_type: str,
                        precision: int | None):
    """`normalize_extracted_answer` of the official script (None where it yields None)."""
    if question_type == "multi_choice":
        extraction = extraction.strip()
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        distances = [levenshtein(extraction, str(c)) for c in choices]
        return choices[distances.index(min(distances))]
    if answer_type == "integer":
        try:
            return str(int(float(extraction)))
        except (ValueError, OverflowError):
            return None
    if answer_type == "float":
        if precision is None:  # int(None) raises in the official code: no prediction
            return None
        try:
            return str(round(float(extraction), precision))
        except (ValueError, OverflowError, TypeError):
            return None
    return str(extraction)


@register_verifier("mathvista")
def mathvista(response: str, sample: Sample, mode: str = "lenient"):
    question_type, answer_type, precision = _mathvista_fields(sample)
    if mode != "official":
        if question_type == "multi_choice":
            res = multiple_choice(response, sample)
        elif answer_type in ("integer", "float"):
            res = numeric(response, sample)
        elif answer_type == "list":
            res = list_match(response, sample)
        else:
            res = exact_match(response, sample)
        res.components = {"mathvista": res.score}
        res.info["mode"] = mode
        return res
    ex = extract_answer(response)
    extraction = sample.meta.get("extraction")
    rule = "record"
    if extraction is None:
        extraction = _mathvista_quick_extract(response, sample, question_type, answer_type)
        rule = "mathvista_quick"
    if extraction is None:
        if ex.text is None:
            return unparsed("mathvista", ex, ex.rule)
        extraction, rule = ex.text, ex.rule
    extraction = str(extraction)
    if question_type == "multi_choice":
        if not sample.choices:
            raise ValueError(f"mathvista: sample {sample.id!r}: multi_choice without choices")
    prediction = mathvista_normalize(extraction, sample.choices or [], question_type,
                                     answer_type, precision)
    if prediction is None:
        return result("mathvista", 0.0, ex, parse_failure=True, mode=mode, extracted_by=rule,
                      reason=f"not a {answer_type}")
    return result("mathvista", prediction == str(sample.answer), ex, mode=mode,
                  extracted_by=rule, prediction=prediction)


# ---------------------------------------------------------------------------------------------
# MMMU
# ---------------------------------------------------------------------------------------------

def mmmu_parse_choice(response: str, all_choices: list[str], index2ans: dict) -> str | None:
    """`parse_multi_choice_response`, returning None where the official code picks at random."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    index_ans, with_brackets = True, False
    candidates = []
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            with_brackets = True
    if not candidates:
        for choice in all_choices:
            if f" {choice} " in response:
                candidates.append(choice)
    if not candidates and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if index_ans:
        pattern = "({})" if with_brackets else " {} "
        starts = [response.rfind(pattern.format(c)) for c in candidates]
    else:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[starts.index(max(starts))]  # np.argmax: first of the maxima


def _mmmu_is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def mmmu_normalize_str(text: str) -> list:
    text = text.strip()
    if _mmmu_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


_MMMU_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_MMMU_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_MMMU_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def mmmu_extract_numbers(text: str) -> list[str]:
    return (_MMMU_COMMAS.findall(text) + _MMMU_SCIENTIFIC.findall(text)
            + _MMMU_SIMPLE.findall(text))


def mmmu_parse_open(response: str) -> list:
    """`parse_open_response`: key sub-responses and the numbers in them, normalised."""
    response = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for index, sub in enumerate(subs):
        if index == len(subs) - 1:
            indicators = indicators + ["="]
        shortest = None
        for indicator in indicators:
            if indicator in sub:
                tail = sub.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    if not keys:
        keys = [response]
    predictions = list(keys)
    for key in keys:
        predictions.extend(mmmu_extract_numbers(key))
    normalized = []
    for p in predictions:
        normalized.extend(mmmu_normalize_str(p))
    out = []
    for p in normalized:  # list(set(...)) in the original; order does not matter to eval_open
        if p not in out:
            out.append(p)
    return out


MMMU_MAX_GOLD_CHARS = 20_000


def mmmu_gold_answers(gold) -> list[str]:
    """The acceptable answers of an MMMU gold: a list as it is, a string holding a list literal
    (`"['24/7', '3.429']"`, as the hub dataset stores several golds) as that list, anything else
    as the one answer `[str(gold)]`.

    Only the dataset's gold goes through `ast.literal_eval` (a literal parser, never `eval`), and
    only when it starts with `[` and is at most MMMU_MAX_GOLD_CHARS long. A string that does not
    parse to a non-empty list of strings and numbers (`"[0, 1)"`, an interval) is one answer."""
    if isinstance(gold, (list, tuple)):
        return [str(g) for g in gold]
    text = str(gold)
    if text.lstrip().startswith("[") and len(text) <= MMMU_MAX_GOLD_CHARS:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = None
        if isinstance(value, list) and value and all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return [str(v) for v in value]
    return [text]


def mmmu_eval_open(gold, predictions: list) -> bool:
    golds = gold if isinstance(gold, list) else [gold]
    norm_answers = []
    for g in golds:
        norm_answers.extend(mmmu_normalize_str(str(g)))
    for pred in predictions:
        if isinstance(pred, str):
            if any(isinstance(a, str) and a in pred for a in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False


@register_verifier("mmmu")
def mmmu(response: str, sample: Sample, mode: str = "lenient"):
    is_choice = sample.answer_type == "multiple_choice" or (
        sample.meta.get("question_type") == "multiple-choice")
    if mode != "official":
        res = multiple_choice(response, sample) if is_choice else (
            numeric(response, sample) if sample.answer_type in ("integer", "float")
            else exact_match(response, sample))
        res.components = {"mmmu": res.score}
        res.info["mode"] = mode
        return res
    ex = extract_answer(response)
    text = _official_text(response, ex)
    if text is None:
        return unparsed("mmmu", ex, "response too long or absurd for the official parser")
    if is_choice:
        choices = sample.choices or []
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        picked = mmmu_parse_choice(text, letters, dict(zip(letters, map(str, choices))))
        if picked is None:
            return unparsed("mmmu", ex, "no option found (official code: random choice)")
        golds = sample.answer if isinstance(sample.answer, list) else [sample.answer]
        return result("mmmu", picked in [str(g) for g in golds], ex, mode=mode, predicted=picked)
    if not text:
        return unparsed("mmmu", ex, "empty response")
    answers = sample.meta.get("answers")
    golds = [str(a) for a in answers] if isinstance(answers, list) and answers else mmmu_gold_answers(
        sample.answer)
    return result("mmmu", mmmu_eval_open(golds, mmmu_parse_open(text)), ex, mode=mode)


# ---------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------

SCIENCEQA_OPTIONS = ["A", "B", "C", "D", "E"]
_SCIENCEQA_PATTERN = re.compile(r"The answer is ([A-Z]).")


def scienceqa_parse(text: str) -> str:
    if text in SCIENCEQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _SCIENCEQA_PATTERN.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


@register_verifier("scienceqa")
def scienceqa(response: str, sample: Sample, mode: str = "lenient"):
    if mode != "official":
        res = multiple_choice(response, sample)
        res.components = {"scienceqa": res.score}
        res.info["mode"] = mode
        return res
    ex = extract_answer(response)
    text = _official_text(response, ex)
    if text is None:
        return unparsed("scienceqa", ex, "response too long or absurd for the official parser")
    letter = scienceqa_parse(text)
    n = len(sample.choices or SCIENCEQA_OPTIONS)
    if letter not in SCIENCEQA_OPTIONS[:n]:
        return unparsed("scienceqa", ex, "no 'The answer is X.' (official code: random choice)")
    return result("scienceqa", SCIENCEQA_OPTIONS.index(letter) == gold_index(sample), ex,
                  mode=mode, predicted=letter)
