"""Two processes whose ranks stop decoding after different numbers of tokens (ZeRO-2 and ZeRO-3)
finish their rollouts and held-out evaluations, and a rank left waiting in a collective fails
within `train.collective_timeout_s` with a message naming the stage instead of hanging.

Under ZeRO-3 each rank holds a slice of every weight; a forward with DeepSpeed's per-module hooks
all-gathers each layer, a collective. If generation ran on those hooks, a rank whose sequences
all end early would stop calling forward while the other rank's all-gather waited for it. Here
rank 0's prompts all end at once (every token but end-of-turn is blocked, so it is the only one
sampled) and rank 1's run to the token limit (end-of-turn is blocked): the real tiny Qwen2-VL,
the real `hf` engine, DeepSpeed learner, held-out evaluator and Trainer. A collective timeout
turns a hang into a failure that names the stage (e.g. "held-out eval, step 0" or "rollout, step 1").

This file is also the jobs' script: `torchrun --nproc_per_node 2 tests/test_distributed_generation.py
SCENARIO MODEL_DIR OUT_DIR ARG` runs one scenario on every rank; rank 0 writes OUT_DIR/result.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
MAX_NEW_TOKENS = 6
TIMEOUT_S = 60  # collective timeout of the generation job: far above its real imbalance (< 1 s)


def run_job(scenario: str, model_dir, out_dir, arg: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`scenario` as a 2-process torchrun job; fails the test if it outlives `timeout`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE), scenario, str(model_dir), str(out_dir), arg]
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # the watchdog should have ended it long before
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"job {scenario} hung past {timeout} s:\n{err[-6000:]}")


# ---------------------------------------------------------------- the jobs

def uneven_stops(dist, model_dir, out_dir, zero_stage: int) -> dict:
    """Direct `engine.generate`, then `Trainer.fit`: held-out eval, one GPG step, held-out eval."""
    import torch

    from data_prep.registry import load_source
    from eval.in_training import HeldoutEvaluator, SuiteEvaluator, chain_evaluators
    from mm_gpg.config import Config
    from mm_gpg.learner import Learner
    from mm_gpg.policy import load_policy
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams, build_engine
    from data_prep.mixture import build_mixture
    from mm_gpg.trainer import Trainer
    from rewards import build_scorer

    config = Config()
    config.output_dir = str(out_dir)
    config.progress = False
    config.data.train = [{"source": "synthetic", "options": {"split": "train", "size": 40}}]
    config.data.heldout = [{"source": "synthetic", "options": {"split": "heldout", "size": 4}}]
    config.rollout.group_size = 2
    config.rollout.max_new_tokens = MAX_NEW_TOKENS
    config.algorithm.min_valid_fraction = 0.0  # one draw: the test is about decoding, not resampling
    config.train.steps = 1
    config.train.prompts_per_step = 4
    config.train.micro_batch_groups = 2
    config.train.zero_stage = zero_stage
    config.eval.max_new_tokens = MAX_NEW_TOKENS

    policy = load_policy(str(model_dir))
    eos = policy.eos_token_ids
    if dist.rank == 0:  # only end-of-turn can be sampled: every sequence ends after one token
        policy.blocked_tokens = torch.ones_like(policy.blocked_tokens)
        policy.blocked_tokens[eos] = False
    else:  # end-of-turn can never be sampled: every sequence runs to the token limit
        policy.blocked_tokens = policy.blocked_tokens.clone()
        policy.blocked_tokens[eos] = True
    learner = Learner(policy, lr=1e-5, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=zero_stage,
                      bf16=False, micro_batch_groups=2, local_groups=2, group_size=2, world_size=dist.world_size)
    engine = build_engine("hf", policy=policy, model_context=learner.generation_context)

    # 1. the engine on its own (no trainer around it), sampling
    samples = build_mixture(config.data.train, seed=1).draw(2)
    prompts = encode_prompts(policy.processor, samples, "r1", config.data.min_pixels, config.data.max_pixels)
    with dist.stage("direct generate"):
        groups = engine.generate(prompts, 2, SamplingParams(max_new_tokens=MAX_NEW_TOKENS, seed=dist.rank))
    direct = dist.all_gather_object(sorted({(len(c.token_ids), c.finish_reason) for g in groups for c in g}))

    # 2. the training loop: evaluation (greedy), one rollout + update, evaluation. The evaluation
    # is the held-out set and a suite of one problem per benchmark: rank 0 answers each, rank 1
    # none, so the ranks also call `generate` different numbers of times (3 and 0).
    with build_scorer(config.rewards, timeout_s=5.0, num_workers=0) as scorer, SuiteEvaluator(
            "synthetic", policy.processor, dist=dist, limit=1, max_new_tokens=MAX_NEW_TOKENS,
            reward_workers=0) as suite:
        heldout = [s for e in config.data.heldout for s in load_source(e["source"], **e["options"])]
        evaluator = HeldoutEvaluator(heldout, policy.processor, scorer, prompt_style="r1",
                                     min_pixels=config.data.min_pixels, max_pixels=config.data.max_pixels,
                                     max_new_tokens=MAX_NEW_TOKENS, dist=dist)
        trainer = Trainer(config, policy, engine, learner, scorer, dist, chain_evaluators(evaluator, suite))
        results = trainer.fit()
    records = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()] \
        if dist.is_main else []
    return {"direct": direct, "records": records, "before": results["before"], "after": results["after"],
            "heldout": len(heldout)}


def skipped_collective(dist, model_dir, out_dir, stage: str) -> dict:
    """Rank 1 never joins rank 0's all-reduce (it sleeps past the timeout, then leaves)."""
    from mm_gpg.distributed import CollectiveError
    if dist.rank == 1:
        time.sleep(3 * dist.timeout_s)
        return {}
    started = time.monotonic()
    try:
        with dist.stage(stage, step=7):
            dist.sum([1.0])
    except CollectiveError as exc:
        result = {"error": str(exc), "stage": exc.stage, "waited_s": time.monotonic() - started}
        (Path(out_dir) / "result.json").write_text(json.dumps(result))
        raise
    return {}


