"""The eval output in the layout lmms-eval users know, written beside `report.json`/`report.md`:

- `results.json`: `results` (per task: `alias`, `<metric>,none` and `<metric>_stderr,none`, the
  stderr from the bootstrap interval), `configs` (per task: its source, split, verifier, prompt
  style, sampling), `n-samples` (`original`: the benchmark's size, `effective`: what was scored),
  `config` (the run: model, seed, suite, limit) and the date;
- `samples_<benchmark>.jsonl`: one line per sample: `doc_id`, `doc` (question, choices,
  categories), `target` (the gold), `resps` (the raw responses), `filtered_resps` (the answers
  the verifier extracted), the sample's metrics (`accuracy`, `parse_failures`, ...).

Both are built from the report alone (which `mm-gpg eval` builds from `predictions.jsonl`), so
they always agree with it."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from data_prep.files import write_json_atomic, write_text_atomic

METRICS = ("accuracy", "pass_at_k", "format_rate")
"""Per-task metrics copied to results.json (with a stderr where the report has an interval)."""


def _stderr(ci) -> float | None:
    """A 95 % bootstrap interval's half-width over 1.96: the standard error it implies."""
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return round((ci[1] - ci[0]) / (2 * 1.96), 6)


def results_json(report: dict) -> dict:
    results, configs, n_samples = {}, {}, {}
    for name, entry in report["benchmarks"].items():
        task = {"alias": name}
        for metric in METRICS:
            if entry.get(metric) is not None:
                task[f"{metric},none"] = entry[metric]
                ci = entry.get("ci95" if metric == "accuracy" else f"{metric}_ci95")
                if ci is not None:
                    task[f"{metric}_stderr,none"] = _stderr(ci)
        for count in ("parse_failures", "truncated", "errors"):
            if entry.get(count) is not None:
                task[f"{count},none"] = entry[count]
        results[name] = task
        configs[name] = {"task": name, **{k: entry.get(k) for k in ("source", "split", "verifier", "prompt_style",
                                                                     "sampling", "categories_by")},
                         "status": entry.get("status"), "error": entry.get("error")}
        n_samples[name] = {"original": entry.get("available", len(entry["predictions"])),
                           "effective": len(entry["predictions"])}
    return {"results": results, "configs": configs, "n-samples": n_samples,
            "config": {"model": report["model"], "seed": report["seed"], "suite": report["suite"],
                       "bootstrap_iters": report.get("bootstrap"), "summary": report["summary"]},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def sample_line(record: dict) -> dict:
    verdicts = record.get("verdicts") or []
    return {"doc_id": record["index"], "id": record.get("id"),
            "doc": {"question": record.get("question"), "choices": record.get("choices"),
                    "answer_type": record.get("answer_type"), "categories": record.get("categories")},
            "target": record.get("gold"), "resps": [list(record.get("responses") or [])],
            "filtered_resps": [v.get("prediction", v.get("predicted", v.get("extraction"))) for v in verdicts],
            "finish_reasons": record.get("finish_reasons"), "scores": record.get("scores"),
            "accuracy": record.get("score"), "pass": record.get("best"),
            "parse_failures": record.get("parse_failures"), "error": record.get("error")}


def write_lmms_layout(report: dict, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    written = [out / "results.json"]
    write_json_atomic(written[0], results_json(report))
    for name, entry in report["benchmarks"].items():
        path = out / f"samples_{name}.jsonl"
        write_text_atomic(path, "".join(json.dumps(sample_line(r), ensure_ascii=False) + "\n"
                                        for r in entry["predictions"]))
        written.append(path)
    return written
