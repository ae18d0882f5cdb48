"""A training run killed with SIGKILL at a random step and resumed (`train.resume: auto`) writes
the same metrics JSONL as an uninterrupted run, step for step and bit for bit, and ends with the
same weights. Both are 2-process `mm-gpg train` jobs (torchrun, gloo, this CPU) under ZeRO-1, so
each rank's optimizer partition and random states go through the checkpoint, and under ZeRO-3,
where the weights themselves are partitioned and every rollout and evaluation gathers them.

Compared: every field of every record except the wall-clock ones (`time/*`, `throughput/*`),
which are left in the file and skipped by the comparison; and the rollouts file (every group's
completions, rewards, advantages, held-out answers) byte for byte, with its thumbnails.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time/", "throughput/")

REWARD = '''import zlib


def reward(response, sample):
    """Deterministic, varied, model-independent: 1 for about a quarter of the texts."""
    return float(zlib.crc32(response.encode()) % 4 == 0)
'''


def _config(tmp_path: Path, model_dir, zero_stage: int = 1, steps: int = 6) -> Path:
    (tmp_path / "reward.py").write_text(REWARD)
    config = {
        "model": {"path": str(model_dir)},
        "data": {"train": [{"source": "synthetic", "options": {"split": "train", "size": 200}}],
                 "heldout": [{"source": "synthetic", "options": {"split": "heldout", "size": 2}}]},
        "rollout": {"group_size": 4, "max_new_tokens": 8},
        "algorithm": {"min_valid_fraction": 0.75, "max_draws": 2},
        "rewards": [{"fn": f"{tmp_path / 'reward.py'}:reward", "weight": 1.0, "component": "accuracy"}],
        "reward_workers": 0,
        "train": {"steps": steps, "prompts_per_step": 4, "micro_batch_groups": 1, "lr": 1.0e-3, "warmup_steps": 2,
                  "zero_stage": zero_stage, "checkpoint_every": 2, "keep_checkpoints": 2, "resume": "auto"},
        "eval": {"every": 3, "max_new_tokens": 8},
        "logging": {"rollouts_every": 2},  # rollouts at steps 1, 2, 4, 6: some before, some after a kill
        "progress": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "mm_gpg.cli", "train", "--config", str(config), f"output_dir={out}"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}


def _run(config: Path, out: Path) -> str:
    proc = subprocess.run(_command(config, out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return proc.stdout


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every process under it at once, as a lost machine would. (torchrun
    starts each worker in its own session, so killing torchrun's process group is not enough.)"""
    import psutil
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for p in workers:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)  # (reaped here, so that its return code is the kill's)
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"processes survived SIGKILL: {alive}"


