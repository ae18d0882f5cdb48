"""Placement: every tensor the learner, the engines and the evaluators build goes to the policy's
device; collectives build theirs on the backend's device.

A CPU machine cannot show a tensor left behind on the CPU by running on a GPU, so these tests
drive everything to a device that is not the CPU: `meta` (shapes and dtypes, no data). A tensor
that any of these paths builds on the CPU and forgets to move would show up here as `cpu`.
"""
import pytest
import torch

from data_prep.registry import load_source
from mm_gpg.device import (collective_device, describe, module_device, resolve_attn_implementation,
                           resolve_device, resolve_dtype)
from mm_gpg.distributed import Dist
from mm_gpg.learner import collate, micro_batches
from mm_gpg.policy import load_policy
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import Completion
from mm_gpg.rollout.hf import left_padded_inputs

META = torch.device("meta")


@pytest.fixture(scope="module")
def meta_policy(tiny_model_dir):
    """The tiny policy with its weights on `meta`: stands for a policy on a GPU."""
    policy = load_policy(str(tiny_model_dir))
    policy.model.to(META)
    return policy


@pytest.fixture(scope="module")
def prompts(meta_policy):
    source = load_source("synthetic", size=4)
    return encode_prompts(meta_policy.processor, [source[i] for i in range(3)], "r1", 112 * 112, 112 * 112)


def _tensors(value, path="batch"):
    """(path, tensor) for every tensor inside nested dicts / lists / tuples."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")


def _groups(n_prompts, g):
    return [[Completion(token_ids=list(range(20, 20 + 1 + (k + j) % 3)), text="", finish_reason="length")
             for j in range(g)] for k in range(n_prompts)]


def test_the_policys_device_is_where_its_weights_are(meta_policy):
    assert module_device(meta_policy.model) == META


def test_learner_micro_batches_and_advantages_go_to_the_policys_device(meta_policy, prompts):
    device = module_device(meta_policy.model)
    advantages = torch.tensor([[0.5, -0.5], [1.0, -1.0], [0.0, 0.0]])  # built on the CPU, as the trainer does
    seen = []
    for batch, adv in micro_batches(prompts, _groups(3, 2), advantages, 2, meta_policy.pad_token_id, device):
        found = list(_tensors(batch)) + [("advantages", adv)]
        # pixel values, grid sizes, ids, masks, positions, the image owners: all of them
        assert {"batch['pixel_values']", "batch['image_grid_thw']", "batch['attention_mask']",
                "batch['completion_mask']", "batch['completion_ids']", "batch['image_owner']",
                "batch['mm_token_type_ids']"} <= {p for p, _ in found}
        seen += [(p, t.device) for p, t in found]
    assert seen and all(d == META for _, d in seen), [p for p, d in seen if d != META]
    # 3 groups of 2 in micro-batches of 2 groups: 4 + 2 completions' advantages
    sizes = [adv.shape[0] for _, adv in micro_batches(prompts, _groups(3, 2), advantages, 2, 0, device)]
    assert sizes == [4, 2]


def test_collate_without_a_device_keeps_the_prompts_device(prompts):
    batch = collate(prompts[:1], _groups(1, 2), 0)
    assert all(t.device.type == "cpu" for _, t in _tensors(batch))


def test_engine_inputs_go_to_the_policys_device(meta_policy, prompts):
    inputs = left_padded_inputs(prompts, meta_policy.pad_token_id, module_device(meta_policy.model))
    found = list(_tensors(inputs))
    assert {p for p, _ in found} == {f"batch[{k!r}]" for k in ("input_ids", "attention_mask", "mm_token_type_ids",
                                                               "pixel_values", "image_grid_thw")}
    assert all(t.device == META for _, t in found), [p for p, t in found if t.device != META]


def test_collectives_build_their_tensors_on_the_backends_device(dist):
    assert collective_device("gloo") == torch.device("cpu")
    assert collective_device("nccl").type == "cuda"  # NCCL reduces nothing but CUDA tensors
    assert collective_device("cpu:gloo,cuda:nccl") == torch.device("cpu")  # its CPU side is gloo
    # The live group (gloo here) decides the device, whoever created it.
    assert dist.device == collective_device(torch.distributed.get_backend())
    assert dist.tensor([1.0, 2.0]).device == dist.device
    # A group on another device builds there: float64 so counts stay exact.
    t = Dist(rank=0, world_size=2, device=META).tensor([3.0, 4.0])
    assert t.device == META and t.dtype == torch.float64 and t.shape == (2,)


def test_auto_settings_on_this_cpu_and_for_a_gpu():
    cpu = resolve_device("auto")
    assert cpu == torch.device("cpu")  # no CUDA here
    assert resolve_dtype("auto", cpu) == "float32"
    assert resolve_dtype("bfloat16", cpu) == "bfloat16"
    assert resolve_attn_implementation("auto", cpu, "float32") == "sdpa"
    gpu = torch.device("cuda", 0)
    assert resolve_attn_implementation("auto", gpu, "bfloat16", flash_available=True) == "flash_attention_2"
    assert resolve_attn_implementation("auto", gpu, "bfloat16", flash_available=False) == "sdpa"
    assert resolve_attn_implementation("auto", gpu, "float32", flash_available=True) == "sdpa"  # fa2: 16-bit only
    assert resolve_attn_implementation("eager", gpu, "bfloat16", flash_available=True) == "eager"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_the_device_line():
    assert describe(torch.device("cpu"), torch.float32, "sdpa") == "device: cpu, float32, attention sdpa"


def test_eval_says_where_it_runs_and_refuses_a_bad_device(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    args = [sys.executable, "-m", "mm_gpg.cli", "eval", "--model", str(tiny_model_dir), "--suite", "synthetic",
            "--limit", "1", "--max-new-tokens", "2", "--workers", "0", "--bootstrap", "10", "--benchmarks",
            "count_shapes", "--output", str(tmp_path / "out")]
    ok = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [line for line in ok.stderr.splitlines() if line.startswith("device: ")] == \
        ["device: cpu, float32, attention sdpa"]
    bad = subprocess.run(args[:-1] + [str(tmp_path / "bad"), "--device", "gpu"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == \
        "mm-gpg eval: error: --device gpu: must be auto, cpu, cuda or cuda:N"
