"""The training loop: sample prompts -> rollout -> rewards -> advantages (with GPG resampling)
-> learner step -> weight sync -> metrics -> periodic held-out eval -> final HF checkpoint.

How this departs from GRPO (as GPG does, arXiv 2504.02546; DESIGN.md "GPG, exactly"):
- the advantage is r - mean(group), not divided by the group's std (`scale_rewards: std` is the
  paper's ablation);
- no importance ratio, no clipping, no KL term and no reference model: one on-policy update per
  batch, so there is no old-policy log-prob pass;
- groups whose rewards are all equal carry no signal; when fewer than `min_valid_fraction` of a
  batch's groups are valid, more prompts are drawn (up to `max_extra_draws` times), the batch is
  refilled valid groups first, and the loss is multiplied by alpha = n_groups / n_valid counted
  over the global batch, so that the invalid groups' zero gradients do not shrink the step.
The baselines (`grpo`, `dr_grpo`, `reinforce`) run through the same loop: only their registry
entry (mm_gpg.algorithms.ALGORITHMS) differs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from data_prep.mixture import Mixture, shard
from data_prep.registry import load_source

from .algorithms import (ADVANTAGES, ALGORITHMS, Algorithm, aggregation_normalizer, correction_factor,
                         valid_groups)
from .config import Config
from .distributed import Dist
from .metrics import MetricsLogger
from .policy import Policy
from .prompting import Prompt, encode_prompts
from .rollout import Completion, RolloutEngine, SamplingParams

Evaluator = Callable[[RolloutEngine, int], dict]
"""(engine, step) -> metrics such as {"heldout/accuracy": 0.61}; wired by the CLI."""


@dataclass
class Group:
    prompt: Prompt
    completions: list[Completion]
    rewards: torch.Tensor
    """[G] total rewards."""
    components: dict[str, list[float]]
    """component name -> [G] values (None-valued components left out)."""

    @property
    def valid(self) -> bool:
        return bool(valid_groups(self.rewards[None])[0])


@dataclass
class TrainState:
    step: int = 0
    total_draws: int = 0
    mixture: dict = field(default_factory=dict)


def build_mixture(entries: list[dict], seed: int) -> Mixture:
    sources, weights = {}, {}
    for i, entry in enumerate(entries):
        name = entry.get("name") or f"{entry['source']}#{i}"
        sources[name] = load_source(entry["source"], **entry.get("options", {}))
        weights[name] = float(entry.get("weight", 1.0))
    return Mixture(sources, weights, seed=seed)


def sampling_seed(seed: int, step: int, draw: int, rank: int) -> int:
    """A distinct, reproducible seed for every (step, draw, rank): resumed runs sample the same."""
    return (seed * 1_000_003 + step * 10_007 + draw * 101 + rank) % (2 ** 31)


def rollout_groups(config: Config, policy: Policy, engine: RolloutEngine, scorer, samples: list,
                   seed: int) -> list[Group]:
    """Encode, generate G completions per prompt, and score them."""
    d, r = config.data, config.rollout
    prompts = encode_prompts(policy.processor, samples, d.prompt_style, d.min_pixels, d.max_pixels,
                             d.system_prompt)
    sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                              max_new_tokens=r.max_new_tokens, seed=seed)
    completions = engine.generate(prompts, r.group_size, sampling)
    results = scorer.score([c.text for group in completions for c in group],
                           [p.sample for p in prompts for _ in range(r.group_size)])
    groups = []
    for k, (prompt, group) in enumerate(zip(prompts, completions)):
        mine = results[k * r.group_size:(k + 1) * r.group_size]
        names = sorted({name for res in mine for name in res.components})
        groups.append(Group(prompt, group, torch.tensor([res.score for res in mine], dtype=torch.float32),
                            {n: [res.components.get(n) for res in mine] for n in names}))
    return groups


def assemble_batch(groups: list[Group], local_groups: int) -> list[Group]:
    """Valid groups first (in draw order), filled up to the batch size with invalid ones."""
    valid = [g for g in groups if g.valid]
    invalid = [g for g in groups if not g.valid]
    return (valid + invalid)[:local_groups]


def _mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def step_metrics(sampled: list[Group], dist: Dist) -> dict:
    """Reward statistics over every completion sampled this step (all draws, all ranks)."""
    rewards = torch.cat([g.rewards for g in sampled]).double()
    names = sorted({n for g in sampled for n in g.components})
    sums = [float(rewards.numel()), float(rewards.sum()), float((rewards ** 2).sum())]
    lengths = [len(c.token_ids) for g in sampled for c in g.completions]
    truncated = [c.finish_reason == "length" for g in sampled for c in g.completions]
    sums += [float(sum(lengths)), float(sum(truncated))]
    for n in names:  # every rank has the same component names (same reward specs)
        vals = [v for g in sampled for v in g.components[n] if v is not None]
        sums += [float(sum(vals)), float(len(vals))]
    totals = dist.sum(sums)
    count, total, squares, length_sum, truncated_sum = totals[:5]
    mean = total / count
    metrics = {"reward/mean": mean, "reward/std": max(0.0, squares / count - mean ** 2) ** 0.5,
               "response/length": length_sum / count, "response/truncated_fraction": truncated_sum / count}
    for i, n in enumerate(names):
        s, c = totals[5 + 2 * i], totals[6 + 2 * i]
        metrics[f"reward/{n}"] = s / c if c else float("nan")
    return metrics


class Trainer:
    """Holds the parts of a run; `fit` is the loop. State lives here, passed in, not in globals."""

    def __init__(self, config: Config, policy: Policy, engine: RolloutEngine, learner, scorer,
                 dist: Dist, evaluator: Evaluator | None = None, logger: MetricsLogger | None = None):
        self.config, self.policy, self.engine, self.learner = config, policy, engine, learner
        self.scorer, self.dist, self.evaluator = scorer, dist, evaluator
        self.logger = logger or MetricsLogger(config.output_dir, enabled=dist.is_main)
        self.algorithm: Algorithm = ALGORITHMS.get(config.algorithm.name)
        self.mixture = build_mixture(config.data.train, seed=config.train.seed)
        self.state = TrainState()
        if config.train.prompts_per_step % dist.world_size:
            raise ValueError(f"train.prompts_per_step={config.train.prompts_per_step} does not divide over "
                             f"{dist.world_size} ranks")
        self.local_groups = config.train.prompts_per_step // dist.world_size

    def _draw(self) -> list:
        samples = self.mixture.draw(self.config.train.prompts_per_step)
        return shard(samples, self.dist.rank, self.dist.world_size)

    def collect(self) -> tuple[list[Group], list[Group], dict]:
        """Roll out one global batch, resampling while too few groups are valid (GPG step 3)."""
        cfg, algo = self.config, self.algorithm
        n_global = cfg.train.prompts_per_step
        sampled: list[Group] = []
        draws, first_valid = 0, None
        while True:
            seed = sampling_seed(cfg.train.seed, self.state.step, draws, self.dist.rank)
            sampled += rollout_groups(cfg, self.policy, self.engine, self.scorer, self._draw(), seed)
            draws += 1
            n_valid = self.dist.sum([sum(g.valid for g in sampled)])[0]
            if first_valid is None:
                first_valid = n_valid / n_global
            enough = n_valid >= cfg.algorithm.min_valid_fraction * n_global
            if not algo.resamples or enough or draws > cfg.algorithm.max_extra_draws:
                break
        batch = assemble_batch(sampled, self.local_groups)
        self.state.total_draws += draws
        return batch, sampled, {"groups/valid_fraction_first_draw": first_valid, "groups/draws": draws}

    def update(self, batch: list[Group]) -> dict:
        cfg, algo = self.config, self.algorithm
        n_global = cfg.train.prompts_per_step
        tokens = sum(len(c.token_ids) for g in batch for c in g.completions)
        n_valid, n_tokens = self.dist.sum([sum(g.valid for g in batch), tokens])
        alpha = correction_factor(int(n_valid), n_global) if algo.uses_alpha else 1.0
        aggregation = cfg.algorithm.aggregation or algo.aggregation
        normalizer = aggregation_normalizer(aggregation, int(n_tokens), n_global * cfg.rollout.group_size,
                                            cfg.rollout.max_new_tokens)
        rewards = torch.stack([g.rewards for g in batch])
        advantages = ADVANTAGES.get(algo.advantage)(rewards, scale_rewards=cfg.algorithm.scale_rewards
                                                    or algo.scale_rewards)
        result = self.learner.step(algo, [g.prompt for g in batch], [g.completions for g in batch], advantages,
                                   alpha=alpha, normalizer=normalizer, aggregation=aggregation,
                                   clip_eps=cfg.algorithm.clip_eps)
        entropy = self.dist.sum([result.entropy * tokens])[0] / max(1.0, n_tokens)
        return {"groups/valid_fraction": n_valid / n_global, "alpha": alpha, "loss": result.loss,
                "grad_norm": result.grad_norm, "entropy": entropy, "lr": result.lr,
                "tokens": n_tokens}

    def sync_weights(self) -> None:
        if not self.engine.shares_learner_weights:
            self.engine.load_weights(self.learner.full_state())

    def evaluate(self, step: int) -> dict:
        if self.evaluator is None:
            return {}
        metrics = self.evaluator(self.engine, step)
        self.logger.log(step, metrics)
        return metrics

    def fit(self) -> dict:
        cfg = self.config
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm import tqdm
            progress = tqdm(total=cfg.train.steps, initial=self.state.step, desc="gpg", dynamic_ncols=True)
        first_eval = {}
        if cfg.eval.before_training and self.state.step == 0:
            first_eval = self.evaluate(0)
        last_eval = first_eval
        while self.state.step < cfg.train.steps:
            start = time.perf_counter()
            batch, sampled, collect_metrics = self.collect()
            rollout_time = time.perf_counter() - start
            update_metrics = self.update(batch)
            self.sync_weights()
            self.state.step += 1
            elapsed = time.perf_counter() - start
            metrics = {**step_metrics(sampled, self.dist), **collect_metrics, **update_metrics,
                       "time/step": elapsed, "time/rollout": rollout_time,
                       "time/learner": elapsed - rollout_time,
                       "throughput/tokens_per_s": update_metrics.pop("tokens") / elapsed}
            self.logger.log(self.state.step, metrics)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(reward=f"{metrics['reward/mean']:.3f}",
                                     acc=f"{metrics.get('reward/accuracy', float('nan')):.3f}",
                                     alpha=f"{metrics['alpha']:.2f}")
            if cfg.eval.every and self.state.step % cfg.eval.every == 0 and self.state.step < cfg.train.steps:
                last_eval = self.evaluate(self.state.step)
        if progress is not None:
            progress.close()
        last_eval = self.evaluate(self.state.step) if self.evaluator else last_eval
        self.logger.close()
        return {"before": first_eval, "after": last_eval}

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path | None:
        """The policy in HF format (loadable by from_pretrained / vLLM), written atomically."""
        return save_hf(self.learner.module, self.policy.processor, out_dir, self.dist)


def save_hf(module: torch.nn.Module, processor, out_dir: str | os.PathLike, dist: Dist) -> Path | None:
    out = Path(out_dir)
    if not dist.is_main:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        module.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
