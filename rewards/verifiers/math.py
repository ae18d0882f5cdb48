"""`math`: symbolic and numeric equivalence through math-verify, units normalised away.

The verdict is math-verify's default `verify(parse(gold), parse(response))` (what most RL
pipelines use), with two deliberate differences: an `<answer>` span is parsed on its own
(math-verify misses a bare number directly inside `<answer>140</answer>`), and a span that reads
as a whole as one number is compared exactly here (fast; units such as `cm`, `°` dropped).
Without an `<answer>` span math-verify sees the response after its `</think>` part, as it
would: several `\\boxed{}` answers form a set or tuple, display math and relations are its own.

Model text never reaches sympy's `parse_expr` unguarded: math-verify's plain-expression
extraction calls it (it evaluates Python), so `install_expr_guard` puts a strict token grammar
in front (`plain_expression_refusal`: digits, `.`, whitespace, `+ - * / ( )` and at most two
small powers; no letters, underscores, quotes, attribute dots or brackets). Where the guard
cannot be installed (math-verify moved the name) the plain-expression extraction is not used at
all. Power towers, giant exponents and factorials are refused before any parsing
(`\\boxed{9^{9^{9^{9}}}}` would otherwise run for ever); the worker's hard time limit is the
backstop.
"""
from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

from data_prep.schema import Sample

from ..extract import after_think, extract_answer
from ..registry import register_verifier
from ..textnorm import answer_number, clean_unicode, strip_units
from ._common import numbers_equal, result, unparsed

INTERNAL_TIMEOUT_S: int | None = 2
"""math-verify's own (signal-based) limit per parse/compare, used only on a main thread; the
scorer's worker sets it below its hard limit. Off the main thread math-verify runs without it."""

MAX_LATEX_CHARS = 400
MAX_RESPONSE_CHARS = 20_000
"""Longest response (after `</think>`) handed to math-verify whole; longer ones are judged on
their extracted answer alone."""


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


_PY_POWER = re.compile(r"[0-9A-Za-z)\]}.]\s*\*\*\s*[-+(0-9A-Za-z{]")


def too_complex(text: str, max_chars: int = MAX_LATEX_CHARS, max_exponents: int = 8) -> str | None:
    """A reason to refuse `text` before any parsing, or None. (A whole response may hold more
    exponents than one answer: `max_exponents`; each is still checked for size and nesting.)"""
    if len(text) > max_chars:
        return "too long"
    if re.search(r"[0-9]{3,}\s*!|!\s*!", text):
        return "large factorial"
    i = text.find("^")
    while i >= 0:
        j = i + 1
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] in "{(":  # `^{...}`, and `^(...)` as plain text writes it
            opening = text[j]
            closing = "}" if opening == "{" else ")"
            depth, k = 0, j
            while k < len(text):
                depth += text[k] == opening
                depth -= text[k] == closing
                if depth == 0:
                    break
                k += 1
            exponent = text[j + 1:k]
        else:
            m = re.match(r"[-+]?[0-9.]+|\\?[A-Za-z]+|.", text[j:])
            exponent = m.group(0) if m else ""
            k = j + len(exponent) - 1
        if "^" in exponent or "**" in exponent or text[k + 1:k + 3].lstrip().startswith("^"):
            return "nested exponent"  # `^{9^9}`, and the chain `9^9^9` (right-associative)
        digits = re.findall(r"[0-9]+", exponent)
        if any(len(d) > 4 for d in digits):
            return "huge exponent"
        if text.count("^") > max_exponents:
            return "too many exponents"
        i = text.find("^", i + 1)
    if _PY_POWER.search(text):  # not markdown bold (`**Answer:**`)
        return "python power operator"
    return None


_PLAIN_EXPRESSION = re.compile(r"[0-9.\s+\-*/()]*")
_SMALL_POWER = re.compile(r"\*\*\s*(?:\(\s*-?\s*[0-9]{1,3}\s*\)|-?[0-9]{1,3})(?![0-9.]|\s*\*\*)")