def _job_main(argv: list[str]) -> None:
    from mm_gpg.distributed import init_distributed
    scenario, model_dir, out_dir, arg = argv
    if scenario == "uneven_stops":
        dist = init_distributed(timeout_s=TIMEOUT_S)
        result = uneven_stops(dist, model_dir, out_dir, int(arg))
        if dist.is_main:
            (Path(out_dir) / "result.json").write_text(json.dumps(result))
        dist.barrier()
    elif scenario == "skipped_collective":
        dist = init_distributed(timeout_s=8)
        skipped_collective(dist, model_dir, out_dir, arg)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("zero_stage", [2, 3])
def test_ranks_that_stop_decoding_at_different_steps_finish_rollouts_and_heldout_eval(
        tiny_model_dir, tmp_path, zero_stage):
    """Rank 0 decodes 1 token, rank 1 the limit: a direct `generate`, the held-out set and a suite
    before and after training, and a GPG step all finish (the old per-token ZeRO-3 gathers hung in
    the first of them, and the collective timeout named its stage)."""
    proc = run_job("uneven_stops", tiny_model_dir, tmp_path, str(zero_stage))
    assert proc.returncode == 0, f"ZeRO-{zero_stage} job failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    got = json.loads((tmp_path / "result.json").read_text())
    # the trick worked: rank 0 stopped after one token, rank 1 ran to the limit
    assert got["direct"] == [[[1, "stop"]], [[MAX_NEW_TOKENS, "length"]]]
    steps = [r for r in got["records"] if "loss" in r]
    assert len(steps) == 1
    # 4 groups of 2: rank 0's 4 completions of 1 token, rank 1's 4 of MAX_NEW_TOKENS
    assert steps[0]["response/length"] == pytest.approx((4 * 1 + 4 * MAX_NEW_TOKENS) / 8)
    assert steps[0]["response/truncated_fraction"] == pytest.approx(0.5)
    for when in ("before", "after"):  # both evaluations ran over every problem
        assert got[when]["heldout/n"] == got["heldout"] > 1
        assert [got[when][f"suite/{b}/n"] for b in ("count_shapes", "bar_compare", "segment_sum")] == [1, 1, 1]


