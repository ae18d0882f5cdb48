"""`math`: symbolic and numeric equivalence through math-verify, units normalised away.

Plain numbers on both sides are compared exactly here (fast, and math-verify misses a bare
number); anything else goes to math-verify's LaTeX parser. Only its LaTeX extraction is used:
its plain-expression extraction calls sympy's `parse_expr`, which evaluates Python code, and
model text must never reach that. Power towers, giant exponents and factorials are refused
before parsing (`\\boxed{9^{9^{9^{9}}}}` would otherwise run for ever); the worker's hard time
limit is the backstop.
"""
from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

from data_prep.schema import Sample

from ..extract import extract_answer
from ..registry import register_verifier
from ..textnorm import clean_unicode, parse_number, single_number, strip_units
from ._common import numbers_equal, result, unparsed

INTERNAL_TIMEOUT_S: int | None = 2
"""math-verify's own (signal-based) limit per parse/compare, used only on a main thread; the
scorer's worker sets it below its hard limit. Off the main thread math-verify runs without it."""

MAX_LATEX_CHARS = 400


class _InternalTimeouts(logging.Filter):
    """math-verify reports its own limit only as a log warning ("Timeout during comparison",
    "Timeout during parsing: ..."), which reached stderr as bare lines while scorers counted no
    timeout. This filter swallows those lines and counts them; the verifier then flags the result
    (`internal_timeout`), which the scorer counts as a timeout."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Timeout during"):
            _InternalTimeouts.count += 1
            return False
        return True


for _name in ("math_verify.grader", "math_verify.parser"):  # math-verify's own loggers (no import needed)
    logging.getLogger(_name).addFilter(_InternalTimeouts())

# Texts and (gold, prediction) pairs whose parse or comparison hit the internal limit; the
# cached functions below return their fallback ((), False) for them, so the flag lives here.
_TIMED_OUT: set = set()


def too_complex(text: str) -> str | None:
    """A reason to refuse `text` before any parsing, or None."""
    if len(text) > MAX_LATEX_CHARS:
        return "too long"
    if re.search(r"[0-9]{3,}\s*!|!\s*!", text):
        return "large factorial"
    i = text.find("^")
    while i >= 0:
        j = i + 1
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            depth, k = 0, j
            while k < len(text):
                depth += text[k] == "{"
                depth -= text[k] == "}"
                if depth == 0:
                    break
                k += 1
            exponent = text[j + 1:k]
        else:
            m = re.match(r"[-+]?[0-9.]+|\\?[A-Za-z]+|.", text[j:])
            exponent = m.group(0) if m else ""
        if "^" in exponent or "**" in exponent:
            return "nested exponent"
        digits = re.findall(r"[0-9]+", exponent)
        if any(len(d) > 4 for d in digits):
            return "huge exponent"
        if text.count("^") > 8:
            return "too many exponents"
        i = text.find("^", i + 1)
    if "**" in text:
        return "python power operator"
    return None


def _timeouts() -> tuple[dict, dict]:
    on_main = threading.current_thread() is threading.main_thread()
    t = INTERNAL_TIMEOUT_S if on_main else None
    if t is None:  # we bound time ourselves (worker hard limit); silence its one-time warning
        import math_verify.grader
        import math_verify.parser
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return {"parsing_timeout": t}, {"timeout_seconds": t}


_UNICODE_MATH = (("π", "\\pi "), ("×", "\\times "), ("·", "\\cdot "), ("÷", "\\div "),
                 ("≤", "\\le "), ("≥", "\\ge "), ("≠", "\\ne "), ("∞", "\\infty "))


def unicode_to_latex(text: str) -> str:
    """Plain-text math as sources and models write it -> LaTeX: `2√{3}`, `2√3`, `√(x+1)`,
    `π`, `×`, `·`, `÷`, `≤`, `≥`, `≠`, `∞`."""
    if text.isascii():
        return text
    text = re.sub(r"√\s*\{", r"\\sqrt{", text)
    text = re.sub(r"√\s*\(([^()]*)\)", r"\\sqrt{\1}", text)
    text = re.sub(r"√\s*([0-9.]+|\\?[A-Za-z]+)", r"\\sqrt{\1}", text)
    for symbol, latex in _UNICODE_MATH:
        text = text.replace(symbol, latex)
    return text


def _latex(text: str) -> str:
    text = strip_units(unicode_to_latex(clean_unicode(text))).strip()
    text = text.replace("\\$", "").replace("$", "").strip().rstrip(".")
    return f"${text}$"


@lru_cache(maxsize=4096)
def _parse(text: str):
    from math_verify import LatexExtractionConfig, parse  # heavy import, only where needed
    parse_kw, _ = _timeouts()
    before = _InternalTimeouts.count
    try:
        return tuple(parse(_latex(text), extraction_config=[LatexExtractionConfig()],
                           fallback_mode="no_fallback", **parse_kw))
    except Exception:
        return ()
    finally:
        if _InternalTimeouts.count != before:
            _remember_timeout(text)


@lru_cache(maxsize=4096)
def _equivalent(gold_text: str, pred_text: str) -> bool:
    """math-verify's verdict on two answer texts (cached: a group of G samples often repeats
    an answer, and the verdict is a pure function of the two texts)."""
    before = _InternalTimeouts.count
    verdict = _verify(_parse(gold_text), _parse(pred_text))
    if _InternalTimeouts.count != before:
        _remember_timeout((gold_text, pred_text))
    return verdict


def _remember_timeout(key) -> None:
    if len(_TIMED_OUT) > 4096:
        _TIMED_OUT.clear()
    _TIMED_OUT.add(key)


def _verify(gold, pred) -> bool:
    from math_verify import verify
    _, verify_kw = _timeouts()
    try:
        return bool(verify(list(gold), list(pred), **verify_kw))
    except Exception:
        return False


def warm_up() -> None:
    """Import and exercise math-verify's main paths once (numbers, symbols, roots, powers,
    equations, sets), so that sympy's lazy imports do not land on the first scored call
    (workers call this before accepting work)."""
    global INTERNAL_TIMEOUT_S
    # No internal limit here: these imports take seconds on a busy machine, and a timed-out
    # warm-up would both warn ("Timeout during comparison") and leave the imports to the first
    # real call. The worker's startup limit bounds this instead.
    limit, INTERNAL_TIMEOUT_S = INTERNAL_TIMEOUT_S, None
    try:
        for gold, pred in (("\\frac{1}{2}", "0.5"), ("9", "ab c"), ("\\sqrt{2}", "2^{1/2}")):
            _verify(_parse(gold), _parse(pred))
    finally:
        INTERNAL_TIMEOUT_S = limit
        _parse.cache_clear()
        _equivalent.cache_clear()


@register_verifier("math")
def math_answer(response: str, sample: Sample):
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("math", ex, ex.rule)
    if ex.ambiguous:
        return result("math", 0.0, ex, reason="several different answers")
    gold_text = str(sample.answer)
    gold_num = parse_number(gold_text)
    pred_num, status = single_number(ex.text, words=False)
    if gold_num is not None and pred_num is not None:
        return result("math", numbers_equal(pred_num, gold_num, gold_text), ex, method="number")
    if gold_num is not None and status == "multiple":
        return result("math", 0.0, ex, shotgun=True, reason="several different numbers")
    reason = too_complex(ex.text)
    if reason:
        return unparsed("math", ex, reason)
    pred = _parse(ex.text)
    if not pred:
        if ex.text in _TIMED_OUT:
            return result("math", 0.0, ex, parse_failure=True, internal_timeout=True,
                          reason="math-verify's time limit ran out while parsing the answer")
        return unparsed("math", ex, "math-verify could not parse the answer")
    if not _parse(gold_text):
        if gold_text in _TIMED_OUT:
            return result("math", 0.0, ex, internal_timeout=True,
                          reason="math-verify's time limit ran out while parsing the gold answer")
        raise ValueError(f"math: sample {sample.id!r}: gold answer {sample.answer!r} does not parse")
    verdict = _equivalent(gold_text, ex.text)
    if (gold_text, ex.text) in _TIMED_OUT:
        return result("math", verdict, ex, method="math_verify", internal_timeout=True)
    return result("math", verdict, ex, method="math_verify")