def plain_expression_refusal(expr: str) -> str | None:
    """Why `expr` may not reach sympy's `parse_expr`, or None when it may.

    The grammar is what math-verify's plain-expression regex can produce once `^` became `**`:
    digits, `.`, whitespace, `+ - * / ( )`. Anything else (a letter, `_`, a quote, `[`, `,`,
    `=`) is refused, so no name, attribute, call or literal of Python can appear. Powers are
    limited to two, each with a literal integer exponent of at most 3 digits (`9**9**9`,
    `2**(3+99999)` and `2**1e9` are refused).
    """
    if not isinstance(expr, str) or len(expr) > 200:
        return "too long"
    if not _PLAIN_EXPRESSION.fullmatch(expr):
        return "outside the plain-expression grammar"
    powers = expr.count("**")
    if powers > 2:
        return "too many powers"
    if powers and len(_SMALL_POWER.findall(expr)) != powers:
        return "power without a small literal exponent"
    depth = 0
    for ch in expr:
        depth += (ch == "(") - (ch == ")")
        if depth > 20:
            return "too deeply nested"
    return None


_GUARD: dict = {}


def _guarded_parse_expr(expr, *args, **kwargs):
    reason = plain_expression_refusal(expr)
    if reason:
        raise ValueError(f"plain expression refused: {reason}")
    return _GUARD["parse_expr"](expr, *args, **kwargs)


def install_expr_guard() -> bool:
    """Put `plain_expression_refusal` in front of the `parse_expr` math-verify's parser module
    calls (its only door to sympy's code-evaluating parser). True when the guard is in place;
    False (fail closed: no plain-expression extraction) when the module no longer has that name."""
    if "ok" in _GUARD:
        return _GUARD["ok"]
    import math_verify.parser as mv_parser
    current = getattr(mv_parser, "parse_expr", None)
    ok = callable(current) and hasattr(mv_parser, "parse_expr_cached")
    if ok and current is not _guarded_parse_expr:
        _GUARD["parse_expr"] = current
        mv_parser.parse_expr = _guarded_parse_expr
        mv_parser.parse_expr_cached.cache_clear()  # nothing parsed before the guard is reused
    _GUARD["ok"] = ok
    return ok


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
    """math-verify's default `parse(text)`: LaTeX and plain-expression extraction (the latter
    behind `install_expr_guard`), falling back to the first match's string."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # heavy import
    configs = [LatexExtractionConfig()]
    if install_expr_guard():
        configs.append(ExprExtractionConfig())
    parse_kw, _ = _timeouts()
    before = _InternalTimeouts.count
    try:
        return tuple(parse(text, extraction_config=configs, **parse_kw))
    except Exception:
        return ()
    finally:
        if _InternalTimeouts.count != before:
            _remember_timeout(text)


_DELIMITED = re.compile(r"\$|\\\[|\\\(|\\boxed|\\fbox")


def _parse_gold(gold_text: str) -> tuple:
    """A gold with its own math delimiters is read as written (math-verify's view); a bare one,
    as datasets store answers (`2√{3}`, `140°`), as one LaTeX formula with units dropped."""
    if _DELIMITED.search(gold_text):
        return _parse(gold_text) or _parse(_latex(gold_text))
    return _parse(_latex(gold_text)) or _parse(gold_text)


@lru_cache(maxsize=4096)
def _equivalent(gold_text: str, pred_text: str) -> bool:
    """math-verify's verdict on a gold and a text to parse (cached on the texts: a group of G
    samples often repeats an answer, and parsed matrices are not hashable)."""
    before = _InternalTimeouts.count
    verdict = _verify(_parse_gold(gold_text), _parse(pred_text))
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
    equations, sets, a plain expression), so that sympy's lazy imports do not land on the first
    scored call (workers call this before accepting work)."""
    global INTERNAL_TIMEOUT_S
    # No internal limit here: these imports take seconds on a busy machine, and a timed-out
    # warm-up would both warn ("Timeout during comparison") and leave the imports to the first
    # real call. The worker's startup limit bounds this instead.
    limit, INTERNAL_TIMEOUT_S = INTERNAL_TIMEOUT_S, None
    try:
        for gold, pred in (("\\frac{1}{2}", "$0.5$"), ("9", "$ab c$"), ("\\sqrt{2}", "$2^{1/2}$"),
                           ("10", "Answer: (9+1)")):
            _equivalent(gold, pred)
    finally:
        INTERNAL_TIMEOUT_S = limit
        _parse.cache_clear()
        _equivalent.cache_clear()


