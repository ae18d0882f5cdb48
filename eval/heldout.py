"""Held-out accuracy during training: greedy answers on a fixed set, scored by the verifiers."""
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
                 prefix: str = "heldout"):
        mine = samples[dist.rank::dist.world_size]
        self.prompts = encode_prompts(processor, mine, prompt_style, min_pixels, max_pixels, system_prompt)
        self.tasks = sorted({s.task for s in samples})
        self.scorer, self.dist, self.prefix = scorer, dist, prefix
        self.sampling = SamplingParams(greedy=True, max_new_tokens=max_new_tokens)
        self.n_total = len(samples)

    def __call__(self, engine: RolloutEngine, step: int) -> dict:
        completions = engine.generate(self.prompts, 1, self.sampling)
        results = self.scorer.score([g[0].text for g in completions], [p.sample for p in self.prompts])
        sums = defaultdict(float)
        for prompt, result in zip(self.prompts, results):
            acc = result.components.get("accuracy") or 0.0
            fmt = [v for k, v in result.components.items() if k.startswith("format") and v is not None]
            for key in ("all", prompt.sample.task):
                sums[f"{key}/n"] += 1
                sums[f"{key}/correct"] += acc
            sums["all/format"] += fmt[0] if fmt else 0.0
        keys = ["all/n", "all/correct", "all/format"] + [f"{t}/{k}" for t in self.tasks for k in ("n", "correct")]
        totals = dict(zip(keys, self.dist.sum([sums[k] for k in keys])))
        metrics = {f"{self.prefix}/accuracy": totals["all/correct"] / max(1.0, totals["all/n"]),
                   f"{self.prefix}/format_rate": totals["all/format"] / max(1.0, totals["all/n"]),
                   f"{self.prefix}/n": totals["all/n"]}
        for t in self.tasks:
            metrics[f"{self.prefix}/{t}/accuracy"] = totals[f"{t}/correct"] / max(1.0, totals[f"{t}/n"])
        return metrics
