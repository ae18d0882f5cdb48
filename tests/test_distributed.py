"""N processes equal one: each multi-process test is its own 2-process `torchrun` job on this CPU
(gloo, DS_ACCELERATOR=cpu), compared with the same scenario run in the test process (1 rank).

This file is also the jobs' script: `torchrun --nproc_per_node 2 tests/test_distributed.py
SCENARIO MODEL_DIR OUT_DIR` runs one scenario on every rank; rank 0 writes its results to OUT_DIR.

The rollout engine and scorer here are fakes whose completions and rewards depend only on the
prompt's sample id, never on the rank or the batch a prompt lands in, so that one process and two
see the same groups; everything else (mixture, collect with GPG resampling, global batch
assembly, alpha, token count, the DeepSpeed learner, metrics) is the real code.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
TIMING = ("time/", "throughput/")  # wall-clock fields: never compared


# ---------------------------------------------------------------- shared by the test process and the jobs

def run_job(scenario: str, model_dir, out_dir, nproc: int = 2, timeout: int = 1200, extra_env=None) -> dict:
    """Run `scenario` as an `nproc`-process torchrun job; return rank 0's results."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE), scenario, str(model_dir), str(out_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"job {scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
    return json.loads((out_dir / "result.json").read_text())


class FakeEngine:
    """Completions that are a pure function of the sample id (and the group slot)."""

    shares_learner_weights = True

    def generate(self, prompts, n, sampling):
        from mm_gpg.rollout import Completion
        out = []
        for p in prompts:
            rng = random.Random(zlib.crc32(p.sample.id.encode()))
            group = []
            for _ in range(n):
                ids = [rng.randint(14, 300) for _ in range(rng.randint(1, 6))]
                group.append(Completion(token_ids=ids, text=" ".join(map(str, ids)), finish_reason="length"))
            out.append(group)
        return out

    def load_weights(self, named_tensors):
        pass


class FakeScorer:
    """Reward 1 for about one completion in 8 (a hash of the text), else 0: with groups of 4,
    about 40 % of the groups are valid, so GPG resamples and still often ends with alpha > 1."""

    def score(self, texts, samples):
        from rewards.result import RewardResult
        out = []
        for t in texts:
            hit = float(zlib.crc32(t.encode()) % 8 == 0)
            out.append(RewardResult(score=hit, components={"accuracy": hit}))
        return out


def make_learner(policy, *, world_size, local_groups, micro, group_size, zero=0, lr=1e-5, grad_clip=1e9,
                 warmup_steps=1):
    from mm_gpg.learner import Learner
    return Learner(policy, lr=lr, warmup_steps=warmup_steps, weight_decay=0.0, grad_clip=grad_clip, zero_stage=zero,
                   bf16=False, micro_batch_groups=micro, local_groups=local_groups, group_size=group_size,
                   world_size=world_size)


def fixed_global_batch(policy, n_groups=8, g=2):
    """n_groups prompts, each with g fixed completions of varied length, and fixed advantages."""
    from data_prep.registry import load_source
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import Completion
    source = load_source("synthetic", size=8, seed=3)
    prompts = encode_prompts(policy.processor, [source[i] for i in range(n_groups)], "r1", 112 * 112, 112 * 112)
    gen = torch.Generator().manual_seed(7)
    groups = [[Completion(token_ids=torch.randint(14, 300, (1 + (3 * i + j) % 6,), generator=gen).tolist(),
                          text="", finish_reason="length") for j in range(g)] for i in range(n_groups)]
    advantages = torch.randn(n_groups, g, generator=gen)
    advantages -= advantages.mean(dim=1, keepdim=True)
    return prompts, groups, advantages


