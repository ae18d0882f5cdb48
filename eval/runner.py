"""Run a suite on a model: generate, score, write predictions as they come, then the reports.

Output folder:
- `run.json`: what is being run (model, seed, resolved suite); `--resume` refuses a folder whose
  run differs, so predictions of two different runs never mix.
- `predictions.jsonl`: one record per sample, appended and flushed after every batch. A line torn
  by a kill is dropped on resume. `--resume` skips the samples it already holds; a batch is
  always regenerated whole (same prompts, same seed) so that its answers are the ones the
  uninterrupted run would have given.
- `report.json` (every prediction, metrics, intervals) and `report.md`, written at the end
  through a temporary file and a rename, built from `predictions.jsonl` alone.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from mm_gpg.progress import dataset_bars

from . import core
from .metrics import N_BOOT
from data_prep.files import write_json_atomic, write_text_atomic

from .report import build_report, to_markdown, to_text

PREDICTIONS, REPORT_JSON, REPORT_MD, MANIFEST = "predictions.jsonl", "report.json", "report.md", "run.json"
MANIFEST_FORMAT = "mm-gpg-eval-run/1"
STALL_ENV = "MM_GPG_EVAL_STALL_AFTER"
"""Testing aid: after this many batches written, the run stops making progress (sleeps), so a
test can kill it at a known point."""


def read_predictions(path: Path) -> tuple[list[dict], int]:
    """The complete records of a predictions file, and how many torn/garbled lines were dropped
    (the file is then rewritten without them, so appending starts on a fresh line)."""
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and "benchmark" in rec and "index" in rec:
            records.append(rec)
        else:
            bad += 1
    if bad or (text and not text.endswith("\n")):
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records, bad


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{prefix}{i}.")
    return f"{prefix.rstrip('.') or 'run'}: {a!r} then, now {b!r}"


class SuiteRun:
    def __init__(self, suite, *, model: str, output_dir: str | os.PathLike, seed: int = 0, resume: bool = False,
                 overwrite: bool = False, engine: str = "hf", dtype: str = "auto", device: str = "auto",
                 workers: int = 2, timeout_s: float = 5.0, n_boot: int = N_BOOT, cache_dir: str | None = None,
                 quiet: bool = False, engine_options: dict | None = None, progress: bool = True):
        self.suite, self.model, self.seed = suite, model, seed
        self.out = Path(output_dir)
        self.resume, self.overwrite = resume, overwrite
        self.engine_name, self.dtype, self.device = engine, dtype, device
        self.engine_options = dict(engine_options or {})
        self.workers, self.timeout_s, self.n_boot, self.cache_dir = workers, timeout_s, n_boot, cache_dir
        self.quiet = quiet
        self.progress = progress and not quiet
        """A bar per benchmark (terminal only, mm_gpg.progress); without one, a log line per batch."""
        self.policy = self.engine = None
        self.batches_written = 0
        stall = os.environ.get(STALL_ENV)
        self.stall_after = int(stall) if stall else None

    def log(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    # -- output folder ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format": MANIFEST_FORMAT, "model": self.model, "seed": self.seed, "suite": self.suite.to_dict()}

    def _prepare_output(self) -> list[dict]:
        preds = self.out / PREDICTIONS
        manifest_path = self.out / MANIFEST
        mine = self.manifest()
        if preds.exists() or manifest_path.exists():
            if self.resume:
                if manifest_path.exists():
                    try:
                        theirs = json.loads(manifest_path.read_text(encoding="utf-8"))
                    except (OSError, json.JSONDecodeError):
                        theirs = None
                    if theirs is not None and theirs != mine:
                        raise ValueError(f"--resume: {self.out} holds a different run "
                                         f"({_first_difference(theirs, mine)}); use another --output "
                                         f"or --overwrite")
            elif self.overwrite:
                for name in (PREDICTIONS, REPORT_JSON, REPORT_MD, MANIFEST):
                    try:
                        (self.out / name).unlink()
                    except FileNotFoundError:
                        pass
            else:
                raise ValueError(f"--output {self.out} already holds an eval run; add --resume to "
                                 f"continue it or --overwrite to start again")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(manifest_path, mine)
        records, dropped = read_predictions(preds)
        if dropped:
            self.log(f"resume: dropped {dropped} incomplete line(s) of {preds}")
        if records:
            self.log(f"resume: {len(records)} sample(s) already scored in {preds}")
        return records

    # -- model --------------------------------------------------------------------------------
    def _ensure_engine(self):
        if self.engine is None:
            from mm_gpg.device import describe, resolve_device, resolve_dtype
            from mm_gpg.policy import load_policy
            from mm_gpg.rollout import build_engine
            started = time.perf_counter()
            device = resolve_device(self.device)
            # The hf engine generates with this model; vLLM loads its own copy on the GPU (in this
            # model's dtype), so the HF one stays on the CPU there.
            self.policy = load_policy(self.model, resolve_dtype(self.dtype, device),
                                      device=device if self.engine_name == "hf" else None)
            if self.engine_name == "hf":
                self.log(describe(device, self.policy.model.dtype, self.policy.model.config._attn_implementation))
            self.engine = build_engine(self.engine_name, policy=self.policy,
                                       max_prompts_per_call=max(b.batch_size for b in self.suite.benchmarks),
                                       **self.engine_options)
            self.log(f"loaded {self.model} in {time.perf_counter() - started:.1f} s")
        return self.engine

    def _stall(self) -> None:
        self.batches_written += 1
        if self.stall_after is not None and self.batches_written >= self.stall_after:
            self.log(f"{STALL_ENV}={self.stall_after}: stalling (testing aid)")
            while True:
                time.sleep(3600)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> tuple[dict, int]:
        """Evaluate every benchmark; returns (report, exit code: 0, or 1 if a benchmark failed)."""
        if self.engine is None and not os.path.isdir(self.model) and not (
                re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", self.model) and not os.path.exists(self.model)):
            raise FileNotFoundError(f"--model: {self.model!r} is not a directory (and not a hub id owner/name)")
        done = {(r["benchmark"], r["index"]) for r in self._prepare_output()}
        failed: dict[str, str] = {}
        loaded: dict[str, dict] = {}
        dataset_bars(self.progress)
        with core.Scorers(timeout_s=self.timeout_s, num_workers=self.workers) as scorers, \
                open(self.out / PREDICTIONS, "a", encoding="utf-8") as sink:
            for b in self.suite.benchmarks:
                started = time.perf_counter()
                try:
                    selected = core.load_benchmark(b, cache_dir=self.cache_dir)
                except Exception as exc:  # a missing or broken source: report it, go on
                    failed[b.name] = core.error_text(exc)
                    if isinstance(exc, core.BenchmarkDataError):  # it read: keep the counts for the report
                        loaded[b.name] = exc.selected.info()
                    self.log(f"[{b.name}] FAILED to load: {failed[b.name]}")
                    continue
                loaded[b.name] = selected.info()
                todo = [i for i in selected.indices if (b.name, i) not in done]
                self.log(f"[{b.name}] {len(selected.indices)} sample(s)"
                         + (f", {len(selected.indices) - len(todo)} already scored" if len(todo) < len(selected.indices) else ""))
                if not todo:
                    continue
                self._run_benchmark(b, selected, done, scorers, sink)
                self.log(f"[{b.name}] done in {time.perf_counter() - started:.1f} s")
        records, _ = read_predictions(self.out / PREDICTIONS)
        names = {b.name for b in self.suite.benchmarks}
        records = [r for r in records if r["benchmark"] in names]
        report = build_report(self.suite, model=self.model, seed=self.seed, records=records, failed=failed,
                              loaded=loaded, n_boot=self.n_boot)
        write_json_atomic(self.out / REPORT_JSON, report)
        write_text_atomic(self.out / REPORT_MD, to_markdown(report))
        from .lmms_layout import write_lmms_layout
        write_lmms_layout(report, self.out)  # results.json, samples_<benchmark>.jsonl (lmms-eval's layout)
        if not self.quiet:
            print(to_text(report), end="")
            print(f"wrote {self.out / REPORT_JSON} and {self.out / REPORT_MD}")
        return report, 1 if failed else 0

    def _run_benchmark(self, b, selected, done: set, scorers, sink) -> None:
        from mm_gpg.progress import drawing, progress_bar
        indices = selected.indices
        n_batches = -(-len(indices) // b.batch_size)
        bar = progress_bar(len(indices), b.name, self.progress, unit="sample",
                           initial=sum((b.name, i) in done for i in indices))
        for k in range(n_batches):
            batch = indices[k * b.batch_size:(k + 1) * b.batch_size]
            missing = [i for i in batch if (b.name, i) not in done]
            if not missing:
                continue
            engine = self._ensure_engine()
            items = core.prepare(selected.source, batch, b, self.policy.processor)
            ready = [it for it in items if it.error is None]
            records = {it.index: core.error_record(b, it.index, it.sample, it.error)
                       for it in items if it.error is not None}
            scorer = scorers.get(b.verifier)
            for it, rec in zip(ready, core.run_batch(engine, scorer, ready, b,
                                                     core.batch_seed(self.seed, b.name, k))):
                records[it.index] = rec
            for i in missing:
                sink.write(json.dumps(records[i], ensure_ascii=False) + "\n")
                done.add((b.name, i))
            sink.flush()
            bar.update(len(missing))
            if not drawing(bar):
                self.log(f"[{b.name}] {min(len(indices), (k + 1) * b.batch_size)}/{len(indices)}")
            self._stall()
        bar.close()


def run_suite(suite, **kwargs) -> tuple[dict, int]:
    return SuiteRun(suite, **kwargs).run()
