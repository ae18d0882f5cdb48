"""`mm-gpg eval compare A.json B.json`: per-benchmark and per-category differences (B - A).

Samples are paired by id where both reports scored the same samples (the usual case: same suite,
two models), and the 95 % interval of the difference is a paired bootstrap over those samples;
where no sample is shared, the two sides are resampled independently. A difference whose
interval excludes 0 is marked `*`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import N_BOOT, category_values, diff_ci
from .report import REPORT_FORMAT, _table, ci_text, pct


def load_report(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such report: {path}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path}: not an eval report (expected format {REPORT_FORMAT!r}; "
                         f"give the report.json a run wrote)")
    return data


def _key(r: dict) -> str:
    return r["id"] if r.get("id") is not None else f"#{r['index']}"


def _side(records: list[dict]) -> dict[str, float]:
    return {_key(r): float(r["score"]) for r in records}


def _compare_groups(a: list[dict], b: list[dict], *, n_boot: int, seed, name: str) -> dict:
    sa, sb = _side(a), _side(b)
    common = sorted(set(sa) & set(sb))
    out = {"n_a": len(sa), "n_b": len(sb), "n_paired": len(common),
           "a": round(float(np.mean(list(sa.values()))), 6) if sa else None,
           "b": round(float(np.mean(list(sb.values()))), 6) if sb else None}
    if common:
        va, vb = [sa[k] for k in common], [sb[k] for k in common]
        out["paired"] = True
        out["delta"] = round(float(np.mean(vb) - np.mean(va)), 6)
        out["ci95"] = diff_ci(va, vb, paired=True, n_boot=n_boot, seed=seed, name=name)
    elif sa and sb:
        out["paired"] = False
        out["delta"] = round(out["b"] - out["a"], 6)
        out["ci95"] = diff_ci(list(sa.values()), list(sb.values()), paired=False, n_boot=n_boot, seed=seed,
                              name=name)
    else:
        out.update(paired=False, delta=None, ci95=None)
    ci = out["ci95"]
    out["significant"] = bool(ci and (ci[0] > 0 or ci[1] < 0))
    return out


def compare_reports(a: dict, b: dict, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    names = list(a["benchmarks"]) + [n for n in b["benchmarks"] if n not in a["benchmarks"]]
    out = {"a": {"model": a.get("model"), "suite": a.get("suite")},
           "b": {"model": b.get("model"), "suite": b.get("suite")}, "benchmarks": {}}
    for name in names:
        ea, eb = a["benchmarks"].get(name), b["benchmarks"].get(name)
        ra = ea["predictions"] if ea else []
        rb = eb["predictions"] if eb else []
        entry = _compare_groups(ra, rb, n_boot=n_boot, seed=seed, name=name)
        keys = []
        for e in (ea, eb):
            for key in (e or {}).get("categories_by", []) or (e or {}).get("categories", {}):
                if key not in keys:
                    keys.append(key)
        entry["categories"] = {}
        for key in keys:
            ga, gb = category_values(ra, key), category_values(rb, key)
            entry["categories"][key] = {
                value: _compare_groups(ga.get(value, []), gb.get(value, []), n_boot=n_boot, seed=seed,
                                       name=f"{name}|{key}|{value}")
                for value in sorted(set(ga) | set(gb))}
        out["benchmarks"][name] = entry
    return out


def _delta_text(e: dict) -> str:
    if e["delta"] is None:
        return "-"
    return f"{100 * e['delta']:+.1f}{' *' if e['significant'] else ''}"


def _row(label: str, e: dict) -> list[str]:
    n = str(e["n_paired"]) + (" paired" if e["paired"] else f" ({e['n_a']}/{e['n_b']})")
    return [label, n, pct(e["a"]), pct(e["b"]), _delta_text(e), ci_text(e["ci95"])]


def render_comparison(cmp: dict, markdown: bool = False) -> str:
    header = ["benchmark / category", "n", "A", "B", "B - A", "95% CI"]
    rows = []
    for name, e in cmp["benchmarks"].items():
        rows.append(_row(name, e))
        for key, values in e["categories"].items():
            for value, ce in values.items():
                rows.append(_row(f"  {key}={value}", ce))
    lines = [f"A: {cmp['a']['model']} (suite {cmp['a']['suite']})",
             f"B: {cmp['b']['model']} (suite {cmp['b']['suite']})", ""]
    lines += _table(header, rows, markdown)
    lines += ["", "accuracy in %; * = the 95 % interval of B - A excludes 0 (paired bootstrap over shared "
                  "samples)"]
    return "\n".join(lines) + "\n"
