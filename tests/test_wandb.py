"""W&B next to TensorBoard (issue 18, item 5), offline: `logging.wandb: {project, mode: offline}`
gets the config, the metrics and the rollouts as tables, under OUTPUT_DIR/wandb."""
import json
import os

import pytest

from test_cli_train import REPO, run_cli, tiny_overrides

if os.environ.get("CI") != "true":  # CI installs the extra (README's test command): there it must run
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")


def test_offline_run_gets_config_metrics_and_rollout_tables(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
                     *tiny_overrides(tmp_path, tiny_model_dir), "warmstart.steps=0",
                     "logging.wandb={project: mm-gpg-test, mode: offline}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    run_id = (run / "wandb_run_id").read_text().strip()
    [folder] = (run / "wandb").glob(f"offline-run-*-{run_id}")
    # the run's records (W&B's own binary log): the project, the config and the metric names
    log = (folder / f"run-{run_id}.wandb").read_bytes()
    for needle in (b"mm-gpg-test", b"rollouts_every", b"prompts_per_step", b"reward/mean", b"groups/valid_fraction"):
        assert needle in log, needle
    # the rollout tables: one row per completion, as in rollouts.jsonl
    records = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    tables = {p.name.rsplit("_", 1)[0]: json.loads(p.read_text())
              for p in (folder / "files" / "media" / "table" / "rollouts").glob("*.table.json")}
    assert sorted(tables) == ["eval_0", "eval_2", "train_1"]
    for name, table in tables.items():
        kind, step = name.split("_")
        mine = [r for r in records if r["kind"] == kind and r["step"] == int(step)]
        assert len(table["data"]) == sum(len(r["completions"]) for r in mine) > 0
        column = table["columns"].index("reward")
        assert [row[column] for row in table["data"]] == [c["reward"] for r in mine for c in r["completions"]]


def test_bad_wandb_settings_are_one_line_errors(tmp_path):
    result = run_cli("train", "--check", "logging.wandb={project: p, mode: offlin}", cwd=tmp_path)
    assert result.returncode == 2
    assert "config key 'logging.wandb.mode': must be online, offline or disabled" in result.stderr
