"""The training loop: sample prompts -> rollout -> rewards -> advantages (with GPG resampling)
-> learner step -> weight sync -> metrics -> periodic held-out eval -> final HF checkpoint.

How this departs from GRPO (as GPG does, arXiv 2504.02546; DESIGN.md "GPG, exactly"):
- the advantage is r - mean(group), not divided by the group's std (`scale_rewards: std` is the
  paper's ablation);
- no importance ratio, no clipping, no KL term and no reference model: one on-policy update per
  batch, so there is no old-policy log-prob pass;
- groups whose rewards are all equal carry no signal; when fewer than `min_valid_fraction` of a
  batch's groups are valid, more prompts are drawn (up to `max_draws` draws in all, the first
  included), the batch is refilled valid groups first, and the loss is multiplied by
  alpha = n_groups / n_valid counted over the global batch, so that the invalid groups' zero
  gradients do not shrink the step. A batch with no valid group at all takes no optimizer step
  (`update/no_valid_group`): its policy gradient is zero, but Adam's momentum, weight decay and
  the LR schedule would still move.
The baselines (`grpo`, `dr_grpo`, `reinforce`) run through the same loop: only their registry
entry (mm_gpg.algorithms.ALGORITHMS) differs.

N processes equal one: all ranks draw the same global batch and each rolls out its shard; the
valid-group count (hence alpha), the resampling decision, the batch assembly (valid groups first,
in the order one process would have drawn them, moved between ranks only when one rank has more
than its share), the token count the loss divides by and every logged metric are global. Rank 0
alone writes metrics, checkpoints' shared files and exports.

Survival: `train.checkpoint_every` writes resumable checkpoints (mm_gpg.checkpoint); `train.resume`
continues from one exactly (same data, same samples, same metrics, step for step). An update
with a non-finite loss or gradient norm is skipped and logged; `train.max_nonfinite` in a row
stop the run (NonFiniteError).

Watchdog: every phase runs inside `Dist.stage` ("rollout", "rewards/valid count", "learner step",
"held-out eval", "checkpoint", ...), so a rank left waiting in a collective for longer than
`train.collective_timeout_s` fails with a message naming the phase instead of hanging. Every
generating phase runs inside the engine's `generation_scope` (under ZeRO-3: whole weights,
gathered once), so ranks may generate different numbers of tokens, or call `generate` different
numbers of times, without a collective in between.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from data_prep.mixture import build_mixture, shard

from .algorithms import (ADVANTAGES, Algorithm, aggregation_normalizer, correction_factor, resolve_algorithm,
                         valid_groups)
from .checkpoint import (NonFiniteError, checkpoint_root, load_checkpoint, resolve_resume, restore_rng,
                         save_checkpoint, save_hf)
from .config import Config
from .distributed import Dist
from .metrics import HistoryError, MetricsLogger
from .policy import Policy
from .progress import drawing, progress_bar
from .prompting import Prompt, encode_prompts
from .rollout import Completion, RolloutEngine
from .rollouts import RolloutLog, eval_record, group_record, parse_failure, rollout_step, write_thumbnails
from .wandb_log import rollout_table, start_wandb

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
    failures: dict = field(default_factory=dict)
    """component name -> {"errors": n, "timeouts": n, "example": first error message or None}
    over the G responses (every component of the reward specs, failing or not)."""
    draw: int = 0
    """Which of the step's draws (0: the first) sampled this group."""
    parse_failures: list = field(default_factory=list)
    """[G] whether the accuracy verifier found no answer to parse in each response."""

    @property
    def valid(self) -> bool:
        return bool(valid_groups(self.rewards[None])[0])


@dataclass
class TrainState:
    """Everything of the loop's own that a checkpoint must carry (with the mixture's position)."""
    step: int = 0
    total_draws: int = 0
    """Prompt draws over the whole run (resampling included)."""
    nonfinite_in_a_row: int = 0
    """Consecutive skipped (non-finite) updates up to `step`."""
    nonfinite_steps: list = field(default_factory=list)
    """Steps whose update was skipped as non-finite (the most recent ones)."""
    first_eval: dict = field(default_factory=dict)
    """The evaluation before training, reported as "before" by a resumed run too."""


def sampling_seed(seed: int, step: int, draw: int, rank: int) -> int:
    """A distinct, reproducible seed for every (step, draw, rank): resumed runs sample the same."""
    return (seed * 1_000_003 + step * 10_007 + draw * 101 + rank) % (2 ** 31)


