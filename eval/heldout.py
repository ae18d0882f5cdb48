"""Held-out accuracy during training: answers on a fixed set, scored by the verifiers.

Greedy by default. With `temperature > 0` it samples `samples` answers per problem from the
policy's own distribution (same seed at every evaluation, so evaluations compare) and reports
their mean accuracy (mean@k) and pass@k: the quantity RL optimises, which greedy decoding hides
when training sharpens a distribution whose mode was already right."""
from __future__ import annotations

from collections import defaultdict

from mm_gpg.distributed import Dist
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import RolloutEngine, SamplingParams


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