def test_a_rank_left_waiting_in_a_collective_fails_naming_the_stage(tiny_model_dir, tmp_path):
    """2 gloo processes, an 8 s collective timeout; rank 1 skips rank 0's all-reduce."""
    proc = run_job("skipped_collective", tiny_model_dir, tmp_path, "rewards/valid count", timeout=120)
    assert proc.returncode != 0
    got = json.loads((tmp_path / "result.json").read_text())
    assert got["stage"] == "rewards/valid count, step 7"
    assert "stage 'rewards/valid count, step 7'" in got["error"] and "rank 0/2" in got["error"]
    assert "train.collective_timeout_s = 8 s" in got["error"]
    assert 7 <= got["waited_s"] <= 40, got  # it waited about the timeout, not forever
    assert "CollectiveError" in proc.stderr and "rewards/valid count" in proc.stderr


def test_generation_context_gathers_once_nests_and_gives_the_weights_back(tiny_model_dir, dist):
    """One rank, ZeRO-3: inside the engine's scope every weight is whole, a nested entry and a
    `generate` inside it keep them so (no re-gather), and on exit they are partitioned again and
    the learner still trains (ZeRO's hooks are back)."""
    import torch

    from data_prep.registry import load_source
    from mm_gpg.algorithms import ALGORITHMS
    from mm_gpg.learner import Learner
    from mm_gpg.policy import load_policy
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams, build_engine

    policy = load_policy(str(tiny_model_dir))
    learner = Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=3, bf16=False,
                      micro_batch_groups=1, local_groups=1, group_size=2, world_size=1)
    engine = build_engine("hf", policy=policy, model_context=learner.generation_context)
    params = list(learner.module.parameters())
    whole = lambda: all(p.numel() == p.ds_numel for p in params)  # noqa: E731
    assert not whole()  # partitioned (ZeRO-3 leaves an empty placeholder in each parameter)
    source = load_source("synthetic", size=2)
    prompts = encode_prompts(policy.processor, [source[0]], "r1", 112 * 112, 112 * 112)
    with engine.generation_scope() as module:
        assert module is learner.module and whole()
        with learner.generation_context() as inner:
            assert inner is module and whole()
        assert whole()  # the inner exit gave nothing back
        groups = engine.generate(prompts, 2, SamplingParams(max_new_tokens=4, seed=0))
        assert whole() and len(groups[0]) == 2
    assert not whole()
    before = {n: t.clone() for n, t in learner.full_named_parameters()}
    result = learner.step(ALGORITHMS.get("gpg"), prompts, groups, torch.tensor([[1.0, -1.0]]), alpha=1.0,
                          normalizer=8.0, aggregation="token_mean", clip_eps=0.2)
    assert not result.skipped
    after = dict(learner.full_named_parameters())
    assert any(not before[n].equal(after[n]) for n in before)


def test_collective_timeout_must_be_positive():
    from mm_gpg.config import ConfigError, load_config
    assert load_config().train.collective_timeout_s == 1800.0
    with pytest.raises(ConfigError, match="'train.collective_timeout_s': must be > 0"):
        load_config(overrides=["train.collective_timeout_s=0"])


def test_a_stage_keeps_errors_that_are_not_a_collectives():
    """A rank's own error (a bad shape, say) keeps its type and message inside a stage."""
    from mm_gpg.distributed import CollectiveError, Dist, current_stage
    dist = Dist(rank=0, world_size=2, timeout_s=5)
    with pytest.raises(ValueError, match="bad shape"):
        with dist.stage("learner step", step=3):
            assert current_stage() == "learner step, step 3"
            raise ValueError("bad shape")
    assert current_stage() is None
    with pytest.raises(CollectiveError, match=r"rank 0/2: a collective in stage 'checkpoint'.*Timed out"):
        with dist.stage("checkpoint"):
            raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv")


if __name__ == "__main__":
    _job_main(sys.argv[1:])
