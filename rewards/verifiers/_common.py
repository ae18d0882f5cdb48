"""Helpers every built-in verifier uses to build its RewardResult."""
from __future__ import annotations

from fractions import Fraction

from ..extract import Extraction
from ..result import RewardResult
from ..textnorm import decimals_of


def result(name: str, correct: float | bool, extraction: Extraction | None, *,
           parse_failure: bool = False, **info) -> RewardResult:
    """`RewardResult(score, {name: score}, info)` with the extraction rule and parse status."""
    score = float(correct)
    details = {"extraction": extraction.rule if extraction is not None else None,
               "parse_failure": bool(parse_failure)}
    if extraction is not None and extraction.ambiguous:
        details["shotgun"] = True
    details.update(info)
    return RewardResult(score, {name: score}, details)


def unparsed(name: str, extraction: Extraction, reason: str) -> RewardResult:
    """Score 0 and count a parse failure (no random fallback, ever)."""
    return result(name, 0.0, extraction, parse_failure=True, reason=reason)


def numbers_equal(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool], gold_text: str, *,
                  precision: int | None = None, rel_tol: float | None = None) -> bool:
    """Numeric equality of two `(value, had_percent)` pairs.

    - `precision` (MathVista): `round(x, precision)` on both sides.
    - `rel_tol`: `|pred - gold| <= rel_tol * |gold|` (gold 0 -> exact).
    - otherwise exact, except that a gold written with d decimals accepts any prediction that
      rounds to it at d decimals (`"1.45"` accepts 1.449999).
    A `%` on exactly one side also tries the value / 100 (`25%` == 0.25).
    """
    p_value, p_pct = pred
    g_value, g_pct = gold
    candidates = [(p_value, g_value)]
    if p_pct and not g_pct:
        candidates.append((p_value / 100, g_value))
    if g_pct and not p_pct:
        candidates.append((p_value, g_value / 100))
    decimals = decimals_of(gold_text)
    for p, g in candidates:
        if precision is not None:
            if round(float(p), int(precision)) == round(float(g), int(precision)):
                return True
        elif rel_tol is not None:
            if g == 0:
                if p == 0:
                    return True
            elif abs(p - g) <= Fraction(rel_tol) * abs(g):
                return True
        elif p == g:
            return True
        elif decimals is not None and round(p, decimals) == round(g, decimals):
            return True
    return False