def learner_parity(dist, model_dir, out_dir, zero_stages=(0,), steps=3):
    """The same global batch of 8 groups: every rank its contiguous shard, one group per
    micro-batch (2 ranks x 4 accumulation steps), against one rank with one micro-batch of 8."""
    from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
    from mm_gpg.policy import load_policy
    gpg = ALGORITHMS.get("gpg")
    results, tensors = {}, {}
    for zero in zero_stages:
        policy = load_policy(str(model_dir))
        prompts, groups, advantages = fixed_global_batch(policy)
        n_tokens = sum(len(c.token_ids) for grp in groups for c in grp)
        per = len(prompts) // dist.world_size
        mine = slice(dist.rank * per, (dist.rank + 1) * per)
        micro = 1 if dist.world_size > 1 else len(prompts)
        learner = make_learner(policy, world_size=dist.world_size, local_groups=per, micro=micro, group_size=2,
                               zero=zero)
        grads = capture_gradients(learner) if zero == 0 else None
        losses, norms = [], []
        for _ in range(steps):
            out = learner.step(gpg, prompts[mine], groups[mine], advantages[mine], alpha=1.5,
                               normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                               aggregation="token_mean", clip_eps=0.2)
            losses.append(dist.sum([out.loss])[0])
            norms.append(out.grad_norm)
            if grads is not None and "first" not in tensors:
                tensors["first"] = dict(grads)
        results[f"zero{zero}"] = {"loss": losses, "grad_norm": norms}
        tensors[f"zero{zero}"] = {k: v.detach().clone() for k, v in learner.full_state_dict().items()}
    return results, tensors


def capture_gradients(learner) -> dict:
    """The (all-reduced) gradients the stage-0 optimizer is handed, by parameter name."""
    seen = {}
    names = {id(p): n for n, p in learner.module.named_parameters()}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    seen[names[id(p)]] = p.grad.detach().clone()
    learner.engine.optimizer.register_step_pre_hook(hook)
    return seen


def trainer_config(out_dir, **train):
    from mm_gpg.config import Config
    config = Config()
    config.output_dir = str(out_dir)
    config.progress = False
    config.data.train = [{"source": "synthetic", "options": {"split": "train", "size": 400}}]
    config.rollout.group_size = 4
    config.rollout.max_new_tokens = 6
    config.algorithm.min_valid_fraction = 0.9  # forces GPG resampling on most steps
    config.algorithm.max_draws = 2  # one resampling draw at most
    config.eval.before_training = False
    config.train.prompts_per_step = 4
    config.train.micro_batch_groups = 1
    config.train.lr = 1e-5
    config.train.warmup_steps = 1
    config.train.grad_clip = 1.0  # clipping by the *global* norm must match too
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def build_trainer(dist, model_dir, out_dir, **train):
    from mm_gpg.policy import load_policy
    from mm_gpg.trainer import Trainer
    config = trainer_config(out_dir, **train)
    policy = load_policy(str(model_dir))
    learner = make_learner(policy, world_size=dist.world_size, local_groups=config.train.prompts_per_step // dist.world_size,
                           micro=config.train.micro_batch_groups, group_size=config.rollout.group_size,
                           zero=config.train.zero_stage, lr=config.train.lr, grad_clip=config.train.grad_clip,
                           warmup_steps=config.train.warmup_steps)
    return Trainer(config, policy, FakeEngine(), learner, FakeScorer(), dist)


def trainer_parity(dist, model_dir, out_dir, steps=3):
    """Trainer.fit end to end: metrics (rank 0's file) and final weights."""
    trainer = build_trainer(dist, model_dir, out_dir, steps=steps)
    trainer.fit()
    records = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()] \
        if dist.is_main else []
    return {"records": records}, {"params": trainer.learner.full_state_dict()}


def handmade_groups(policy, valid_pattern: list[bool], first_id: int, g=2):
    """Groups over distinct prompts: valid ones get rewards [1, 0, ...], invalid ones all 0."""
    from data_prep.registry import load_source
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import Completion
    from mm_gpg.trainer import Group
    source = load_source("synthetic", size=8, seed=5)
    samples = [source[first_id + i] for i in range(len(valid_pattern))]
    prompts = encode_prompts(policy.processor, samples, "r1", 112 * 112, 112 * 112)
    groups = []
    for k, (prompt, valid) in enumerate(zip(prompts, valid_pattern)):
        rng = random.Random(first_id + k)
        comps = [Completion(token_ids=[rng.randint(14, 300) for _ in range(1 + (k + j) % 4)], text="",
                            finish_reason="length") for j in range(g)]
        rewards = torch.tensor([1.0] + [0.0] * (g - 1)) if valid else torch.zeros(g)
        groups.append(Group(prompt, comps, rewards, {}))
    return groups


