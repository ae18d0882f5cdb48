"""The evaluators the trainer calls during training: `evaluator(engine, step) -> metrics`.

- `HeldoutEvaluator`: held-out accuracy on a fixed set of problems, scored by the training reward's
  verifiers (`heldout/accuracy`, per task). Greedy by default. With `temperature > 0` it samples
  `samples` answers per problem from the policy's own distribution (same seed at every
  evaluation, so evaluations compare) and reports their mean accuracy (mean@k) and pass@k: the
  quantity RL optimises, which greedy decoding hides when training sharpens a distribution whose
  mode was already right.
- `SuiteEvaluator`: an eval suite (eval.suite) scored by each benchmark's own rule
  (`suite/accuracy`, per benchmark), through the same code as `mm-gpg eval` (eval.core).
- `chain_evaluators`: several as one.

Both answer on every rank (each its slice) and sum their counts over ranks, so every rank returns
the same metrics.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mm_gpg.distributed import Dist
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import RolloutEngine, SamplingParams

from .suite import Suite, apply_run_options, load_suite


class HeldoutEvaluator:
    """`evaluator(engine, step) -> {"heldout/accuracy": ..., "heldout/<task>/accuracy": ...}`.

    The prompts are encoded once; each rank answers its slice and the counts are summed."""

    def __init__(self, samples: list, processor, scorer, *, prompt_style: str, min_pixels: int,
                 max_pixels: int, max_new_tokens: int, dist: Dist, system_prompt: str | None = None,
                 prefix: str = "heldout", temperature: float = 0.0, samples_per_problem: int = 1,
                 seed: int = 0, progress: bool = False):
        mine = samples[dist.rank::dist.world_size]
        self.prompts = encode_prompts(processor, mine, prompt_style, min_pixels, max_pixels, system_prompt)
        self.tasks = sorted({s.task for s in samples})
        self.scorer, self.dist, self.prefix = scorer, dist, prefix
        greedy = temperature <= 0
        self.n = 1 if greedy else samples_per_problem
        self.sampling = SamplingParams(greedy=greedy, temperature=temperature if not greedy else 1.0,
                                       max_new_tokens=max_new_tokens, seed=seed + dist.rank)
        self.n_total = len(samples)
        self.progress = progress and dist.is_main
        """A bar (terminal only, mm_gpg.progress): the problems answered, their rate and the time."""
        self.answers: list = []
        """The last evaluation's answers on this rank: (prompt, completions, reward results) per
        problem, in this rank's order (problems rank, rank + world, ...); the trainer saves them."""

    def __call__(self, engine: RolloutEngine, step: int) -> dict:
        from mm_gpg.progress import progress_bar
        # One generate call (its seed decides the samples, so it is not split for the bar's sake):
        # the bar moves once, with the rate and the time taken.
        bar = progress_bar(len(self.prompts), f"held-out (step {step})", self.progress, unit="problem")
        completions = engine.generate(self.prompts, self.n, self.sampling)
        bar.update(len(self.prompts))
        bar.close()
        results = self.scorer.score([c.text for g in completions for c in g],
                                    [p.sample for p in self.prompts for _ in range(self.n)])
        self.answers = [(p, completions[k], results[k * self.n:(k + 1) * self.n]) for k, p in enumerate(self.prompts)]
        sums = defaultdict(float)
        for k, prompt in enumerate(self.prompts):
            mine = results[k * self.n:(k + 1) * self.n]
            accs = [r.components.get("accuracy") or 0.0 for r in mine]
            fmts = [next((v for n, v in r.components.items() if n.startswith("format") and v is not None), 0.0)
                    for r in mine]
            for key in ("all", prompt.sample.task):
                sums[f"{key}/n"] += 1
                sums[f"{key}/correct"] += sum(accs) / self.n
            sums["all/format"] += sum(fmts) / self.n
            sums["all/pass"] += float(max(accs) > 0)
        keys = ["all/n", "all/correct", "all/format", "all/pass"] + [f"{t}/{k}" for t in self.tasks
                                                                   for k in ("n", "correct")]
        totals = dict(zip(keys, self.dist.sum([sums[k] for k in keys])))
        n = max(1.0, totals["all/n"])
        metrics = {f"{self.prefix}/accuracy": totals["all/correct"] / n,
                   f"{self.prefix}/format_rate": totals["all/format"] / n,
                   f"{self.prefix}/n": totals["all/n"]}
        if self.n > 1:
            metrics[f"{self.prefix}/pass@{self.n}"] = totals["all/pass"] / n
        for t in self.tasks:
            metrics[f"{self.prefix}/{t}/accuracy"] = totals[f"{t}/correct"] / max(1.0, totals[f"{t}/n"])
        return metrics

    @property
    def description(self) -> str:
        if self.sampling.greedy:
            return "greedy"
        return f"mean of {self.n} samples at temperature {self.sampling.temperature:g}"


