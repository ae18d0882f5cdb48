"""Text and number normalisation shared by the verifiers (no eval, no sympy: plain regexes).

Numbers are read as exact `Fraction`s: integers, decimals, thousands separators (`1,234`),
signs, `3/4`, `\\frac{3}{4}`, scientific notation with a small exponent, and a trailing `%`.
Digits must be ASCII after NFKC normalisation (so full-width `３` and mathematical `𝟑` count as
3, while look-alikes such as Arabic-Indic `٣`, Cyrillic `З` or the letter `O` do not).
Units (`°`, `cm`, `m^2`, `%` handled separately, ...) directly after a number are removed.
"""
from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from functools import lru_cache

MAX_DIGITS = 60
"""Longer digit runs are not read as numbers (nothing legitimate needs them; they cost time)."""

_SUPERSCRIPTS = str.maketrans({"²": "^2", "³": "^3", "¹": "^1", "°": " ° ", "º": " ° ",
                               "−": "-", "–": "-", "—": "-", "\u2212": "-", "×": " × "})
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def clean_unicode(text: str) -> str:
    """NFKC with superscripts kept as `^n`, minus signs as `-`, zero-width characters dropped."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text.translate(_SUPERSCRIPTS)).translate(_ZERO_WIDTH)


_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname|mathit)\s*\{([^{}]*)\}")
_LATEX_SPACING = re.compile(r"\\[,!;: ]|\\quad|\\qquad|\\left|\\right|\\displaystyle|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°|\bdegrees?\b|\bdeg\b", re.I)


def strip_latex(text: str) -> str:
    """Remove math delimiters, spacing commands and `\\text{}`-style wrappers (keeping content)."""
    if "\\" not in text and "$" not in text and "~" not in text and "{," not in text:
        return text
    text = text.replace("\\%", "%").replace("{,}", ",").replace("\\$", "$")
    for _ in range(3):
        new = _LATEX_WRAPPERS.sub(r"\1", text)
        if new == text:
            break
        text = new
    text = _LATEX_SPACING.sub(" ", text)
    text = text.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    text = text.replace("$", " ")
    return text


_UNITS = ("cm", "mm", "km", "m", "dm", "in", "inch", "inches", "ft", "feet", "foot", "yd",
          "yards", "mi", "miles", "units", "unit", "sq", "kg", "g", "mg", "lb", "lbs", "l", "ml",
          "s", "sec", "seconds", "min", "minutes", "h", "hr", "hours", "years", "days",
          "meters", "metres", "meter", "centimeters", "centimetres", "millimeters", "kilometers",
          "mph", "km/h", "m/s", "cm2", "cm3", "m2", "m3", "dollars", "cents", "people", "points",
          "rad", "radians", "pixels", "px")
_UNIT_AFTER_NUMBER = re.compile(
    r"(?<=[0-9}])\s*(?:square\s+|cubic\s+|sq\.?\s+)?(?:" + "|".join(
        sorted(map(re.escape, _UNITS), key=len, reverse=True))
    + r")(?:\s*\^\s*\{?[23]\}?)?(?![A-Za-z0-9])", re.I)


def strip_units(text: str) -> str:
    """Remove degree signs anywhere and length/area/time/money units that follow a number."""
    text = _DEGREES.sub(" ", text)
    text = _UNIT_AFTER_NUMBER.sub(" ", text)
    return text.replace("$", " ")


@lru_cache(maxsize=8192)
def normalize_answer_text(text: str) -> str:
    """Unicode clean-up, LaTeX wrappers and markdown emphasis removed, whitespace collapsed."""
    text = strip_latex(clean_unicode(text))
    text = text.replace("**", " ").replace("__", " ").replace("`", " ")
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

_NUM = (r"(?<![0-9.])[-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|(?<![0-9])[-+]?\.[0-9]+")
_EXP = r"(?:[eE][-+]?[0-9]{1,3}(?![0-9]))?"
_FRAC_LATEX = re.compile(r"(-?)\\[dt]?frac\s*\{\s*(" + _NUM + r")\s*\}\s*\{\s*(" + _NUM + r")\s*\}")
_FRAC_LATEX_SHORT = re.compile(r"(-?)\\[dt]?frac\s*([0-9])\s*([0-9])")
_NUMBER = re.compile(r"(" + _NUM + r")" + _EXP + r"(?:\s*/\s*(" + _NUM + r"))?(\s*%)?")
_WHOLE_NUMBER = re.compile(r"\s*(" + _NUM + r")(" + _EXP + r")\s*(?:/\s*(" + _NUM + r")\s*)?(%)?\s*")

_SMALL = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
WORD_NUMBERS: dict[str, int] = {w: i for i, w in enumerate(_SMALL)}
for _t, _w in enumerate(_TENS):
    if _w:
        WORD_NUMBERS[_w] = 10 * _t
        for _u in range(1, 10):
            WORD_NUMBERS[f"{_w}-{_SMALL[_u]}"] = 10 * _t + _u
            WORD_NUMBERS[f"{_w} {_SMALL[_u]}"] = 10 * _t + _u
WORD_NUMBERS.update({"a hundred": 100, "one hundred": 100})
# Words found inside a sentence; "none" counts only as a whole answer (WHOLE_WORD_NUMBERS).
_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, WORD_NUMBERS), key=len, reverse=True))
                   + r")\b", re.I)
WHOLE_WORD_NUMBERS = {**WORD_NUMBERS, "none": 0}


def _to_fraction(token: str) -> Fraction | None:
    token = token.replace(",", "").replace("+", "")
    digits = sum(ch.isdigit() for ch in token)
    if digits == 0 or digits > MAX_DIGITS:
        return None
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _compose(num: str, exp: str, den: str | None, pct: str | None) -> tuple[Fraction, bool] | None:
    value = _to_fraction(num)
    if value is None:
        return None
    if exp:
        value *= Fraction(10) ** int(exp[1:])
    if den:
        d = _to_fraction(den)
        if d is None or d == 0:
            return None
        value /= d
    return value, bool(pct)


def _latex_fracs_to_slash(text: str) -> str:
    text = _FRAC_LATEX.sub(lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", text)
    return _FRAC_LATEX_SHORT.sub(lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", text)


@lru_cache(maxsize=8192)
def parse_number(text: str) -> tuple[Fraction, bool] | None:
    """`text` as a whole read as one number: `(value, had_percent_sign)`, or None.

    `"1,234.5"` -> 1234.5; `"-3/4"` / `"\\frac{3}{4}"` -> ∓3/4; `"25%"` -> (25, True);
    `"3 cm"` -> 3 (units dropped); `"three"` -> 3.
    """
    if len(text) > 200:
        return None
    text = _latex_fracs_to_slash(strip_units(strip_latex(clean_unicode(text)))).strip()
    text = text.strip(" ;:!?\"'").rstrip(".").replace("{", "").replace("}", "")
    m = _WHOLE_NUMBER.fullmatch(text)
    if m:
        return _compose(m.group(1), m.group(2), m.group(3), m.group(4))
    word = WHOLE_WORD_NUMBERS.get(" ".join(text.lower().split()))
    if word is not None:
        return Fraction(word), False
    return None


def find_numbers(text: str, words: bool = True) -> list[tuple[Fraction, bool]]:
    """Every number in `text`, in order (digits, fractions, percentages, optionally words)."""
    text = _latex_fracs_to_slash(strip_units(strip_latex(clean_unicode(text))))
    found: list[tuple[int, tuple[Fraction, bool]]] = []
    for m in _NUMBER.finditer(text):
        num = m.group(1)
        exp_match = re.match(_EXP, text[m.end(1):])
        exp = exp_match.group(0) if exp_match else ""
        parsed = _compose(num, exp, m.group(2), m.group(3))
        if parsed is not None:
            found.append((m.start(), parsed))
    if words:
        for m in _WORD.finditer(text):
            found.append((m.start(), (Fraction(WORD_NUMBERS[m.group(1).lower()]), False)))
    found.sort(key=lambda item: item[0])
    return [value for _, value in found]


_EXPRESSION = re.compile(r"[\^*×√π]|\\[A-Za-z]+")


@lru_cache(maxsize=8192)
def single_number(text: str, words: bool = True) -> tuple[tuple[Fraction, bool] | None, str]:
    """The one number an answer states: `((value, percent), "ok")`, `(None, "none")` when it
    holds no number, `(None, "multiple")` when it states several different ones (a shotgun), or
    `(None, "expression")` when it is an expression (`2^{10}`, `3\\sqrt{2}`) rather than a number.
    `(None, "not_a_number")` when the one number sits in code-like text or is negated: the span
    must read as a number with plain words around it ("There are 3 shapes"), so `exit(3)`,
    `AZYUK3A`, `x_3` and `not 3` are not 3.

    The part after the last `=` is used when there is one (`x = 5`).
    """
    whole = parse_number(text)
    if whole is not None:
        return whole, "ok"
    cleaned = clean_unicode(text)
    if "=" in cleaned:
        tail = cleaned.rsplit("=", 1)[1]
        if tail.strip():
            cleaned = tail
            whole = parse_number(cleaned)
            if whole is not None:
                return whole, "ok"
    if _EXPRESSION.search(_latex_fracs_to_slash(strip_units(strip_latex(cleaned)))):
        return None, "expression"
    numbers = find_numbers(cleaned, words=words)
    distinct = {value for value, _ in numbers}
    if not numbers:
        return None, "none"
    if len(distinct) > 1:
        return None, "multiple"
    if not _plain_words_around(cleaned):
        return None, "not_a_number"
    return numbers[-1], "ok"


_CODE_LIKE = re.compile(r"[()\[\]{}_=<>\\\"`@#^*|~;]")
_GLUED = re.compile(r"[A-Za-z][0-9]|[0-9][A-Za-z]")
_NEGATED = re.compile(r"(?<![a-z])(?:not|no|never|isn'?t|aren'?t|wrong|except)(?![a-z])", re.I)


def _plain_words_around(text: str) -> bool:
    """Whether the text around the numbers of `text` is plain words (no code-like characters,
    no letters glued to a digit, no negation)."""
    plain = _latex_fracs_to_slash(strip_units(strip_latex(clean_unicode(text))))
    if _GLUED.search(plain) or _NEGATED.search(plain):
        return False
    return not _CODE_LIKE.search(_NUMBER.sub(" ", plain))


_ANSWER_WORDS = re.compile(
    r"\s*(?:(?:so|thus|therefore|hence)\s*,?\s+)?(?:the\s+)?(?:final\s+)?(?:answer|result)\s*"
    r"(?:is|:|=)?\s*:?", re.I)
_NAME_BEFORE_EQUALS = re.compile(r"\s*\\?[A-Za-z]{1,3}(?:_\{?[A-Za-z0-9]{1,3}\}?)?\s*")
_SPACED_THOUSANDS = re.compile(r"(?<![0-9.])([1-9][0-9]{0,2}(?:\s[0-9]{3})+)(?![0-9])")
_THOUSANDS_COMMAS = re.compile(r"-?[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"(-?[0-9]+),([0-9]+)")


def answer_number(text: str) -> tuple[Fraction, bool] | None:
    """An answer span read *as a whole* as one number, or None.

    Allowed around the number: units (`3 cm`, `140°`), a name and `=` (`x = 5`, `AB = 5`),
    leading words such as "the answer is", a final period. Thousands written with spaces
    (`1 000`) or commas (`1,000.99`), and a decimal comma where the digits after it are not a
    thousands group (`2,74`, `1000,99`, `0,111`), as math-verify reads them. Anything else is
    not a number: `exit(3)`, `AZYUK2A`, `3 or 4`, `I think 3 but maybe not` -> None (one number
    somewhere in a span is not an answer).
    """
    if len(text) > 200:
        return None
    candidates = [text]
    cleaned = clean_unicode(text)
    lead = _ANSWER_WORDS.match(cleaned)
    if lead and lead.end() < len(cleaned):
        candidates.append(cleaned[lead.end():])
    if "=" in cleaned:
        head, tail = cleaned.rsplit("=", 1)
        if _NAME_BEFORE_EQUALS.fullmatch(head.strip("$ ")) or not head.strip("$ "):
            candidates.append(tail)
    for candidate in candidates:
        stripped = candidate.strip().strip("$").strip().rstrip(".").strip()
        m = _DECIMAL_COMMA.fullmatch(stripped)
        if m and not _THOUSANDS_COMMAS.fullmatch(stripped):  # before parse_number: "0,111" is 0.111
            return parse_number(f"{m.group(1)}.{m.group(2)}")
        value = parse_number(candidate)
        if value is not None:
            return value
        joined = _SPACED_THOUSANDS.sub(lambda m: m.group(1).replace(" ", ""), stripped)
        if joined != stripped:
            value = parse_number(joined)
            if value is not None:
                return value
    return None


def decimals_of(text) -> int | None:
    """Number of decimal places a gold answer is written with (`"1.45"` -> 2), else None."""
    m = re.fullmatch(r"\s*[-+]?[0-9,]*\.([0-9]+)\s*%?\s*", str(text))
    return len(m.group(1)) if m else None