# Hand-made: 2 draws of a global batch of 4 groups (2 per rank). Rank 0's groups: valid, valid |
# valid, invalid; rank 1's: all invalid. One process sees them in the order
# d0: r0 r0 r1 r1, d1: r0 r0 r1 r1 -> valid first: (r0,0) (r0,1) (r0,2), then the first invalid
# (r1,0). Rank 0 keeps 2 of its 3 selected groups and hands (r0,2) to rank 1.
# Valid groups per rank: rank 0 three (more than its share of 2), rank 1 none; globally 3 of
# B = 4 -> alpha = 4/3 (per-rank counts would give rank 0 alpha 1 and rank 1 no valid group).
HANDMADE = {0: [True, True, True, False], 1: [False, False, False, False]}


def alpha_global(dist, model_dir, out_dir):
    from mm_gpg.trainer import plan_global_batch
    trainer = build_trainer(dist, model_dir, out_dir, steps=1)
    policy = trainer.policy
    if dist.world_size == 1:  # the same 8 groups, in the order one process draws them
        by_rank = {r: handmade_groups(policy, HANDMADE[r], first_id=4 * r) for r in (0, 1)}
        sampled = by_rank[0][:2] + by_rank[1][:2] + by_rank[0][2:] + by_rank[1][2:]
    else:
        sampled = handmade_groups(policy, HANDMADE[dist.rank], first_id=4 * dist.rank)
    batch = trainer._assemble(sampled)
    local_valid = sum(g.valid for g in batch)
    metrics = trainer.update(batch)
    plan = plan_global_batch([HANDMADE[0], HANDMADE[1]], 2)
    return ({"alpha": metrics["alpha"], "valid_fraction": metrics["groups/valid_fraction"], "loss": metrics["loss"],
             "grad_norm": metrics["grad_norm"], "local_valid": dist.all_gather_object(local_valid),
             "plan": plan}, {"params": trainer.learner.full_state_dict()})


def trainer_scenarios(dist, model_dir, out_dir):
    alpha, alpha_tensors = alpha_global(dist, model_dir, Path(out_dir) / "alpha")
    fit, fit_tensors = trainer_parity(dist, model_dir, Path(out_dir) / "fit")
    return {"alpha": alpha, "fit": fit}, {"alpha": alpha_tensors, "fit": fit_tensors}


SCENARIOS = {"learner_parity": lambda d, m, o: learner_parity(d, m, o, zero_stages=(0, 1, 2, 3)),
             "trainer": trainer_scenarios}


def _job_main(argv: list[str]) -> None:
    from mm_gpg.distributed import init_distributed
    scenario, model_dir, out_dir = argv
    dist = init_distributed()
    results, tensors = SCENARIOS[scenario](dist, model_dir, out_dir)
    if dist.is_main:
        torch.save(tensors, Path(out_dir) / "tensors.pt")
        (Path(out_dir) / "result.json").write_text(json.dumps(results))
    dist.barrier()


# ---------------------------------------------------------------- the tests

def _close(a, b, tol=1e-6):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _assert_params_close(ref: dict, got: dict, atol=1e-6):
    assert ref.keys() == got.keys()
    worst = max((float((ref[k].float() - got[k].float()).abs().max()), k) for k in ref if ref[k].numel())
    assert worst[0] <= atol, f"parameter {worst[1]} differs by {worst[0]:.3g}"


@pytest.fixture(scope="module")
def learner_reference(tiny_model_dir, dist, tmp_path_factory):
    return learner_parity(dist, tiny_model_dir, tmp_path_factory.mktemp("ref"), zero_stages=(0,))


def test_two_processes_with_4_micro_batches_each_equal_one_batch_of_8_under_every_zero_stage(
        tiny_model_dir, learner_reference, tmp_path):
    """2 ranks x 4 accumulation steps of 1 group == 1 rank, 1 micro-batch of 8 groups: the same
    loss, gradient norm, gradients and weights after 3 Adam steps, under ZeRO 0, 1, 2 and 3."""
    ref, ref_tensors = learner_reference
    got = run_job("learner_parity", tiny_model_dir, tmp_path)
    tensors = torch.load(tmp_path / "tensors.pt", weights_only=False)
    for name, g in ref_tensors["first"].items():  # the applied (all-reduced) gradient, step 1
        assert torch.allclose(g, tensors["first"][name], atol=1e-7, rtol=1e-4), name
    for zero in (0, 1, 2, 3):
        r, g = ref["zero0"], got[f"zero{zero}"]
        for step, (a, b) in enumerate(zip(r["loss"], g["loss"])):
            assert _close(a, b), f"zero {zero} step {step + 1}: loss {a} vs {b}"
        for a, b in zip(r["grad_norm"], g["grad_norm"]):
            assert _close(a, b, 1e-5), f"zero {zero}: grad norm {a} vs {b}"
        _assert_params_close(ref_tensors["zero0"], tensors[f"zero{zero}"])
    from mm_gpg.policy import load_policy  # and the weights did move, by more than the tolerance
    start = load_policy(str(tiny_model_dir)).model.state_dict()
    assert max(float((start[k] - ref_tensors["zero0"][k]).abs().max()) for k in start) > 1e-5


