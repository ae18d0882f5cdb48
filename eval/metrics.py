"""Accuracy, mean@k / pass@k and percentile-bootstrap 95 % intervals over prediction records.

Per sample with k responses scored s_1..s_k in [0, 1]: mean@k is the mean of the s_j and pass@k
their maximum (for 0/1 scores: "at least one of the k is right"; for VQA's soft scores: the best
of the k). A benchmark's accuracy is the mean over its samples of mean@k (with k = 1: the plain
accuracy). Intervals resample *samples* with replacement (`n_boot` times, seeded from the run
seed and the benchmark/category name, so the same records always give the same interval) and
take the 2.5th and 97.5th percentiles of the resampled means.
"""
from __future__ import annotations

import numpy as np

from .core import stable_int

N_BOOT = 1000
_CHUNK = 250


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(stable_int("bootstrap", *parts))


def _round(x) -> float:
    return round(float(x), 6)


def bootstrap_ci(values, *, n_boot: int = N_BOOT, seed=0, name: str = "") -> list[float] | None:
    """[low, high] percentile-bootstrap 95 % interval of the mean of `values` (None if empty)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    if v.size == 1 or n_boot <= 0:
        return [_round(v.mean()), _round(v.mean())]
    rng = _rng(seed, name)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        stop = min(n_boot, start + _CHUNK)
        means[start:stop] = v[rng.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [_round(lo), _round(hi)]


def diff_ci(a, b, *, paired: bool, n_boot: int = N_BOOT, seed=0, name: str = "") -> list[float] | None:
    """95 % interval of mean(b) - mean(a): paired (resample the same items in both) or not."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired:
        return bootstrap_ci(b - a, n_boot=n_boot, seed=seed, name=name)
    if a.size == 0 or b.size == 0:
        return None
    rng = _rng(seed, name, "unpaired")
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        stop = min(n_boot, start + _CHUNK)
        ma = a[rng.integers(0, a.size, size=(stop - start, a.size))].mean(axis=1)
        mb = b[rng.integers(0, b.size, size=(stop - start, b.size))].mean(axis=1)
        diffs[start:stop] = mb - ma
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return [_round(lo), _round(hi)]


def _stats(records: list[dict], k: int, n_boot: int, seed, name: str) -> dict:
    scores = [r["score"] for r in records]
    out = {"n": len(records),
           "accuracy": _round(np.mean(scores)) if scores else None,
           "ci95": bootstrap_ci(scores, n_boot=n_boot, seed=seed, name=name)}
    if k > 1:
        best = [r["best"] for r in records]
        out["pass_at_k"] = _round(np.mean(best)) if best else None
        out["pass_at_k_ci95"] = bootstrap_ci(best, n_boot=n_boot, seed=seed, name=name + "|pass")
    return out


def category_values(records: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        value = r.get("categories", {}).get(key)
        if value is None:
            continue
        for v in (value if isinstance(value, list) else [value]):
            groups.setdefault(v, []).append(r)
    return dict(sorted(groups.items()))


def summarize(records: list[dict], *, categories: list[str], k: int, n_boot: int = N_BOOT, seed=0,
              name: str = "") -> dict:
    """The metrics of one benchmark's records, overall and per category value."""
    out = {**_stats(records, k, n_boot, seed, name), "k": k}
    responses = sum(max(1, len(r["responses"])) for r in records)
    formats = [f for r in records for f in (r.get("format") or [])]
    out.update(
        responses=responses,
        parse_failures=sum(r["parse_failures"] for r in records),
        timeouts=sum(r["timeouts"] for r in records),
        verifier_errors=sum(r["verifier_errors"] for r in records),
        errors=sum(1 for r in records if r.get("error")),
        truncated=sum(r["truncated"] for r in records),
        format_rate=_round(np.mean(formats)) if formats else None,
    )
    out["categories"] = {
        key: {value: _stats(group, k, n_boot, seed, f"{name}|{key}|{value}")
              for value, group in category_values(records, key).items()}
        for key in categories}
    return out


# ---------------------------------------------------------------------------------------------
# Benchmark-specific overall scores, keyed by source name: what a benchmark's own evaluation
# reports besides the plain accuracy over all its questions.

CV_BENCH_SOURCES_2D = ("ADE20K", "COCO")
CV_BENCH_SOURCES_3D = ("Omni3D",)


def _mean_or_none(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def _rounded(x: float | None) -> float | None:
    return None if x is None else _round(x)


def cv_bench_overall(records: list[dict]) -> dict:
    """CV-Bench's overall score as its release computes it, from records carrying the categories
    `source` and `task` (the cv_bench suite entry breaks down by both).

    2D accuracy = mean of the ADE20K and the COCO accuracies; 3D accuracy = the Omni3D accuracy;
    overall = mean of 2D and 3D (so each source weighs by its role, not by its number of questions).
    `all_questions` is the plain mean over every question, which is the "Total" that
    VisualThinker-R1-Zero's evaluation (and the GPG paper's CV-Bench table) reports. `per_task`
    holds the four task accuracies that table shows (Count, Relation, Depth, Distance).
    A part whose questions are all absent is None, and so is anything computed from it.
    """
    def accuracy_where(key: str, value: str) -> float | None:
        return _mean_or_none([r["score"] for r in records if r.get("categories", {}).get(key) == value])

    per_source = {s: accuracy_where("source", s) for s in CV_BENCH_SOURCES_2D + CV_BENCH_SOURCES_3D}
    tasks = sorted({r["categories"]["task"] for r in records if r.get("categories", {}).get("task")})
    two_d = [per_source[s] for s in CV_BENCH_SOURCES_2D]
    three_d = [per_source[s] for s in CV_BENCH_SOURCES_3D]
    accuracy_2d = None if None in two_d else float(np.mean(two_d))
    accuracy_3d = None if None in three_d else float(np.mean(three_d))
    overall = None if accuracy_2d is None or accuracy_3d is None else (accuracy_2d + accuracy_3d) / 2
    return {"overall": _rounded(overall), "accuracy_2d": _rounded(accuracy_2d), "accuracy_3d": _rounded(accuracy_3d),
            "per_source": {s: _rounded(a) for s, a in per_source.items()},
            "per_task": {t: _rounded(accuracy_where("task", t)) for t in tasks},
            "all_questions": _rounded(_mean_or_none([r["score"] for r in records]))}


OFFICIAL_OVERALL = {"cv_bench": cv_bench_overall}
"""{source name: records -> that benchmark's own overall scores}, added to its report entry as
`official`."""