def rollout_groups(config: Config, policy: Policy, engine: RolloutEngine, scorer, samples: list,
                   seed: int) -> list[Group]:
    """Encode, generate G completions per prompt, and score them."""
    d, r = config.data, config.rollout
    prompts = encode_prompts(policy.processor, samples, d.prompt_style, d.min_pixels, d.max_pixels,
                             d.system_prompt)
    sampling = r.sampling_params(seed)
    completions = engine.generate(prompts, r.group_size, sampling)
    results = scorer.score([c.text for group in completions for c in group],
                           [p.sample for p in prompts for _ in range(r.group_size)])
    groups = []
    for k, (prompt, group) in enumerate(zip(prompts, completions)):
        mine = results[k * r.group_size:(k + 1) * r.group_size]
        names = sorted({name for res in mine for name in res.components})
        groups.append(Group(prompt, group, torch.tensor([res.score for res in mine], dtype=torch.float32),
                            {n: [res.components.get(n) for res in mine] for n in names}, reward_failures(mine),
                            parse_failures=[parse_failure(res) for res in mine]))
    return groups


def reward_failures(results: list) -> dict:
    """Per reward component: how many of `results` failed with an error or a timeout (they
    scored 0, as documented), and one error message to show."""
    out: dict = {}
    for res in results:
        info = getattr(res, "info", None) or {}
        for comp in info.get("verifiers", {}):
            entry = out.setdefault(comp, {"errors": 0, "timeouts": 0, "example": None})
            kind = info.get("failed", {}).get(comp)
            if kind == "timeout":
                entry["timeouts"] += 1
            elif kind == "error":
                entry["errors"] += 1
                entry["example"] = entry["example"] or info.get("error", {}).get(comp)
    return out


def assemble_batch(groups: list[Group], local_groups: int) -> list[Group]:
    """Valid groups first (in draw order), filled up to the batch size with invalid ones."""
    valid = [g for g in groups if g.valid]
    invalid = [g for g in groups if not g.valid]
    return (valid + invalid)[:local_groups]


def plan_global_batch(valid_by_rank: list[list[bool]], local_groups: int) -> list[list[tuple[int, int]]]:
    """Which sampled groups make the global batch, and which rank trains on each.

    valid_by_rank[r][i]: whether rank r's i-th sampled group (draw-major: draw d holds indices
    d*local_groups ... (d+1)*local_groups - 1) is valid. The global batch is what one process
    would assemble from the same draws: valid groups first in draw order (draw, then rank, then
    position, because `shard` cuts each draw's global batch into contiguous rank slices), filled
    up to B = local_groups * world_size with invalid ones. Each rank keeps its own selected groups
    up to its share; the surplus of richer ranks goes, in that order, to ranks short of groups.

    Returns, per rank, its `local_groups` entries as (owner rank, owner's index)."""
    world = len(valid_by_rank)
    draws = len(valid_by_rank[0]) // local_groups
    order = [(r, d * local_groups + i) for d in range(draws) for r in range(world) for i in range(local_groups)]
    chosen = ([k for k in order if valid_by_rank[k[0]][k[1]]]
              + [k for k in order if not valid_by_rank[k[0]][k[1]]])[:local_groups * world]
    own = [[k for k in chosen if k[0] == r] for r in range(world)]
    surplus = iter([k for r in range(world) for k in own[r][local_groups:]])
    plan = []
    for r in range(world):
        mine = own[r][:local_groups]
        plan.append(mine + [next(surplus) for _ in range(local_groups - len(mine))])
    return plan