def _run_and_kill(config: Path, out: Path, kill_after_step: int) -> int:
    """Start the run, SIGKILL it (torchrun and both workers) once step `kill_after_step` is
    logged; returns the last step logged before the kill."""
    proc = subprocess.Popen(_command(config, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 1200
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before step {kill_after_step}: {proc.stderr.read()[-4000:]}")
            steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()
                     if line.endswith("}")] if metrics.exists() else []
            if steps and max(steps) >= kill_after_step:
                break
            time.sleep(0.05)
    finally:
        _kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL
    return max(steps)


# evals at 0, 3 and the end; ZeRO-3 runs 4 steps only (CI time): its point is that gathered
# rollouts and partitioned weights resume exactly too
@pytest.mark.parametrize("zero_stage, steps, logged", [(1, 6, [0, 1, 2, 3, 3, 4, 5, 6, 6]),
                                                      (3, 4, [0, 1, 2, 3, 3, 4, 4])], ids=["zero1", "zero3"])
def test_sigkill_at_a_random_step_then_resume_gives_the_uninterrupted_run(tiny_model_dir, tmp_path, zero_stage,
                                                                          steps, logged):
    from safetensors.torch import load_file
    config = _config(tmp_path, tiny_model_dir, zero_stage, steps)
    kill_after = random.randint(2, steps - 1)

    _run(config, tmp_path / "whole")
    killed_at = _run_and_kill(config, tmp_path / "resumed", kill_after)
    out = _run(config, tmp_path / "resumed")
    where = f"(killed after step {killed_at}, aimed at {kill_after})"

    whole, resumed = _records(tmp_path / "whole"), _records(tmp_path / "resumed")
    assert [r["step"] for r in whole] == logged
    assert len(resumed) == len(whole), where
    for a, b in zip(whole, resumed):
        a = {k: v for k, v in a.items() if not k.startswith(TIMING)}
        b = {k: v for k, v in b.items() if not k.startswith(TIMING)}
        assert a == b, f"step {a['step']} differs {where}: " + str(
            {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)})
    assert any(r.get("loss") for r in whole) and len({r.get("loss") for r in whole}) > 3  # it did train

    rollouts_whole = (tmp_path / "whole" / "rollouts.jsonl").read_text()
    rollouts_resumed = (tmp_path / "resumed" / "rollouts.jsonl").read_text()
    assert sorted({json.loads(line)["step"] for line in rollouts_whole.splitlines()}) == \
        sorted({0, 1, 2, 3, 4, steps})  # train at 1, 2, 4(, 6); held-out at 0, 3 and the end
    assert rollouts_resumed == rollouts_whole, f"rollouts differ {where}"
    assert sorted(p.name for p in (tmp_path / "resumed" / "images").iterdir()) == \
        sorted(p.name for p in (tmp_path / "whole" / "images").iterdir())
    # both ranks' groups, in one order, each image written (by rank 0, from either rank's thumbnails)
    train = [json.loads(line) for line in rollouts_whole.splitlines() if '"kind": "train"' in line]
    assert [r["group"] for r in train if r["step"] == 1] == list(range(len([r for r in train if r["step"] == 1])))
    assert all((tmp_path / "whole" / p).is_file() for r in train for p in r["images"])

    resumed_from = [line for line in out.splitlines() if line.startswith("resumed from")]
    if killed_at >= 3:  # a whole checkpoint (step 2) existed before the kill
        assert resumed_from, f"no checkpoint was resumed {where}"
        assert f"resuming from step {int(resumed_from[-1].split('(step ')[1].split(')')[0])}" in out
        starts = json.loads((tmp_path / "resumed" / "run.json").read_text())["starts"]
        assert [s["start_step"] for s in starts][0] == 0 and starts[-1]["start_step"] > 0
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    # the last 2 kept, no temp folder left
    assert ckpts == [f"step-{steps - 2:08d}", f"step-{steps:08d}"], ckpts

    a = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    # `mm-gpg export` consolidates the ZeRO checkpoint (fp32 partitions of both ranks) into the
    # same weights as the final model
    from mm_gpg.cli import main
    assert main(["export", str(tmp_path / "resumed" / "checkpoints"), str(tmp_path / "exported")]) == 0
    c = load_file(tmp_path / "exported" / "model.safetensors")
    assert c.keys() == a.keys() and all(a[k].equal(c[k]) for k in a)


def test_resume_picks_the_newest_whole_checkpoint_and_names_a_bad_path(tmp_path):
    """auto: the newest folder with its trainer_state.json (a temp folder or one without the
    state file is a half-written checkpoint); none: start fresh; a bad path: a clear error."""
    from mm_gpg.checkpoint import STATE_FILE, resolve_resume, write_manifest
    root = tmp_path / "checkpoints"
    assert resolve_resume("auto", root) is None and resolve_resume(None, root) is None
    for name, whole in (("step-00000002", True), ("step-00000004", True), ("step-00000006", False),
                        (".tmp-step-00000008", True)):
        (root / name).mkdir(parents=True)
        if whole:
            (root / name / STATE_FILE).write_text("{}")
            write_manifest(root / name)
    assert resolve_resume("auto", root) == root / "step-00000004"
    assert resolve_resume(str(root / "step-00000002"), root) == root / "step-00000002"
    assert resolve_resume(str(root), root) == root / "step-00000004"  # a checkpoints folder: its newest
    with pytest.raises(FileNotFoundError, match=r"step-00000006.*not a complete checkpoint.*step-00000004"):
        resolve_resume(str(root / "step-00000006"), root)
