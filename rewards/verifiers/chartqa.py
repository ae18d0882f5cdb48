"""`relaxed`: ChartQA relaxed accuracy, the best over the gold labels.

`official` is pix2struct's `relaxed_correctness` (the code the ChartQA numbers come from),
statement for statement: both strings go through Python's `float()` (a trailing `%` divides by
100); when the prediction is a number and the gold is a *non-zero* number, correct iff
`|pred - gold| / |gold| <= 0.05`; otherwise (gold 0, or either side not a number) correct iff
`pred.lower() == gold.lower()`. `float()` is safe (it never runs code) and its quirks are kept:
it accepts surrounding whitespace, `1_000`, `inf` and `nan`, and rejects `1,000` and `$5`. The
prediction is the response as written (`extract.official_text`), so text answers are compared
lower-cased but not stripped: `"Yes\\n"` is not `"yes"`, while `" 12"` is the number 12.

`lenient` reads numbers our way first (thousands separators, units, currency, `%`, number
words, one number stated in a sentence), then applies the same 5 % / exact-match rule with
normalised text.
Gold labels: `meta["labels"]` (ChartQA's `label` list), else `answer` (a list or one string).
"""
from __future__ import annotations

from data_prep.schema import Sample

from ..extract import extract_answer, official_text
from ..registry import register_verifier
from ..textnorm import parse_number, single_number
from ._common import result, unparsed
from .numeric import normalize_text

MAX_RELATIVE_CHANGE = 0.05


def _official_float(text: str):
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_official(prediction: str, target: str) -> bool:
    p, t = _official_float(prediction), _official_float(target)
    if p is not None and t:
        return abs(p - t) / abs(t) <= MAX_RELATIVE_CHANGE
    return prediction.lower() == target.lower()


def _lenient_number(text: str, whole_only: bool):
    if whole_only:
        parsed = parse_number(text)
    else:
        parsed, _ = single_number(text)
    if parsed is None:
        return None
    value, pct = parsed
    return value / 100 if pct else value


def relaxed_lenient(prediction: str, target: str) -> bool:
    t = _lenient_number(target, whole_only=True)
    p = _lenient_number(prediction, whole_only=False) if t is not None else None
    if p is not None and t:
        return abs(p - t) <= abs(t) * MAX_RELATIVE_CHANGE
    if p is not None and t is not None:  # gold 0
        return p == t
    return normalize_text(prediction) == normalize_text(target)


def gold_labels(sample: Sample) -> list[str]:
    labels = sample.meta.get("labels")
    if labels is None:
        labels = sample.answer if isinstance(sample.answer, (list, tuple)) else [sample.answer]
    if isinstance(labels, str):
        labels = [labels]
    labels = [str(x) for x in labels if x is not None]
    if not labels:
        raise ValueError(f"relaxed: sample {sample.id!r}: no gold labels (meta['labels'] or answer)")
    return labels


@register_verifier("relaxed")
def relaxed(response: str, sample: Sample, mode: str = "lenient"):
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("relaxed", ex, ex.rule)
    if ex.ambiguous:
        return result("relaxed", 0.0, ex, reason="several different answers")
    if mode == "official":
        ok = max(relaxed_official(official_text(response, ex), label) for label in gold_labels(sample))
    else:
        ok = max(relaxed_lenient(ex.text, label) for label in gold_labels(sample))
    return result("relaxed", ok, ex, mode=mode)