class SuiteEvaluator:
    """`evaluator(engine, step) -> {"suite/accuracy": ..., "suite/<benchmark>/accuracy": ...}`.

    The trainer's periodic evaluation on a suite, with the same call signature as
    `HeldoutEvaluator`. Sources are opened once; prompts are built batch by batch at
    each call (memory bounded by one batch, whatever the image sizes); each rank answers its slice
    and the sums are reduced over ranks. A benchmark whose source cannot be
    loaded is logged once and left out; a sample that fails counts as wrong (and in `errors`).
    `suite/accuracy` is the mean of the benchmark accuracies. With `output_dir` (one process
    only) each call also writes `step_<N>.json` with every prediction. Close it (or use it as a
    context manager) to stop its scoring workers.
    """

    def __init__(self, suite: Suite | str, processor, *, dist, seed: int = 0, limit: int | None = None,
                 data_root: str | None = None, overrides: list[str] = (), max_new_tokens: int | None = None,
                 reward_timeout_s: float = 5.0, reward_workers: int = 2, output_dir: str | None = None,
                 prefix: str = "suite", log=print, progress: bool = False):
        from . import core
        self.progress = progress and dist.is_main
        """A bar over this rank's batches at each call (terminal only; mm_gpg.progress)."""
        if not isinstance(suite, Suite):
            suite = load_suite(suite, overrides, data_root=data_root)
        apply_run_options(suite, limit=limit, max_new_tokens=max_new_tokens)
        self.suite, self.dist, self.seed, self.prefix = suite, dist, seed, prefix
        self.output_dir = output_dir if dist.world_size == 1 else None
        self.scorers = core.Scorers(timeout_s=reward_timeout_s, num_workers=reward_workers)
        self.processor = processor
        self.parts = []  # (benchmark, its source, the indices this rank answers)
        self.failed: dict[str, str] = {}
        for b in suite.benchmarks:
            try:
                selected = core.load_benchmark(b)
            except Exception as exc:  # a missing source must not stop training
                self.failed[b.name] = core.error_text(exc)
                if dist.is_main:
                    log(f"suite {suite.name}: benchmark {b.name} left out: {self.failed[b.name]}")
                continue
            self.parts.append((b, selected.source, selected.indices[dist.rank::dist.world_size]))

    def __call__(self, engine, step: int) -> dict:
        from . import core
        from mm_gpg.progress import progress_bar
        keys, values, records = [], [], []
        bar = progress_bar(sum(len(mine) for _, _, mine in self.parts), f"suite {self.suite.name} (step {step})",
                           self.progress, unit="sample")
        for b, source, mine in self.parts:
            batch_records = []
            for start in range(0, len(mine), b.batch_size):
                # prompts are built per call, batch by batch: memory stays bounded by one batch
                items = core.prepare(source, mine[start:start + b.batch_size], b, self.processor)
                ready = [it for it in items if it.error is None]
                seed = core.batch_seed(self.seed, b.name, step, mine[start])
                scored = dict(zip([it.index for it in ready],
                                  core.run_batch(engine, self.scorers.get(b.verifier), ready, b, seed)))
                batch_records += [scored.get(it.index) or core.error_record(b, it.index, it.sample, it.error)
                                  for it in items]
                bar.update(len(items))
            sums = {"n": 0.0, "score": 0.0, "parse_failures": 0.0, "errors": 0.0, "responses": 0.0}
            for rec in batch_records:
                records.append(rec)
                sums["n"] += 1
                sums["score"] += rec["score"]
                sums["parse_failures"] += rec["parse_failures"]
                sums["responses"] += max(1, len(rec["responses"]))
                sums["errors"] += rec["error"] is not None
            for key, value in sums.items():
                keys.append((b.name, key))
                values.append(value)
        bar.close()
        totals = dict(zip(keys, self.dist.sum(values))) if values else {}
        metrics, accuracies = {}, []
        for b, _, _ in self.parts:
            n = totals[(b.name, "n")]
            if not n:
                continue
            acc = totals[(b.name, "score")] / n
            accuracies.append(acc)
            metrics[f"{self.prefix}/{b.name}/accuracy"] = acc
            metrics[f"{self.prefix}/{b.name}/parse_failure_rate"] = (
                totals[(b.name, "parse_failures")] / max(1.0, totals[(b.name, "responses")]))
            metrics[f"{self.prefix}/{b.name}/errors"] = totals[(b.name, "errors")]
            metrics[f"{self.prefix}/{b.name}/n"] = n
        if accuracies:
            metrics[f"{self.prefix}/accuracy"] = sum(accuracies) / len(accuracies)
        if self.output_dir and self.dist.is_main:
            from data_prep.files import write_json_atomic

            from .report import build_report
            report = build_report(self.suite, model=f"training step {step}", seed=self.seed, records=records,
                                  failed=self.failed, loaded={})
            write_json_atomic(Path(self.output_dir) / f"step_{step:06d}.json", report)
        return metrics

    def close(self) -> None:
        self.scorers.close()

    def __enter__(self) -> "SuiteEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chain_evaluators(*evaluators):
    """One `(engine, step) -> dict` evaluator that runs each given one (None ones skipped) and
    merges their metrics, e.g. the held-out set and a suite."""
    active = [e for e in evaluators if e is not None]

    def evaluate(engine, step: int) -> dict:
        metrics = {}
        for evaluator in active:
            metrics.update(evaluator(engine, step))
        return metrics
    return evaluate
