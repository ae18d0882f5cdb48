"""`numeric`, `count`, `exact_match` and `list`: answers that need no symbolic algebra."""
from __future__ import annotations

import re
from functools import lru_cache

from data_prep.schema import Sample

from ..extract import extract_answer
from ..registry import register_verifier
from ..textnorm import normalize_answer_text, parse_number, single_number
from ._common import numbers_equal, result, unparsed


def _gold_number(sample: Sample, name: str):
    gold = parse_number(str(sample.answer))
    if gold is None:
        raise ValueError(f"{name}: sample {sample.id!r}: gold answer {sample.answer!r} is not a number")
    return gold


def _precision(sample: Sample):
    p = sample.meta.get("precision")
    if p is None or p == "":
        return None
    return int(float(p))


@register_verifier("numeric")
def numeric(response: str, sample: Sample):
    """Integers exactly; floats to `meta["precision"]` decimals (MathVista's `round`), to
    `meta["rel_tol"]`, or to the decimals the gold is written with; `%`, thousands separators,
    units and number words understood. Several different numbers in the answer score 0."""
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("numeric", ex, ex.rule)
    if ex.ambiguous:
        return result("numeric", 0.0, ex, reason="several different answers")
    pred, status = single_number(ex.text)
    if pred is None:
        if status == "multiple":
            return result("numeric", 0.0, ex, shotgun=True, reason="several different numbers")
        return unparsed("numeric", ex, f"no number ({status})")
    gold = _gold_number(sample, "numeric")
    rel_tol = sample.meta.get("rel_tol")
    ok = numbers_equal(pred, gold, str(sample.answer), precision=_precision(sample),
                       rel_tol=float(rel_tol) if rel_tol is not None else None)
    return result("numeric", ok, ex)


@register_verifier("count")
def count(response: str, sample: Sample):
    """Counting: digits or number words (`3`, `three`, `There are three.`), exact integer."""
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("count", ex, ex.rule)
    if ex.ambiguous:
        return result("count", 0.0, ex, reason="several different answers")
    pred, status = single_number(ex.text, words=True)
    if pred is None:
        if status == "multiple":
            return result("count", 0.0, ex, shotgun=True, reason="several different numbers")
        return unparsed("count", ex, f"no count ({status})")
    gold = _gold_number(sample, "count")
    return result("count", pred[0] == gold[0] and not pred[1], ex)


_TRAILING = " \t\n.!?;:,\"'"


@lru_cache(maxsize=8192)
def _normalize_text(text: str) -> str:
    """Lower-case, Unicode- and LaTeX-cleaned, whitespace collapsed, end punctuation and
    surrounding quotes/brackets removed."""
    text = normalize_answer_text(str(text)).lower().strip(_TRAILING)
    while len(text) >= 2 and text[0] + text[-1] in ("()", "[]", "{}", '""', "''"):
        text = text[1:-1].strip(_TRAILING)
    return text


def normalize_text(text) -> str:
    """Lower-case, Unicode- and LaTeX-cleaned, whitespace collapsed, end punctuation and
    surrounding quotes/brackets removed."""
    return _normalize_text(str(text))


def _golds(sample: Sample) -> list:
    gold = sample.answer
    if isinstance(gold, (list, tuple)):
        return list(gold)
    extra = sample.meta.get("answers") or sample.meta.get("labels") or []
    return [gold, *[a for a in extra if a != gold]] if isinstance(extra, list) else [gold]


def text_equal(pred: str, gold) -> bool:
    p, g = normalize_text(pred), normalize_text(str(gold))
    if p == g:
        return True
    pn, gn = parse_number(p), parse_number(g)
    return pn is not None and gn is not None and pn == gn


@register_verifier("exact_match")
def exact_match(response: str, sample: Sample):
    """Normalised text equality with the gold (any of them when there are several)."""
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("exact_match", ex, ex.rule)
    if ex.ambiguous:
        return result("exact_match", 0.0, ex, reason="several different answers")
    ok = any(text_equal(ex.text, g) for g in _golds(sample) if g is not None)
    return result("exact_match", ok, ex)


_SPLIT = re.compile(r"\s*(?:[,;]|\band\b)\s*")


def split_list(text) -> list[str]:
    """`"[1, 2, 3]"`, `"1; 2 and 3"` or a Python list -> its items as strings."""
    if isinstance(text, (list, tuple)):
        return [str(x).strip() for x in text]
    text = normalize_answer_text(str(text)).strip().strip(".")
    if len(text) >= 2 and text[0] + text[-1] in ("[]", "()", "{}"):
        text = text[1:-1]
    # a thousands separator is not a list separator: "1,234" stays one item
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    return [item for item in _SPLIT.split(text) if item.strip()]


@register_verifier("list")
def list_match(response: str, sample: Sample):
    """Lists: the same items (numbers numerically, text normalised), in order unless
    `meta["ordered"]` is False."""
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("list", ex, ex.rule)
    if ex.ambiguous:
        return result("list", 0.0, ex, reason="several different answers")
    pred, gold = split_list(ex.text), split_list(sample.answer)
    if not pred:
        return unparsed("list", ex, "empty list")
    if len(pred) != len(gold):
        return result("list", 0.0, ex)
    if sample.meta.get("ordered", True):
        ok = all(text_equal(p, g) for p, g in zip(pred, gold))
    else:
        remaining = list(gold)
        ok = True
        for p in pred:
            hit = next((i for i, g in enumerate(remaining) if text_equal(p, g)), None)
            if hit is None:
                ok = False
                break
            remaining.pop(hit)
    return result("list", ok, ex)