# Python, not mathematics: an answer holding these is refused before math-verify could pick a
# number out of it (`Answer: 3 + __import__('os')...` is not 3)
_CODE_MARKERS = re.compile(r"__|\blambda\b|\bimport\b|\b(?:eval|exec|open|exit|print|getattr|compile)\s*\("
                           r"|[A-Za-z_]\.[A-Za-z_]+\s*\(")


@register_verifier("math")
def math_answer(response: str, sample: Sample):
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("math", ex, ex.rule)
    if _CODE_MARKERS.search(ex.text):
        return unparsed("math", ex, "code, not an answer")
    if ex.ambiguous and ex.rule == "answer_tag":
        return result("math", 0.0, ex, reason="several different answers")
    gold_text = str(sample.answer)
    gold_words = " ".join(gold_text.split())
    if gold_words and gold_words in (" ".join(str(response).split()), " ".join(ex.text.split())):
        # written exactly as the gold (`12:00`, `\\text{Monday}`): right whether or not it parses
        return result("math", 1.0, ex, method="identical")
    if not ex.ambiguous:
        # The fast path, and the anti-gaming rule: the span counts as a number only when it
        # reads as one as a whole (`exit(3)` and `AZYUK2A` are not 3).
        gold_num, pred_num = answer_number(gold_text), answer_number(ex.text)
        if gold_num is not None and pred_num is not None:
            # math-verify compares numbers rounded to 6 decimals: 0.0833333333 is 1/12
            ok = numbers_equal(pred_num, gold_num, gold_text) or (
                not pred_num[1] and not gold_num[1]
                and round(float(pred_num[0]), 6) == round(float(gold_num[0]), 6))
            return result("math", ok, ex, method="number")
    # What math-verify is handed: the <answer> span (it misses a bare number inside the tag),
    # else the response after </think> as it would see it (several boxes form a set).
    sources: list[tuple[str, int, int]] = []  # (text for math-verify, longest allowed, most ^)
    if ex.rule == "answer_tag":
        # the span as one formula, never its loose numbers: `<answer>I guess 3 or so</answer>`
        # is not 3 (math-verify's plain-text extraction would take the 3)
        sources.append((_latex(ex.text), MAX_LATEX_CHARS, 8))
    else:
        tail = after_think(response if isinstance(response, str) else str(response))
        sources.append((tail, MAX_RESPONSE_CHARS, 200))
        if not ex.ambiguous and ex.rule == "boxed":
            # the box as one formula: units dropped (`140^\\circ`), unicode math read (not a
            # sentence-like line: read as one formula it multiplies its letters into nonsense)
            sources.append((_latex(ex.text), MAX_LATEX_CHARS, 8))
    refused, parsed_any, verdict, timed_out = None, False, False, False
    for source, max_chars, max_exponents in sources:
        reason = too_complex(source, max_chars, max_exponents)
        if reason:
            refused = refused or reason
            continue
        if not _parse(source):
            timed_out = timed_out or source in _TIMED_OUT
            continue
        if not parsed_any:
            parsed_any = True
            if not _parse_gold(gold_text):
                if any(g in _TIMED_OUT for g in (gold_text, _latex(gold_text))):
                    return result("math", 0.0, ex, internal_timeout=True,
                                  reason="math-verify's time limit ran out while parsing the gold answer")
                raise ValueError(f"math: sample {sample.id!r}: gold answer {sample.answer!r} does not parse")
        verdict = _equivalent(gold_text, source)
        timed_out = timed_out or (gold_text, source) in _TIMED_OUT
        if verdict:
            break
    if not parsed_any:
        if refused:
            return unparsed("math", ex, refused)
        if timed_out:
            return result("math", 0.0, ex, parse_failure=True, internal_timeout=True,
                          reason="math-verify's time limit ran out while parsing the answer")
        return unparsed("math", ex, "math-verify could not parse the answer")
    if timed_out and not verdict:
        return result("math", 0.0, ex, method="math_verify", internal_timeout=True)
    return result("math", verdict, ex, method="math_verify")

