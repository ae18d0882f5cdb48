"""`multiple_choice`: a letter, `(B)`, the option text or the option index -> the gold option.

Gold may be a letter (`"B"`), a 0-based index (`1`, ScienceQA's convention) or the option text
(MathVista's). A response that names several options ("A B C D", "A or C") scores 0, and an
unparseable one scores 0 and counts as a parse failure: there is never a random fallback.
"""
from __future__ import annotations

import re

from data_prep.schema import Sample

from ..extract import extract_answer
from ..registry import register_verifier
from ..textnorm import normalize_answer_text
from ._common import result, unparsed
from .numeric import normalize_text

_PREFIX = re.compile(r"^(?:(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice)s?"
                     r"(?:\s+is)?\s*[:\-]?\s*|so\s+|therefore,?\s+)", re.I)
_LETTER_ONLY = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:)]?")
_LETTER_THEN_TEXT = re.compile(r"\(?([A-Z])\s*[).:]\s+(.+)", re.S)
_INDEX_ONLY = re.compile(r"\(?([0-9]{1,2})\)?[.:)]?")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
# a capital letter standing alone, unless it reads as the article "A"/pronoun "I" ("A red bar")
_BARE_LETTER = re.compile(r"(?<![A-Za-z0-9'’])([A-Z])(?![A-Za-z0-9'’])"
                          r"(?!\s+(?!(?:or|and|nor|then|to|vs)\b)[a-z])")


def letters_for(choices) -> int:
    return len(choices) if choices else 26


def gold_index(sample: Sample) -> int:
    """The gold option's 0-based index (ValueError naming the sample when it cannot be read)."""
    gold, choices = sample.answer, sample.choices
    n = letters_for(choices)
    if isinstance(gold, bool):
        gold = int(gold)
    if isinstance(gold, int):
        if 0 <= gold < n:
            return gold
    else:
        text = str(gold).strip()
        if choices:
            for i, c in enumerate(choices):
                if text == str(c).strip():
                    return i
            for i, c in enumerate(choices):
                if normalize_text(text) == normalize_text(c):
                    return i
        m = re.fullmatch(r"\(?([A-Za-z])\)?\.?", text)
        if m and ord(m.group(1).upper()) - 65 < n:
            return ord(m.group(1).upper()) - 65
        if text.isdigit() and int(text) < n:
            return int(text)
    raise ValueError(f"multiple_choice: sample {sample.id!r}: gold answer {sample.answer!r} is "
                     f"not a letter, index or option of {choices!r}")


def _text_hits(text: str, choices) -> set[int]:
    """Options whose (normalised) text occurs in `text` as whole words."""
    hits = set()
    low = normalize_text(text)
    for i, c in enumerate(choices or []):
        opt = normalize_text(c)
        if opt and re.search(r"(?<![a-z0-9])" + re.escape(opt) + r"(?![a-z0-9])", low):
            hits.add(i)
    # an option that is part of a longer hit option ("red" in "dark red") is not a separate hit
    return {i for i in hits if not any(j != i and normalize_text(choices[i]) in normalize_text(choices[j])
                                       for j in hits)}


_CODE_LIKE = re.compile(r"[()\[\]{}_=<>\\\"`@#$^*|~;]|[0-9]")
_NAME_EQUALS = re.compile(r"^\s*\\?[A-Za-z]{1,3}\s*=\s*")  # "x = 3" reads as 3
_NEGATION = re.compile(r"(?<![a-z])(?:not|no|never|isn'?t|aren'?t|wrong|except)(?![a-z])", re.I)


def _reads_as_option(text: str, choice) -> bool:
    """Whether `text` reads as a whole as this option: the option's text with plain words
    around it ("it is green", "maybe 3", "x = 3"). Code-like residue (brackets, `_`, `=`, another digit)
    or a negation means it does not: against option "3", `exit(3)`, `x_3` and `not 3` are not
    answers (the rule that one option's text anywhere in the span counted was gameable)."""
    opt = str(choice).strip()
    if not opt:
        return False
    pattern = r"(?<![A-Za-z0-9])" + re.escape(opt) + r"(?![A-Za-z0-9])"
    if not re.search(pattern, text, flags=re.I):
        return True  # matched only after normalisation (accents, LaTeX): judged as before
    residue = re.sub(pattern, " ", _NAME_EQUALS.sub("", text, count=1), flags=re.I)
    return not _CODE_LIKE.search(residue) and not _NEGATION.search(residue)


def _named_options(text: str, choices, n: int) -> set[int]:
    """Every option free text names, by `(X)`, a standalone capital letter, or its text."""
    named = {ord(x) - 65 for x in _PAREN_LETTER.findall(text) if ord(x) - 65 < n}
    named |= {ord(x) - 65 for x in _BARE_LETTER.findall(text) if ord(x) - 65 < n}
    return named | _text_hits(text, choices)


def parse_choice(answer: str, choices) -> tuple[int | None, str]:
    """Map an extracted answer to a 0-based option index: `(index, "ok")`, or
    `(None, "multiple")` for a shotgun answer, or `(None, "none")` when nothing is named."""
    n = letters_for(choices)
    text = normalize_answer_text(answer).strip().strip("*").strip()
    text = _PREFIX.sub("", text).strip()
    norm = normalize_text(text)
    if choices:
        exact = [i for i, c in enumerate(choices) if normalize_text(c) == norm]
        if len(exact) == 1:
            return exact[0], "ok"
    m = _LETTER_ONLY.fullmatch(text)
    if m:
        i = ord(m.group(1).upper()) - 65
        if 0 <= i < n and (m.group(1).isupper() or len(text) <= 3):
            return i, "ok"
    m = _LETTER_THEN_TEXT.fullmatch(text)
    if m and ord(m.group(1)) - 65 < n:
        i = ord(m.group(1)) - 65
        named = _named_options(m.group(2), choices, n)
        if not named or named == {i}:
            return i, "ok"
        return None, "multiple"
    numeric_options = bool(choices) and any(re.fullmatch(r"[-+0-9.,/%\s]+", str(c)) for c in choices)
    m = _INDEX_ONLY.fullmatch(text)
    if m and choices and not numeric_options and 1 <= int(m.group(1)) <= n:
        return int(m.group(1)) - 1, "ok"
    named = _named_options(text, choices, n)
    if len(named) == 1:
        i = named.pop()
        by_letter = chr(65 + i) in _PAREN_LETTER.findall(text) + _BARE_LETTER.findall(text)
        if by_letter or _reads_as_option(text, choices[i]):
            return i, "ok"
        return None, "none"
    if len(named) > 1:
        return None, "multiple"
    return None, "none"


@register_verifier("multiple_choice")
def multiple_choice(response: str, sample: Sample):
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("multiple_choice", ex, ex.rule)
    if ex.ambiguous:
        return result("multiple_choice", 0.0, ex, reason="several different answers")
    index, status = parse_choice(ex.text, sample.choices)
    if index is None:
        if status == "multiple":
            return result("multiple_choice", 0.0, ex, shotgun=True, reason="several options named")
        return unparsed("multiple_choice", ex, "no option named")
    return result("multiple_choice", index == gold_index(sample), ex, predicted=index)
