"""`mm-gpg eval score --benchmark NAME --predictions preds.jsonl --output scored.jsonl`.

Scores another system's predictions with our official-mode rules. Each input line is a
`response` plus the benchmark record's own fields (as the hub dataset has them); each output line
is the input plus `score` (0..1), `components`, `verifier`, `extraction`, `parse_failure`,
`timeout` (and `error` when the verifier raised); an input field of the same name is kept and the
score field goes to `scoring_<name>` (MathVista records have their own `extraction`); both rules
are `mm-gpg score`'s (`rewards.cli.scored_record`). A summary with a bootstrap interval, broken
down by the benchmark's categories where the record carries them, is printed.

The scoring itself is `mm-gpg score` (`rewards.cli`, which maps records with `rewards.records`):
- VQAv2, ChartQA, MathVista, MMMU, ScienceQA records go to it as they are, with the benchmark's
  verifier (`vqa`, `relaxed`, `mathvista`, `mmmu`, `scienceqa`).
- Geometry3K, MathVerse, GeoQA, SuperCLEVR and CLEVR-count records are first read by their
  `data_prep` adapter (the same code that reads them for a suite run) and given our generic
  fields (`answer`, `answer_type`, `choices`, `task`), which route them to the same verifier a
  suite run uses (`math`, `multiple_choice`, `numeric`); the output lines carry the original
  record, not those fields.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from .metrics import N_BOOT, summarize
from data_prep.files import write_text_atomic

from .report import _table, category_rows, ci_text, pct

RECORD_BENCHMARKS = {"vqav2": "vqa", "chartqa": "relaxed", "mathvista": "mathvista", "mmmu": "mmmu",
                     "scienceqa": "scienceqa"}
ADAPTER_BENCHMARKS = ("geometry3k", "mathverse", "geoqa", "superclevr", "clevr_count")
BENCHMARKS = tuple(RECORD_BENCHMARKS) + ADAPTER_BENCHMARKS + ("generic",)
_META_KEYS = ("precision", "unit", "answers", "labels", "rel_tol")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm-gpg eval score", description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS,
                   help="whose rule and record schema ('generic': our own field names, routed per line)")
    p.add_argument("--predictions", required=True, help="input JSONL: response + the benchmark record's fields")
    p.add_argument("--output", required=True, help="output JSONL (written atomically)")
    p.add_argument("--mode", choices=("official", "lenient"), default="official",
                   help="the verifiers' mode (default: official)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per verifier call")
    p.add_argument("--workers", type=int, default=2, help="scoring processes (0: in this process, no time limit)")
    p.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                   help="a malformed line (invalid UTF-8 or JSON, too deeply nested, a lone surrogate, a bad "
                        "record): stop with an error naming it (default), or skip it with a warning")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, help="bootstrap resamples for the interval")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p


def _adapter_sample(benchmark: str, record: dict, line_no: int, split: str | None):
    """The Sample the benchmark's adapter makes of a raw record (images not read)."""
    from data_prep.adapters.base import Ctx
    from data_prep.registry import get_source
    defn = get_source(benchmark).source_def
    options = dict(defn.options)
    if defn.check_options is not None:
        options = defn.check_options(options)
    ctx = Ctx(source=benchmark, index=line_no - 1, split=split or defn.split, image_dir=None,
              check_images=False, images_loaded=False, options=options)
    return defn.convert(record, ctx)


def _suite_entry(benchmark: str):
    """The benchmark's entry in the cross_modal suite (its split and categories), or None."""
    from .suite import load_suite
    try:
        suite = load_suite("cross_modal")
    except Exception:
        return None
    return next((b for b in suite.benchmarks if b.source == benchmark), None)


def _generic_fields(sample) -> dict:
    from .core import jsonable
    meta = {k: jsonable(sample.meta[k]) for k in _META_KEYS if sample.meta.get(k) is not None}
    return {"answer": jsonable(sample.answer), "answer_type": sample.answer_type,
            "choices": jsonable(sample.choices), "task": sample.task, "meta": meta}