def _mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def step_metrics(sampled: list[Group], dist: Dist, worker_restarts: int = 0) -> dict:
    """Reward statistics over every completion sampled this step (all draws, all ranks), with
    each component's failures (`reward/errors/NAME`, `reward/timeouts/NAME`: counts of
    responses) and the scoring workers restarted this step (`reward/worker_restarts`)."""
    rewards = torch.cat([g.rewards for g in sampled]).double()
    names = sorted({n for g in sampled for n in g.components})
    failing = sorted({n for g in sampled for n in g.failures})
    sums = [float(rewards.numel()), float(rewards.sum()), float((rewards ** 2).sum())]
    lengths = [len(c.token_ids) for g in sampled for c in g.completions]
    truncated = [c.finish_reason == "length" for g in sampled for c in g.completions]
    sums += [float(sum(lengths)), float(sum(truncated))]
    for n in names:  # every rank has the same component names (same reward specs)
        vals = [v for g in sampled for v in g.components[n] if v is not None]
        sums += [float(sum(vals)), float(len(vals))]
    for n in failing:  # likewise: every result names every component of the specs
        sums += [float(sum(g.failures.get(n, {}).get(kind, 0) for g in sampled)) for kind in ("errors", "timeouts")]
    sums.append(float(worker_restarts))
    totals = dist.sum(sums)
    failure_totals = totals[5 + 2 * len(names):]
    count, total, squares, length_sum, truncated_sum = totals[:5]
    mean = total / count
    metrics = {"reward/mean": mean, "reward/std": max(0.0, squares / count - mean ** 2) ** 0.5,
               "response/length": length_sum / count, "response/truncated_fraction": truncated_sum / count}
    for i, n in enumerate(names):
        s, c = totals[5 + 2 * i], totals[6 + 2 * i]
        metrics[f"reward/{n}"] = s / c if c else float("nan")
    for i, n in enumerate(failing):
        metrics[f"reward/errors/{n}"] = failure_totals[2 * i]
        metrics[f"reward/timeouts/{n}"] = failure_totals[2 * i + 1]
    metrics["reward/responses"] = count
    metrics["reward/worker_restarts"] = failure_totals[-1]
    return metrics


FAILURE_WARN_FRACTION = 0.05
"""A component failing (error or timeout) on more than this fraction of a step's responses gets
a warning line: those responses scored 0, which the advantages would otherwise take as real."""


def failure_warnings(step: int, metrics: dict, sampled: list[Group]) -> list[str]:
    """One line per reward component that failed on too many of this step's responses."""
    lines = []
    n = metrics.get("reward/responses") or 0
    for key in sorted(k for k in metrics if k.startswith("reward/errors/")):
        comp = key[len("reward/errors/"):]
        errors, timeouts = metrics[key], metrics.get(f"reward/timeouts/{comp}", 0.0)
        if n and (errors + timeouts) > FAILURE_WARN_FRACTION * n:
            example = next((g.failures[comp]["example"] for g in sampled
                            if g.failures.get(comp, {}).get("example")), None)
            lines.append(f"step {step}: reward component {comp!r} failed on {int(errors + timeouts)} of {int(n)} "
                         f"responses ({int(errors)} errors, {int(timeouts)} timeouts), scored 0"
                         + (f"; e.g. {example}" if example else ""))
    return lines


