"""`mm-gpg train` end to end on the tiny model, and its one-line errors on bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mm_gpg.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tiny_overrides(tmp_path, model_dir):
    return [f"model.path={model_dir}", f"output_dir={tmp_path / 'run'}", "progress=false",
            "train.steps=2", "train.prompts_per_step=2", "train.micro_batch_groups=1", "rollout.group_size=2",
            "rollout.max_new_tokens=6", "eval.max_new_tokens=6", "warmstart.steps=2", "warmstart.batch_size=2",
            "reward_workers=1", "eval.temperature=0",
            "data.heldout=[{source: synthetic, options: {split: heldout, size: 1}}]"]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_train_end_to_end_writes_metrics_and_a_loadable_model(tmp_path, tiny_model_dir):
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
                     *tiny_overrides(tmp_path, tiny_model_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward/mean", "reward/std", "reward/accuracy", "reward/format", "groups/valid_fraction",
                "groups/valid_fraction_first_draw", "alpha", "groups/draws", "response/length", "entropy",
                "grad_norm", "time/step", "throughput/tokens_per_s", "lr"):
        assert key in steps[0], key
    evals = [r for r in records if "heldout/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2]
    summary = json.loads((run / "summary.json").read_text())
    from data_prep.synthetic import TASK_NAMES
    n_tasks = len(TASK_NAMES)  # one held-out problem of each task
    assert summary["heldout_n"] == n_tasks
    assert f"held-out accuracy (greedy) on {n_tasks} problems: before" in result.stdout
    # one line says where it runs (no GPU here: the CPU, float32 by `model.dtype: auto`)
    assert [line for line in result.stdout.splitlines() if line.startswith("device: ")] == \
        ["device: cpu, float32, attention sdpa"]
    assert list((run / "tensorboard").iterdir())
    from mm_gpg.policy import load_policy
    load_policy(str(run / "final"))


@pytest.mark.parametrize("args,message", [
    (["train.lrr=1"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    (["model.path=/nonexistent/model"], "model.path: '/nonexistent/model' is not a directory"),
    (["algorithm.name=gpgg"], "config key 'algorithm.name': unknown algorithm 'gpgg' (did you mean 'gpg'?)"),
    (["algorithm.kl_coef=0.1"], "config key 'algorithm.kl_coef': must be 0 for gpg, whose loss has no KL term"),
    (["model.device=gpu"], "config key 'model.device': must be auto, cpu, cuda or cuda:N"),
])
def test_train_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"), "progress=false",
                     "model.init_tiny=false", "warmstart.steps=0", f"output_dir={tmp_path / 'run'}", *args,
                     cwd=tmp_path)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("mm-gpg: error: ")
    assert message in last_line(result.stderr)


def test_missing_config_file(tmp_path):
    result = run_cli("train", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert last_line(result.stderr) == f"mm-gpg: error: {tmp_path / 'nope.yaml'}: config file not found"


def test_unreadable_image_names_the_record(tmp_path, tiny_model_dir):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"this is not a png")
    rows = tmp_path / "geoqa.jsonl"
    rows.write_text(json.dumps({"id": "q17", "image_path": "broken.png", "question": "x?", "ground_truth": "3"}) + "\n")
    data = (f"data.train=[{{source: geoqa, options: {{path: '{rows}', image_dir: '{tmp_path / 'images'}'}}}}]")
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
                     *tiny_overrides(tmp_path, tiny_model_dir), "warmstart.steps=0", "eval.before_training=false",
                     data, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = last_line(result.stderr)
    assert line.startswith("mm-gpg: error: ") and "q17" in line and "unreadable image" in line
    assert not (tmp_path / "run" / "final").exists()
    assert not (tmp_path / "run" / "summary.json").exists()