def test_two_processes_train_exactly_like_one_and_count_alpha_over_all_ranks(tiny_model_dir, dist, tmp_path):
    """One 2-process job, two Trainer-level checks against one process:

    1. alpha from global counts (HANDMADE): rank 0 holds 3 valid groups, rank 1 none; the batch
       is assembled across ranks (one valid group moves to rank 1) and alpha = 4/3 from the
       global count; loss, gradient norm and weights equal one process's.
    2. Trainer.fit for 3 steps with GPG resampling (min_valid_fraction 0.9): the resampling
       decision, the assembled global batch, alpha, the token count and every logged metric
       equal one process's, and so do the final weights."""
    from mm_gpg.trainer import plan_global_batch
    assert plan_global_batch([HANDMADE[0], HANDMADE[1]], 2) == [[(0, 0), (0, 1)], [(1, 0), (0, 2)]]
    ref, ref_tensors = trainer_scenarios(dist, tiny_model_dir, tmp_path / "one")
    got = run_job("trainer", tiny_model_dir, tmp_path / "two")
    tensors = torch.load(tmp_path / "two" / "tensors.pt", weights_only=False)

    a, b = ref["alpha"], got["alpha"]
    assert b["local_valid"] == [2, 1]  # rank 1 trains on the valid group it received
    assert a["alpha"] == b["alpha"] == pytest.approx(4 / 3)
    assert a["valid_fraction"] == b["valid_fraction"] == 0.75
    assert _close(a["loss"], b["loss"]) and _close(a["grad_norm"], b["grad_norm"], 1e-5)
    _assert_params_close(ref_tensors["alpha"]["params"], tensors["alpha"]["params"])

    one, two = ref["fit"]["records"], got["fit"]["records"]
    assert len(one) == len(two) == 3
    assert any(r["groups/draws"] > 1 for r in one), "the scenario should resample"
    assert any(r["alpha"] > 1 for r in one), "the scenario should end a step with invalid groups"
    for a, b in zip(one, two):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        for k in sorted(keys):
            if isinstance(a[k], float) and math.isfinite(a[k]):
                assert _close(a[k], b[k]), f"step {a['step']} {k}: {a[k]} vs {b[k]}"
            else:
                assert a[k] == b[k], f"step {a['step']} {k}: {a[k]} vs {b[k]}"
    _assert_params_close(ref_tensors["fit"]["params"], tensors["fit"]["params"])


def test_plan_global_batch_matches_one_process_assembly():
    """Hand cases: no resampling keeps every group where it is; a rich rank's surplus moves."""
    from mm_gpg.trainer import plan_global_batch
    # one draw, nothing to move: each rank keeps its own 2 (valid or not)
    plan = plan_global_batch([[True, False], [False, True]], 2)
    assert [sorted(p) for p in plan] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    # two draws; valid: r0 d1 both, r1 d0 first. One process: d0 r0 r0 r1 r1, d1 r0 r0 r1 r1
    # -> valid (1,0) (0,2) (0,3), then the first invalid (0,0); rank 0 owns 3, keeps its 2 valid
    # ones and gives (0,0) to rank 1 (invalid groups count in the token normaliser, so the very
    # groups one process would pick are kept).
    plan = plan_global_batch([[False, False, True, True], [True, False, False, False]], 2)
    assert sorted(plan[0] + plan[1]) == [(0, 0), (0, 2), (0, 3), (1, 0)]
    assert plan == [[(0, 2), (0, 3)], [(1, 0), (0, 0)]]  # the surplus is rank 0's invalid (0,0)


if __name__ == "__main__":
    _job_main(sys.argv[1:])