class Trainer:
    """Holds the parts of a run; `fit` is the loop. State lives here, passed in, not in globals."""

    def __init__(self, config: Config, policy: Policy, engine: RolloutEngine, learner, scorer,
                 dist: Dist, evaluator: Evaluator | None = None, logger: MetricsLogger | None = None,
                 eval_answers: Callable[[], list] | None = None):
        self.config, self.policy, self.engine, self.learner = config, policy, engine, learner
        self.scorer, self.dist, self.evaluator = scorer, dist, evaluator
        self.eval_answers = eval_answers
        """After an evaluation: this rank's (prompt, completions, reward results) per problem, in
        the order problems rank, rank + world, ... (HeldoutEvaluator.answers); saved as rollouts."""
        a = config.algorithm
        self.algorithm: Algorithm = resolve_algorithm(a.name, scale_rewards=a.scale_rewards, aggregation=a.aggregation)
        """The registry's entry with the config's overrides in it (scale_rewards, aggregation)."""
        self.mixture = build_mixture(config.data.train, seed=config.train.seed)
        self.state = TrainState()
        if config.train.prompts_per_step % dist.world_size:
            raise ValueError(f"train.prompts_per_step={config.train.prompts_per_step} does not divide over "
                             f"{dist.world_size} ranks")
        self.local_groups = config.train.prompts_per_step // dist.world_size
        self.checkpoints = checkpoint_root(config.output_dir)
        self.resumed_from: Path | None = None
        self.final_path: Path | None = None
        """Where `fit(final_dir=...)` wrote the final model (None on ranks other than 0)."""
        self._rng_to_restore = None
        self.wandb = start_wandb(config) if dist.is_main else None
        """The W&B run (rank 0, `logging.wandb`), or None."""
        self.logger = logger or MetricsLogger(config.output_dir, enabled=dist.is_main,
                                              tensorboard=config.logging.tensorboard, wandb_run=self.wandb)
        self.rollout_log = RolloutLog(config.output_dir, enabled=dist.is_main and config.logging.rollouts_every > 0)
        self._in_batch: set[int] = set()
        """Indices (into this rank's sampled groups) of the groups that entered the global batch."""
        # Rank 0 picks (and verifies) the checkpoint, so that every rank loads the same one (or
        # fails alike).
        choice: tuple = (None, None)
        if dist.is_main:
            try:
                choice = (resolve_resume(config.train.resume, self.checkpoints), None)
            except (FileNotFoundError, ValueError) as exc:
                choice = (None, (type(exc) is FileNotFoundError, str(exc)))
        with dist.stage("resume"):
            resume, error = dist.broadcast_object(choice)
            if error is not None:
                raise (FileNotFoundError if error[0] else ValueError)(error[1])
            if resume is not None:
                self._resume(Path(resume))
            elif config.train.resume == "auto":
                self.logger.reset()  # a run killed before its first checkpoint starts over
                self.rollout_log.reset()

    # ------------------------------------------------------------ checkpoints

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    def _trainer_state(self) -> dict:
        return {"trainer": {"step": self.state.step, "total_draws": self.state.total_draws,
                            "nonfinite_in_a_row": self.state.nonfinite_in_a_row,
                            "nonfinite_steps": self.state.nonfinite_steps[-100:],
                            "first_eval": self.state.first_eval},
                "mixture": self.mixture.state_dict(),
                "metrics": self.logger.position(self.state.step),
                "rollouts": self.rollout_log.position(self.state.step)}

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of the current step (every rank must call it)."""
        started = time.perf_counter()
        with self.dist.stage("checkpoint", self.state.step):
            path = save_checkpoint(self.checkpoints, self.state.step, self.learner, self._trainer_state(), self.dist,
                                   keep=self.config.train.keep_checkpoints, processor=self.policy.processor)
        self._say(f"checkpoint {path} saved in {time.perf_counter() - started:.2f} s")
        return path

    def _resume(self, path: Path) -> None:
        started = time.perf_counter()
        state = load_checkpoint(path, self.learner, self.dist)
        t = state["trainer"]
        self.state = TrainState(step=int(t["step"]), total_draws=int(t["total_draws"]),
                                nonfinite_in_a_row=int(t["nonfinite_in_a_row"]),
                                nonfinite_steps=list(t["nonfinite_steps"]), first_eval=dict(t["first_eval"]))
        self.mixture.load_state_dict(state["mixture"])
        self._rng_to_restore = state["rng"]
        # Records written after the checkpoint (by the run that was stopped) are written again.
        # Rank 0 owns the file; every rank fails alike when its history is damaged.
        outcome: tuple = (None, None)
        if self.dist.is_main:
            required = not self.config.train.resume_without_history
            try:
                notes = [self.logger.cut_back(state["metrics"], required=required)]
                # A checkpoint from before rollouts were saved: keep what its step had seen.
                rollouts = state.get("rollouts") or {"step": self.state.step, "records": 0, "at_step": 0}
                notes.append(self.rollout_log.cut_back(rollouts, required=required and "rollouts" in state))
                outcome = ("; ".join(n for n in notes if n) or None, None)
            except ValueError as exc:
                outcome = (None, str(exc))
        note, error = self.dist.broadcast_object(outcome)
        if error is not None:
            raise HistoryError(error)
        if note is not None:
            print(f"mm-gpg: warning: resume: {note} (train.resume_without_history)", file=sys.stderr, flush=True)
        self.resumed_from = path
        self._say(f"resumed from {path} (step {self.state.step}) in {time.perf_counter() - started:.2f} s")

    # ------------------------------------------------------------ one step

    def _draw(self) -> list:
        samples = self.mixture.draw(self.config.train.prompts_per_step)
        return shard(samples, self.dist.rank, self.dist.world_size)

    def collect(self) -> tuple[list[Group], list[Group], dict]:
        """Roll out one global batch, resampling while too few groups are valid (GPG step 3).

        Returns this rank's share of the global batch, every group this rank sampled, metrics."""
        cfg, algo = self.config, self.algorithm
        n_global = cfg.train.prompts_per_step
        sampled: list[Group] = []
        draws, first_valid = 0, None
        step = self.state.step + 1
        while True:
            seed = sampling_seed(cfg.train.seed, self.state.step, draws, self.dist.rank)
            with self.dist.stage("rollout", step), self._generation_scope():
                drawn = rollout_groups(cfg, self.policy, self.engine, self.scorer, self._draw(), seed)
            for g in drawn:
                g.draw = draws
            sampled += drawn
            draws += 1
            with self.dist.stage("rewards/valid count", step):
                n_valid = self.dist.sum([sum(g.valid for g in sampled)])[0]  # every rank decides alike
            if first_valid is None:
                first_valid = n_valid / n_global
            enough = n_valid >= cfg.algorithm.min_valid_fraction * n_global
            if not algo.resamples or enough or draws >= cfg.algorithm.max_draws:
                break
        with self.dist.stage("batch assembly", step):
            batch = self._assemble(sampled)
        self.state.total_draws += draws
        return batch, sampled, {"groups/valid_fraction_first_draw": first_valid, "groups/draws": draws}

    def _assemble(self, sampled: list[Group]) -> list[Group]:
        """This rank's share of the global batch (see `plan_global_batch`)."""
        if self.dist.world_size == 1:
            batch = assemble_batch(sampled, self.local_groups)
            self._in_batch = {i for i, g in enumerate(sampled) if any(g is b for b in batch)}
            return batch
        valid = self.dist.all_gather_object([g.valid for g in sampled])
        plan = plan_global_batch(valid, self.local_groups)
        rank = self.dist.rank
        self._in_batch = {i for entries in plan for owner, i in entries if owner == rank}
        if all(owner == r for r, entries in enumerate(plan) for owner, _ in entries):
            return [sampled[i] for _, i in plan[rank]]
        outgoing = {(owner, i): sampled[i] for r, entries in enumerate(plan) if r != rank
                    for owner, i in entries if owner == rank}
        received: dict = {}
        for part in self.dist.all_gather_object(outgoing):
            received.update(part)
        return [sampled[i] if owner == rank else received[(owner, i)] for owner, i in plan[rank]]

    def update(self, batch: list[Group]) -> dict:
        cfg, algo = self.config, self.algorithm
        n_global = cfg.train.prompts_per_step
        tokens = sum(len(c.token_ids) for g in batch for c in g.completions)
        n_valid, n_tokens = self.dist.sum([sum(g.valid for g in batch), tokens])
        if n_valid == 0:  # decided alike on every rank (global count); see the module docstring
            return {"groups/valid_fraction": 0.0, "alpha": 1.0, "loss": 0.0, "grad_norm": 0.0,
                    "entropy": float("nan"), "lr": self.learner.lr, "tokens": n_tokens,
                    "nonfinite/skipped": 0.0, "update/no_valid_group": 1.0}
        alpha = correction_factor(int(n_valid), n_global) if algo.uses_alpha else 1.0
        normalizer = aggregation_normalizer(algo.aggregation, int(n_tokens), n_global * cfg.rollout.group_size,
                                            cfg.rollout.max_new_tokens)
        rewards = torch.stack([g.rewards for g in batch])
        advantages = ADVANTAGES.get(algo.advantage)(rewards, scale_rewards=algo.scale_rewards)
        result = self.learner.step(algo, [g.prompt for g in batch], [g.completions for g in batch], advantages,
                                   alpha=alpha, normalizer=normalizer, aggregation=algo.aggregation,
                                   clip_eps=cfg.algorithm.clip_eps)
        loss, entropy = self.dist.sum([result.loss, result.entropy * tokens])
        return {"groups/valid_fraction": n_valid / n_global, "alpha": alpha, "loss": loss,
                "grad_norm": result.grad_norm, "entropy": entropy / max(1.0, n_tokens), "lr": result.lr,
                "tokens": n_tokens, "nonfinite/skipped": float(result.skipped), "update/no_valid_group": 0.0}

    def _worker_restarts(self) -> int:
        """Scoring workers this rank's scorer has replaced so far (killed past the time limit, or
        dead); 0 for a scorer without a pool."""
        return int(getattr(self.scorer, "stats", {}).get("worker_restarts", 0))

    def _generation_scope(self):
        """The engine's `generation_scope` (see RolloutEngine); an engine without one (a duck-typed
        engine that does not generate with the learner's module) needs none."""
        scope = getattr(self.engine, "generation_scope", None)
        return scope() if scope is not None else contextlib.nullcontext()

    def sync_weights(self) -> None:
        if not self.engine.shares_learner_weights:
            with self.dist.stage("weight sync", self.state.step):
                self.engine.load_weights(self.learner.full_state())

    def log_rollouts(self, sampled: list[Group], alpha: float) -> None:
        """Every group sampled this step (all draws, all ranks) to `rollouts.jsonl`, in the order
        one process would have drawn them (draw, rank, position), as the batch plan orders them."""
        cfg, algo = self.config, self.algorithm
        advantage = ADVANTAGES.get(algo.advantage)
        thumbs: dict = {}
        mine = [(g.draw, self.dist.rank, i,
                 group_record(g, advantage(g.rewards[None], scale_rewards=algo.scale_rewards)[0].tolist(),
                              in_batch=i in self._in_batch, index=0, thumbs=thumbs,
                              max_px=cfg.logging.thumbnail_px))
                for i, g in enumerate(sampled)]
        self._write_rollouts(self.state.step, mine, thumbs, lambda entries: [
            {**record, "group": index, "alpha": alpha}
            for index, (*_, record) in enumerate(sorted(entries, key=lambda entry: entry[:3]))])

    def _write_rollouts(self, step: int, mine: list, thumbs: dict, in_order: Callable[[list], list]) -> None:
        """Every rank's entries (`mine`, with their thumbnails) to rank 0, which writes the thumbnails,
        then the records `in_order` makes of all entries (one process's order) to `rollouts.jsonl`
        and W&B."""
        world = self.dist.world_size
        everyone = self.dist.all_gather_object((mine, thumbs)) if world > 1 else [(mine, thumbs)]
        if not self.dist.is_main:
            return
        for _, part in everyone:
            write_thumbnails(part, Path(self.config.output_dir))
        records = in_order([entry for part, _ in everyone for entry in part])
        for record in records:
            self.rollout_log.log(step, record)
        if self.wandb is not None:
            rollout_table(self.wandb, step, records)

    def evaluate(self, step: int) -> dict:
        if self.evaluator is None:
            return {}
        # One scope around the whole evaluation: an evaluator may call `generate` a different
        # number of times on each rank (e.g. the suite's per-benchmark batches of uneven slices).
        with self.dist.stage("held-out eval", step), self._generation_scope():
            metrics = self.evaluator(self.engine, step)
        self.logger.log(step, metrics)
        if self.eval_answers is not None and self.config.logging.rollouts_every:
            with self.dist.stage("rollout log", step):
                self._log_eval_answers(step)
        return metrics

    def _log_eval_answers(self, step: int) -> None:
        cfg, rank, world = self.config, self.dist.rank, self.dist.world_size
        thumbs: dict = {}
        mine = [eval_record(prompt, completions, results, index=k * world + rank, thumbs=thumbs,
                            max_px=cfg.logging.thumbnail_px)
                for k, (prompt, completions, results) in enumerate(self.eval_answers())]
        self._write_rollouts(step, mine, thumbs, lambda records: sorted(records, key=lambda r: r["index"]))

    def _check_nonfinite(self, skipped: bool, metrics: dict) -> None:
        step, limit = self.state.step, self.config.train.max_nonfinite
        if not skipped:
            self.state.nonfinite_in_a_row = 0
            return
        self.state.nonfinite_in_a_row += 1
        self.state.nonfinite_steps = (self.state.nonfinite_steps + [step])[-100:]
        self._say(f"step {step}: non-finite loss ({metrics['loss']}) or gradient norm ({metrics['grad_norm']}); "
                  f"update skipped, weights unchanged ({self.state.nonfinite_in_a_row} in a row; the run stops "
                  f"at {limit})")
        if self.state.nonfinite_in_a_row >= limit:
            steps = self.state.nonfinite_steps[-limit:]
            raise NonFiniteError(
                f"stopping at step {step}: {limit} updates in a row had a non-finite loss or gradient norm "
                f"(steps {steps}); all were skipped, so the weights are those after step {steps[0] - 1}. "
                f"Lower train.lr, check rewards and data for NaN/inf, or raise train.max_nonfinite. "
                f"Checkpoints: {self.checkpoints}")

    def fit(self, final_dir: str | os.PathLike | None = None) -> dict:
        """Train to `train.steps`, write the final model to `final_dir` (when given), then run the
        final evaluation: the model is on disk before the evaluation starts, so an evaluation that
        fails never loses the trained weights (`self.final_path` names them)."""
        cfg = self.config
        progress = progress_bar(cfg.train.steps, cfg.algorithm.name, cfg.progress and self.dist.is_main,
                                initial=self.state.step)
        if self._rng_to_restore is not None:
            restore_rng(self._rng_to_restore)
            self._rng_to_restore = None
            self.sync_weights()  # an engine with its own copy of the weights gets the loaded ones
        if cfg.eval.before_training and self.state.step == 0:
            self.state.first_eval = self.evaluate(0)
        last_eval = self.state.first_eval
        saved_at = self.state.step if self.resumed_from is not None else None
        try:
            while self.state.step < cfg.train.steps:
                start = time.perf_counter()
                restarts_before = self._worker_restarts()
                batch, sampled, collect_metrics = self.collect()
                rollout_time = time.perf_counter() - start
                with self.dist.stage("learner step", self.state.step + 1):
                    update_metrics = self.update(batch)
                skipped = bool(update_metrics["nonfinite/skipped"])
                no_signal = bool(update_metrics["update/no_valid_group"])
                if not skipped and not no_signal:
                    self.sync_weights()
                self.state.step += 1
                elapsed = time.perf_counter() - start
                with self.dist.stage("metrics", self.state.step):
                    reward_metrics = step_metrics(sampled, self.dist,
                                                  worker_restarts=self._worker_restarts() - restarts_before)
                for line in failure_warnings(self.state.step, reward_metrics, sampled) if self.dist.is_main else ():
                    print(f"mm-gpg: warning: {line}", file=sys.stderr, flush=True)
                metrics = {**reward_metrics, **collect_metrics, **update_metrics,
                           "nonfinite/in_a_row": (self.state.nonfinite_in_a_row + 1 if skipped else
                                                  self.state.nonfinite_in_a_row if no_signal else 0),
                           "time/step": elapsed, "time/rollout": rollout_time,
                           "time/learner": elapsed - rollout_time,
                           "throughput/tokens_per_s": update_metrics.pop("tokens") / elapsed}
                self.logger.log(self.state.step, metrics)
                if rollout_step(self.state.step, cfg.logging.rollouts_every):
                    with self.dist.stage("rollout log", self.state.step):
                        self.log_rollouts(sampled, metrics["alpha"])
                if not no_signal:  # no update was tried: the non-finite run neither grows nor ends
                    self._check_nonfinite(skipped, metrics)
                if drawing(progress):
                    progress.update(1)
                    progress.set_postfix(reward=f"{metrics['reward/mean']:.3f}",
                                         acc=f"{metrics.get('reward/accuracy', float('nan')):.3f}",
                                         alpha=f"{metrics['alpha']:.2f}")
                if cfg.eval.every and self.state.step % cfg.eval.every == 0 and self.state.step < cfg.train.steps:
                    last_eval = self.evaluate(self.state.step)
                if cfg.train.checkpoint_every and self.state.step % cfg.train.checkpoint_every == 0:
                    self.save_checkpoint()
                    saved_at = self.state.step
            if cfg.train.checkpoint_every and self.state.step and saved_at != self.state.step:
                self.save_checkpoint()  # the end of the run, resumable with a larger train.steps
        finally:
            progress.close()
        if final_dir is not None:
            self.final_path = self.save_pretrained(final_dir)
            self._say(f"final model saved to {final_dir}")
        try:
            last_eval = self.evaluate(self.state.step) if self.evaluator else last_eval
        finally:
            self.logger.close()
            self.rollout_log.close()
            if self.wandb is not None:
                self.wandb.finish()
        return {"before": self.state.first_eval, "after": last_eval}

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path | None:
        """The policy in HF format (loadable by from_pretrained / vLLM), written atomically.
        Every rank must call it (under ZeRO-3 the weights are gathered)."""
        with self.dist.stage("final export"):
            state_dict = self.learner.full_state_dict() if getattr(self.learner, "zero_stage", 0) == 3 else None
            return save_hf(self.learner.module, self.policy.processor, out_dir, self.dist, state_dict=state_dict)

