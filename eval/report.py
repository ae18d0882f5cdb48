"""The result of a suite run: a JSON report holding every prediction, a Markdown summary, and the
tables printed to the terminal. The report is a pure function of the prediction records, the
resolved suite and the seed (no clocks, no paths of the output), so an interrupted-and-resumed
run writes byte-for-byte the report of an uninterrupted one.
"""
from __future__ import annotations

import json

from .metrics import N_BOOT, OFFICIAL_OVERALL, summarize

REPORT_FORMAT = "mm-gpg-eval-report/1"


def build_report(suite, *, model: str, seed: int, records: list[dict], failed: dict[str, str],
                 loaded: dict[str, dict], n_boot: int = N_BOOT) -> dict:
    """`records`: prediction records of any benchmarks of `suite`; `failed`: {benchmark: error}
    for sources that could not be loaded; `loaded`: {benchmark: {available, selected, skipped,
    bad_records}} for those that were."""
    by_bench: dict[str, list[dict]] = {}
    for r in records:
        by_bench.setdefault(r["benchmark"], []).append(r)
    benchmarks, accuracies = {}, []
    for b in suite.benchmarks:
        recs = sorted(by_bench.get(b.name, []), key=lambda r: r["index"])
        entry = {"source": b.source, "split": b.split, "verifier": b.verifier, "prompt_style": b.prompt_style,
                 "sampling": b.to_dict()["sampling"], "categories_by": list(b.categories)}
        if b.name in failed:
            entry.update(status="failed", error=failed[b.name])
        else:
            entry.update(status="ok", error=None)
        info = loaded.get(b.name)
        if info is not None:
            entry.update(available=info["available"], selected=info["selected"],
                         skipped_records=info["skipped"], bad_records=info["bad_records"])
            entry["missing"] = max(0, info["selected"] - len(recs))
        if b.name not in failed or recs:
            entry.update(summarize(recs, categories=b.categories, k=b.sampling.n, n_boot=n_boot, seed=seed,
                                   name=b.name))
            if b.source in OFFICIAL_OVERALL:  # the benchmark's own overall (CV-Bench: by source)
                entry["official"] = OFFICIAL_OVERALL[b.source](recs)
            if recs and entry["accuracy"] is not None and b.name not in failed:
                accuracies.append(entry["accuracy"])
        entry["predictions"] = recs
        benchmarks[b.name] = entry
    summary = {"benchmarks": len(accuracies), "failed": sorted(failed),
               "samples": sum(len(v["predictions"]) for v in benchmarks.values()),
               "macro_accuracy": round(sum(accuracies) / len(accuracies), 6) if accuracies else None}
    return {"format": REPORT_FORMAT, "suite": suite.name, "description": suite.description, "model": model,
            "seed": seed, "bootstrap": n_boot, "summary": summary, "config": suite.to_dict()["benchmarks"],
            "benchmarks": benchmarks}


# ---------------------------------------------------------------------------------------------
# Text renderings
# ---------------------------------------------------------------------------------------------

def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def ci_text(ci) -> str:
    return "-" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _sampling_text(s: dict) -> str:
    if s["greedy"]:
        return f"greedy, max {s['max_new_tokens']} new tokens"
    return (f"n={s['n']} sampled at T={s['temperature']:g} (top_p {s['top_p']:g}, top_k {s['top_k']}), "
            f"max {s['max_new_tokens']} new tokens")


