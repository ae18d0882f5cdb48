"""bench/gpu_step.py: the architectures it measures are the public models', and its whole code
path runs here at tiny sizes (on a GPU, only CUDA itself is new)."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_step  # noqa: E402


@pytest.mark.parametrize("arch,parameters,model_class", [
    # The public checkpoints' parameter counts (their safetensors index metadata).
    ("qwen2vl_2b", 2_208_985_600, "Qwen2VLForConditionalGeneration"),
    ("qwen25vl_3b", 3_754_622_976, "Qwen2_5_VLForConditionalGeneration"),
])
def test_arch_configs_have_the_public_models_sizes(arch, parameters, model_class, tiny_model_dir):
    spec = json.loads((ROOT / "configs" / "arch" / f"{arch}.json").read_text())
    model = gpu_step.build_model(spec, tiny_model_dir, torch.device("meta"), torch.bfloat16)
    assert type(model).__name__ == model_class
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model.config.image_token_id == json.loads((tiny_model_dir / "config.json").read_text())["image_token_id"]


def test_mfu_peak_table():
    assert gpu_step.peak_flops(torch.device("cpu")) is None


def test_tiny_run_on_the_cpu_writes_every_figure(tmp_path):
    assert gpu_step.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_step.json").read_text())
    records = result["records"]
    assert [r["gradient_checkpointing"] for r in records] == [False, True]
    for r in records:
        # 2 prompts x 2 samples x 8 tokens: end-of-turn is blocked, so every completion is full length
        assert r["rollout_tokens"] == 2 * 2 * 8 and r["rollout_tokens_per_s"] > 0
        # each of the 2 prompts once per group, or once per completion (x2) under checkpointing
        runs_of_each_prompt = 2 if r["gradient_checkpointing"] else 1
        assert r["learner_tokens"] == r["rollout_tokens"] + 2 * r["prompt_tokens_per_prompt"] * runs_of_each_prompt
        assert r["learner_tokens_per_s"] > 0 and r["mfu"] is None and "error" not in r
    assert "| tiny | True |" in (tmp_path / "gpu_step.md").read_text()