def _restore(original: dict, given: dict, row: dict) -> dict:
    """The caller's own record plus what `mm-gpg score` added to the line it was given (`given`:
    the record itself, or for an adapter benchmark the record with our generic fields). Where a
    score field goes when the record already uses its name is `mm-gpg score`'s rule."""
    return {**original, **{k: v for k, v in row.items() if k not in given or k == "score"}}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rewards import cli as rewards_cli
    from data_prep.schema import BadRecord
    from rewards.records import RecordError, detect_benchmark, record_to_sample

    from .core import categories_of, error_text
    if not os.path.isfile(args.predictions):
        print(f"mm-gpg eval score: --predictions: no such file {args.predictions!r}", file=sys.stderr)
        return 2
    skip = args.on_bad_line == "skip"
    skipped: list = []
    try:
        lines = list(rewards_cli.read_jsonl(args.predictions, args.on_bad_line, skipped))
    except (RecordError, OSError, UnicodeDecodeError) as exc:
        print(f"mm-gpg eval score: {args.predictions}: {exc}", file=sys.stderr)
        return 1
    if skip and (args.benchmark in RECORD_BENCHMARKS or args.benchmark == "generic"):
        # Lines `mm-gpg score` would refuse are left out here, so that its output lines up with ours.
        kept = []
        for line_no, record in lines:
            try:
                record_to_sample(record, line_no, RECORD_BENCHMARKS.get(args.benchmark, "auto"))
            except RecordError as exc:
                skipped.append(exc)
                continue
            kept.append((line_no, record))
        lines = kept
    entry = _suite_entry(args.benchmark)
    keys = list(entry.categories) if entry is not None else []
    categories: list[dict] = []
    rewritten: list[dict] | None = None
    if args.benchmark in ADAPTER_BENCHMARKS:
        rewritten = []
    kept_lines = []
    for line_no, record in lines:
        sample = None
        problem = None
        if args.benchmark != "generic":
            try:
                sample = _adapter_sample(args.benchmark, record, line_no, entry and entry.split)
            except Exception as exc:
                if rewritten is not None:  # this schema is read by the adapter only
                    problem = str(exc) if isinstance(exc, BadRecord) else error_text(exc)
        if rewritten is not None and problem is None:
            temp = None
            if not isinstance(record.get("response"), str):
                problem = "field 'response': expected a string"
            else:
                temp = {**record, **_generic_fields(sample)}
                if detect_benchmark(temp) != "generic":
                    problem = f"the record's fields look like {detect_benchmark(temp)!r}, not {args.benchmark!r}"
        if problem is not None:
            if skip:
                skipped.append(f"line {line_no}: {problem}")
                continue
            print(f"mm-gpg eval score: {args.predictions}: line {line_no}: {problem}", file=sys.stderr)
            return 1
        if rewritten is not None:
            rewritten.append(temp)
        categories.append(categories_of(sample, keys) if sample is not None else {})
        kept_lines.append((line_no, record))
    lines = kept_lines
    for problem in skipped:
        print(f"mm-gpg eval score: warning: {args.predictions}: skipped {problem}", file=sys.stderr)

    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    verifier = RECORD_BENCHMARKS.get(args.benchmark, "auto")
    with tempfile.TemporaryDirectory(prefix=".mm-gpg-eval-score-", dir=out_path.parent) as tmp:
        source = args.predictions
        if rewritten is not None or skipped:  # the lines to score, and only those
            source = os.path.join(tmp, "input.jsonl")
            with open(source, "w", encoding="utf-8") as f:
                for rec in (rewritten if rewritten is not None else [record for _, record in lines]):
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        scored_path = os.path.join(tmp, "scored.jsonl")
        messages = io.StringIO()
        with contextlib.redirect_stderr(messages):  # its summary names our temporary files
            rc = rewards_cli.main(["--verifier", verifier, "--mode", args.mode, "--input", source,
                                   "--output", scored_path, "--timeout", str(args.timeout),
                                   "--workers", str(args.workers)])
        if rc != 0:
            text = messages.getvalue().replace(source, args.predictions).replace("mm-gpg score:",
                                                                                 "mm-gpg eval score:")
            print(text, end="", file=sys.stderr)
            return rc
        with open(scored_path, encoding="utf-8") as f:
            scored = [json.loads(line) for line in f if line.strip()]
        given = rewritten if rewritten is not None else [original for _, original in lines]
        scored = [_restore(original, line, row) for (_, original), line, row in zip(lines, given, scored)]
        write_text_atomic(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored))
    print(summary_text(args.benchmark, args.mode, scored, categories, keys, n_boot=args.bootstrap,
                       seed=args.seed), end="")
    return 0


def summary_text(benchmark: str, mode: str, scored: list[dict], categories: list[dict], keys: list[str], *,
                 n_boot: int, seed: int) -> str:
    records = [{"score": float(r["score"]), "best": float(r["score"]), "responses": [r.get("response", "")],
                "parse_failures": int(bool(r.get("parse_failure"))), "timeouts": int(bool(r.get("timeout"))),
                "verifier_errors": int("error" in r), "truncated": 0, "format": None, "categories": cats,
                "error": None}
               for r, cats in zip(scored, categories)]
    s = summarize(records, categories=keys, k=1, n_boot=n_boot, seed=seed, name=benchmark)
    lines = [f"{benchmark} ({mode} rule): accuracy {pct(s['accuracy'])} {ci_text(s['ci95'])} over {s['n']} "
             f"predictions; parse failures {s['parse_failures']}, timeouts {s['timeouts']}, "
             f"verifier errors {s['verifier_errors']}"]
    for key, values in s["categories"].items():
        if values:
            header, rows = category_rows({"k": 1, "categories": s["categories"]}, key)
            lines.append("")
            lines.extend("  " + line for line in _table(header, rows, markdown=False))
    return "\n".join(lines) + "\n"