def _verifier_text(v: dict) -> str:
    name = v.get("name") or v.get("fn")
    return f"{name} ({v['mode']})" if v.get("mode") else str(name)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(r, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    ks = {e.get("k", 1) for e in report["benchmarks"].values()}
    with_pass = any(k and k > 1 for k in ks)
    header = ["benchmark", "n", "skipped", "accuracy", "95% CI"] + (["pass@k", "pass@k CI"] if with_pass else []) + \
             ["parse fail", "timeouts", "errors", "format"]
    rows = []
    for name, e in report["benchmarks"].items():
        # records the source left out as malformed: a benchmark that silently lost most of its
        # records must not read like a small one
        skipped = str(e["skipped_records"]) if e.get("skipped_records") is not None else "-"
        if e["status"] == "failed" and not e["predictions"]:
            rows.append([name, "-", skipped, "FAILED", "-"] + (["-", "-"] if with_pass else []) + ["-", "-", "-", "-"])
            continue
        row = [name, str(e["n"]), skipped, pct(e["accuracy"]), ci_text(e["ci95"])]
        if with_pass:
            k = e.get("k", 1)
            row += [f"{pct(e.get('pass_at_k'))} (k={k})" if k > 1 else "-", ci_text(e.get("pass_at_k_ci95"))]
        row += [str(e["parse_failures"]), str(e["timeouts"]), str(e["errors"] + e["verifier_errors"]),
                pct(e["format_rate"])]
        rows.append(row)
    macro = report["summary"]["macro_accuracy"]
    total_skipped = sum(e.get("skipped_records") or 0 for e in report["benchmarks"].values())
    rows.append(["macro average", str(report["summary"]["samples"]), str(total_skipped), pct(macro), ""] +
                (["", ""] if with_pass else []) + ["", "", "", ""])
    return header, rows


def category_rows(entry: dict, key: str) -> tuple[list[str], list[list[str]]]:
    k = entry.get("k", 1)
    header = [key, "n", "accuracy", "95% CI"] + (["pass@k", "pass@k CI"] if k > 1 else [])
    rows = []
    for value, s in entry["categories"][key].items():
        row = [value, str(s["n"]), pct(s["accuracy"]), ci_text(s["ci95"])]
        if k > 1:
            row += [pct(s.get("pass_at_k")), ci_text(s.get("pass_at_k_ci95"))]
        rows.append(row)
    return header, rows


def _benchmark_lines(name: str, e: dict, markdown: bool) -> list[str]:
    lines = []
    title = f"## {name}" if markdown else f"{name}"
    lines.append(title)
    desc = (f"source {e['source']}" + (f" (split {e['split']})" if e.get("split") else "") +
            f" · verifier {_verifier_text(e['verifier'])} · prompt {e['prompt_style']} · "
            f"{_sampling_text(e['sampling'])}")
    lines.append(desc if not markdown else desc + "  ")
    if e["status"] == "failed":
        lines.append(f"FAILED: {e['error']}")
        return lines
    notes = []
    if e.get("skipped_records"):
        notes.append(f"{e['skipped_records']} malformed source record(s) skipped")
    if e.get("missing"):
        notes.append(f"{e['missing']} selected sample(s) without a prediction")
    if e["errors"]:
        notes.append(f"{e['errors']} sample(s) failed before scoring (scored 0)")
    if e["verifier_errors"]:
        notes.append(f"{e['verifier_errors']} verifier error(s) (scored 0)")
    if e["truncated"]:
        notes.append(f"{e['truncated']} response(s) cut at max_new_tokens")
    head = (f"accuracy {pct(e['accuracy'])} {ci_text(e['ci95'])} over {e['n']} samples"
            + (f" (mean@{e['k']}; pass@{e['k']} {pct(e.get('pass_at_k'))} {ci_text(e.get('pass_at_k_ci95'))})"
               if e.get("k", 1) > 1 else "")
            + f"; parse failures {e['parse_failures']}, timeouts {e['timeouts']}")
    lines.append(head + ("  " if markdown else ""))
    for note in notes:
        lines.append(("- " if markdown else "  note: ") + note)
    if e.get("official"):
        o = e["official"]
        parts = [f"overall {pct(o['overall'])} (2D {pct(o.get('accuracy_2d'))}, 3D {pct(o.get('accuracy_3d'))})",
                 f"all questions {pct(o.get('all_questions'))}"]
        parts += [f"{task} {pct(v)}" for task, v in o.get("per_task", {}).items()]
        lines.append(("- " if markdown else "  ") + "official scores: " + ", ".join(parts))
    for key in e.get("categories", {}):
        if not e["categories"][key]:
            continue
        header, rows = category_rows(e, key)
        lines.append("")
        if markdown:
            lines.append(f"### by {key}")
            lines.append("")
        lines.extend(("" if markdown else "  ") + line for line in _table(header, rows, markdown))
    return lines


def render(report: dict, markdown: bool) -> str:
    lines = []
    if markdown:
        lines.append(f"# Eval report: suite `{report['suite']}`")
        lines.append("")
        lines.append(f"Model `{report['model']}` · seed {report['seed']} · accuracy in % with percentile-"
                     f"bootstrap 95 % intervals over samples ({report['bootstrap']} resamples) · official "
                     f"scoring rules except where `verifier` says otherwise; unparseable answers score 0 "
                     f"and count as parse failures (no random fallback).")
        lines.append("")
    else:
        lines.append(f"suite {report['suite']} · model {report['model']} · seed {report['seed']}")
        lines.append("")
    header, rows = summary_rows(report)
    lines.extend(_table(header, rows, markdown))
    failed = report["summary"]["failed"]
    if failed:  # right under the table: which benchmark failed and why, the first reason included
        lines.append("")
        for name in failed:
            lines.append(("- " if markdown else "") + f"FAILED {name}: {report['benchmarks'][name]['error']}")
    for name, e in report["benchmarks"].items():
        lines.append("")
        lines.extend(_benchmark_lines(name, e, markdown))
    return "\n".join(lines) + "\n"


def to_markdown(report: dict) -> str:
    return render(report, markdown=True)


def to_text(report: dict) -> str:
    return render(report, markdown=False)
