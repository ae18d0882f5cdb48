"""Damaged checkpoints and histories (issue 16): a checkpoint's manifest (sizes, SHA-256, written
last) is verified before resuming; `resume: auto` skips a damaged checkpoint with a warning naming
the file and takes the newest intact one; an explicit damaged checkpoint is a one-line error
naming the file. The metrics history is cut back by step (records parsed, not byte offsets), and
a missing or unreadable history is an error unless `train.resume_without_history`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from test_distributed import build_trainer


def _fake_checkpoint(root: Path, step: int) -> Path:
    from mm_gpg.checkpoint import STATE_FILE, write_manifest
    folder = root / f"step-{step:08d}"
    (folder / "deepspeed").mkdir(parents=True)
    (folder / "rng").mkdir()
    torch.save({"module": {"w": torch.arange(64.0) * step}}, folder / "deepspeed" / "mp_rank_00_model_states.pt")
    torch.save({"torch": torch.get_rng_state()}, folder / "rng" / "rank-00000.pt")
    (folder / STATE_FILE).write_text(json.dumps({"step": step}))
    write_manifest(folder)
    return folder


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":  # same size, other bytes: only the checksum tells
        path.write_bytes(bytes((b + 1) % 256 for b in data))
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "missing"])
@pytest.mark.parametrize("victim", ["deepspeed/mp_rank_00_model_states.pt", "rng/rank-00000.pt",
                                    "trainer_state.json", "manifest.json"])
def test_auto_skips_a_damaged_checkpoint_and_an_explicit_one_is_an_error_naming_the_file(tmp_path, how, victim):
    from mm_gpg.checkpoint import CheckpointError, resolve_resume
    root = tmp_path / "checkpoints"
    _fake_checkpoint(root, 2)
    newest = _fake_checkpoint(root, 4)
    assert resolve_resume("auto", root) == newest
    _damage(newest / victim, how)
    warnings: list[str] = []
    if victim == "trainer_state.json" and how == "missing":  # a half-written checkpoint: passed over quietly
        assert resolve_resume("auto", root, warn=warnings.append) == root / "step-00000002" and not warnings
        with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
            resolve_resume(str(newest), root)
        return
    assert resolve_resume("auto", root, warn=warnings.append) == root / "step-00000002"
    assert len(warnings) == 2 and Path(victim).name in warnings[0] and "step-00000004" in warnings[0]
    assert "step-00000002" in warnings[1]
    with pytest.raises(CheckpointError) as info:
        resolve_resume(str(newest), root)
    message = str(info.value)
    assert "\n" not in message and str(newest / victim) in message and isinstance(info.value, ValueError)


def test_auto_with_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    from mm_gpg.checkpoint import CheckpointError, resolve_resume
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        _damage(_fake_checkpoint(root, step) / "rng" / "rank-00000.pt", "truncated")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*step-00000004.*rank-00000\.pt"):
        resolve_resume("auto", root, warn=lambda text: None)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, dist, tmp_path_factory):
    """A 3-step run with a checkpoint after every step and its metrics."""
    out = tmp_path_factory.mktemp("run")
    build_trainer(dist, tiny_model_dir, out, steps=3, checkpoint_every=1, keep_checkpoints=0).fit()
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_auto_falls_back_past_a_truncated_model_file_and_continues(finished_run, tiny_model_dir, dist,
                                                                         tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    assert _steps(out) == [1, 2, 3]
    for name in ("step-00000001", "step-00000002", "step-00000003"):
        assert (out / "checkpoints" / name / "manifest.json").is_file()
    _damage(out / "checkpoints" / "step-00000003" / "deepspeed" / "mp_rank_00_model_states.pt", "truncated")
    trainer = build_trainer(dist, tiny_model_dir, out, steps=4, checkpoint_every=1, keep_checkpoints=0,
                            resume="auto")
    assert trainer.resumed_from == out / "checkpoints" / "step-00000002" and trainer.state.step == 2
    err = capsys.readouterr().err
    assert "warning" in err and "mp_rank_00_model_states.pt" in err and "step-00000003" in err
    assert _steps(out) == [1, 2]
    trainer.fit()
    assert _steps(out) == [1, 2, 3, 4]


def test_metrics_are_cut_back_by_record_after_the_file_was_edited(finished_run, tiny_model_dir, dist, tmp_path):
    """Line 1 rewritten shorter and a torn line appended: byte offsets would merge records; the
    records themselves are kept up to the checkpoint's step, all of them valid JSON."""
    out = _copy(finished_run, tmp_path)
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({"step": 1, "loss": first["loss"]}, separators=(",", ":"))  # much shorter
    path.write_text("\n".join(lines) + "\n" + '{"step": 3, "loss"')
    build_trainer(dist, tiny_model_dir, out, steps=3, resume=str(out / "checkpoints" / "step-00000002"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[0] == {"step": 1, "loss": first["loss"]}


def test_a_deleted_history_is_an_error_unless_the_run_allows_it(finished_run, tiny_model_dir, dist, tmp_path,
                                                                capsys):
    from mm_gpg.metrics import HistoryError
    out = _copy(finished_run, tmp_path)
    (out / "metrics.jsonl").unlink()
    with pytest.raises(HistoryError, match=r"metrics\.jsonl.*resume_without_history"):
        build_trainer(dist, tiny_model_dir, out, steps=3, resume="auto")
    (out / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(HistoryError, match=r"metrics\.jsonl:2: not a metrics record"):
        build_trainer(dist, tiny_model_dir, out, steps=3, resume="auto")
    trainer = build_trainer(dist, tiny_model_dir, out, steps=4, resume="auto", resume_without_history=True)
    assert trainer.state.step == 3 and "resume_without_history" in capsys.readouterr().err
    trainer.fit()
    assert _steps(out) == [1, 4]  # the readable record before the damage, then the new step
