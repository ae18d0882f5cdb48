"""The GPU path, end to end, behind a `device` fixture.

Each test runs once per device: `cpu` everywhere (CI: tiny sizes, float32, gloo) and `cuda`
(marked `gpu`: bf16, NCCL) where a GPU is present, which is what `pytest -m gpu` and
scripts/gpu_check.sh run. The logic is the same, so on a GPU only CUDA itself is new:
- a learner step on the device (every weight there, the language model moves, the vision tower
  does not), with rollouts from the hf engine on the same module;
- held-out evaluation on the device;
- the collectives on the process group's own device (NCCL moves only CUDA tensors);
- `mm-gpg train` under ZeRO-2, SIGKILLed after a checkpoint and resumed: every step logged once,
  on cuda the default recipe for 20 steps in bf16 (held-out accuracy must rise).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PIXELS = 112 * 112


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    return request.param


def _dtype(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def _samples(n: int, split: str = "train"):
    from data_prep.registry import load_source
    return list(load_source("synthetic", split=split, size=n, tasks=["bar_compare"]))


def _learner(policy, prompts_per_step: int, group_size: int):
    from mm_gpg.learner import Learner
    return Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=0,
                   micro_batch_groups=1, local_groups=prompts_per_step, group_size=group_size,
                   train_projector=True)


def test_a_learner_step_and_rollouts_on_the_device(device, tiny_model_dir, dist):
    from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
    from mm_gpg.device import module_device
    from mm_gpg.policy import VISION_KEYS, load_policy
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams, build_engine

    policy = load_policy(str(tiny_model_dir), _dtype(device))  # on the CPU: DeepSpeed places it
    learner = _learner(policy, prompts_per_step=2, group_size=2)
    assert learner.device.type == device and module_device(learner.module).type == device
    engine = build_engine("hf", policy=policy, model_context=learner.generation_context)
    prompts = encode_prompts(policy.processor, _samples(2), "r1", PIXELS, PIXELS)
    groups = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    assert [len(g) for g in groups] == [2, 2] and all(c.token_ids for g in groups for c in g)

    before = {n: p.detach().float().cpu().clone() for n, p in learner.module.named_parameters()}
    tokens = sum(len(c.token_ids) for g in groups for c in g)
    result = learner.step(ALGORITHMS.get("gpg"), prompts, groups, torch.tensor([[1.0, -1.0], [0.5, -0.5]]),
                          alpha=1.0, normalizer=aggregation_normalizer("token_mean", tokens, 4, 8),
                          aggregation="token_mean", clip_eps=0.2)
    assert not result.skipped and torch.isfinite(torch.tensor([result.loss, result.grad_norm])).all()
    moved = {n for n, p in learner.module.named_parameters()
             if not torch.equal(p.detach().float().cpu(), before[n])}
    assert any("language_model" in n or "lm_head" in n or "embed_tokens" in n for n in moved), moved
    assert not [n for n in moved if any(k in n for k in VISION_KEYS) and "merger" not in n]  # tower frozen


def test_heldout_evaluation_on_the_device(device, tiny_model_dir, dist):
    from eval.in_training import HeldoutEvaluator
    from mm_gpg.policy import load_policy
    from mm_gpg.rollout import build_engine
    from rewards import build_scorer

    policy = load_policy(str(tiny_model_dir), _dtype(device), device=device)
    assert next(policy.model.parameters()).device.type == device
    engine = build_engine("hf", policy=policy)
    with build_scorer([{"name": "accuracy"}], timeout_s=5.0, num_workers=0) as scorer:
        evaluate = HeldoutEvaluator(_samples(6, "heldout"), policy.processor, scorer, prompt_style="r1",
                                    min_pixels=PIXELS, max_pixels=PIXELS, max_new_tokens=8, dist=dist,
                                    temperature=1.0, samples_per_problem=2, seed=0)
        metrics = evaluate(engine, 0)
    assert metrics["heldout/n"] == 6 and 0.0 <= metrics["heldout/accuracy"] <= 1.0


def test_collectives_run_on_the_process_groups_device(device, dist):
    from mm_gpg.device import collective_device

    backend = torch.distributed.get_backend()
    # init_distributed picks NCCL when a GPU is present, gloo on the CPU
    assert ("nccl" in backend) == torch.cuda.is_available(), backend
    assert collective_device(backend).type == ("cuda" if backend == "nccl" else "cpu")
    # Hand-worked, one process: the sums and maxima are the values themselves; float64 keeps
    # integer counts exact (2**53 + 1 would round in float32).
    assert dist.sum([1.0, 2.5, 2.0 ** 53 + 1]) == [1.0, 2.5, 2.0 ** 53 + 1]
    assert dist.max([0.0, -3.0]) == [0.0, -3.0]
    assert dist.all_gather_object({"rank": dist.rank}) == [{"rank": 0}]


def _train_command(device: str, model_dir, out: Path) -> list[str]:
    common = [sys.executable, "-m", "mm_gpg.cli", "train", "--config", str(ROOT / "configs/tiny_synthetic.yaml"),
              f"model.path={model_dir}", f"output_dir={out}", f"model.device={device}", "progress=false",
              "train.zero_stage=2", "train.resume=auto", "eval.every=0"]
    if device == "cuda":  # the default recipe, 20 steps
        return common + ["train.steps=20", "train.checkpoint_every=10"]
    return common + ["train.steps=6", "train.checkpoint_every=2", "train.prompts_per_step=2",
                     "train.micro_batch_groups=1", "rollout.group_size=2", "rollout.max_new_tokens=6",
                     "eval.max_new_tokens=6", "eval.samples=1", "warmstart.steps=2", "warmstart.batch_size=2",
                     "reward_workers=1", "data.heldout=[{source: synthetic, options: {split: heldout, size: 4}}]"]


def test_a_zero2_run_killed_after_a_checkpoint_resumes_on_the_device(device, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    command = _train_command(device, tiny_model_dir, out)
    steps_total = 20 if device == "cuda" else 6
    kill_after = 12 if device == "cuda" else 3  # a checkpoint (step 10 / step 2) exists by then
    # ROOT first, then whatever was on the path (gpu_check.sh puts its wheels' folder there)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics, deadline, logged = out / "metrics.jsonl", time.monotonic() + 600, []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.exists():
                logged = [json.loads(line).get("step") for line in metrics.read_text().splitlines()
                          if line.endswith("}") and "loss" in line]
                if logged and max(logged) >= kill_after:
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself ({proc.returncode}): {stderr[-3000:]}"
    assert logged and max(logged) >= kill_after

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resumed from" in result.stdout, result.stdout[-2000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, steps_total + 1))  # the metrics written after the checkpoint were cut back
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "final" / "config.json").exists()
    device_line = [line for line in result.stdout.splitlines() if "device" in line.lower()]
    assert device_line and device in device_line[0], result.stdout[-2000:]
    if device == "cuda":
        print("held-out accuracy", summary["heldout_accuracy_before"], "->", summary["heldout_accuracy_after"])
        assert summary["heldout_accuracy_after"] > summary["heldout_accuracy_before"], summary
