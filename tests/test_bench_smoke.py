"""Fast checks of the benchmark scripts' plumbing (bench/vs_trl.py, bench/learning_curves.py); the
benchmarks themselves are run by hand (they print ratios, they are not pass/fail tests)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import learning_curves, vs_trl  # noqa: E402
from bench._common import DEFAULT_CONFIG, machine_state, median, spread  # noqa: E402
from mm_gpg.config import load_config  # noqa: E402


def _spec(**kw):
    spec = {"checkpoint": "runs/x", "config": str(DEFAULT_CONFIG), "steps": 3, "prompts": 4, "group": 2,
            "max_new_tokens": 8, "temperature": 0.9, "lr": 1e-4, "warmup_steps": 0, "seed": 1,
            "reward_workers": 1, "ours_algorithm": "reinforce", "gpg_min_valid_fraction": 0.0, "repeats": 1}
    spec.update(kw)
    return spec


def test_vs_trl_overrides_give_our_trainer_the_same_work():
    config = load_config(DEFAULT_CONFIG, vs_trl.work_overrides(_spec()))
    assert (config.train.steps, config.train.prompts_per_step, config.train.micro_batch_groups) == (3, 4, 4)
    assert (config.rollout.group_size, config.rollout.max_new_tokens, config.rollout.temperature) == (2, 8, 0.9)
    assert (config.rollout.top_k, config.rollout.top_p, config.train.lr, config.train.warmup_steps) == (0, 1.0, 1e-4, 0)
    assert config.warmstart.steps == 0 and config.eval.every == 0 and not config.eval.before_training


def test_vs_trl_summary_and_table():
    run = {"step_times": [5.0, 1.0, 2.0, 3.0], "cpu_times": [4.0, 1.0, 1.0, 1.0], "tokens": [10, 10, 20, 30],
           "rewards": [0.0, 0.1, 0.2, 0.3], "peak_rss_mb": 100.0, "load_before": {"load_1m": 1.0}}
    s = vs_trl.summarize_run(run, last=2)
    assert s["median_step_s"] == 2.0  # the warm-up step is dropped
    assert s["tokens_per_s"] == pytest.approx(60 / 6)
    assert s["reward_last"] == pytest.approx(0.25)
    summary = {"ours": {**s, "median_cpu_s": 1.0}, "trl": {**s, "median_step_s": 4.0, "median_cpu_s": 2.0},
               "ratio_step_time": 0.5, "ratio_paired": 0.5, "ratio_cpu": 0.5, "ratio_cpu_paired": 0.5,
               "ratio_tokens_per_s": 2.0, "ratio_rss": 1.0, "load_range": "1-2", "trl_version": "x"}
    text = vs_trl.markdown_table(summary, _spec())
    assert "**0.50x**" in text and "| mm-gpg |" in text and "TRL GRPOTrainer" in text
    assert median([3, 1, 2]) == 2 and spread([1.0]) == 0.0 and machine_state()["cpus"] >= 1


def _write_run(d: Path, accs, valid=(0.5, 0.75, 1.0)):
    d.mkdir(parents=True)
    lines = [{"step": 0, "heldout/accuracy": accs[0]}]
    for i, v in enumerate(valid, 1):
        lines.append({"step": i, "reward/accuracy": 0.1 * i, "alpha": 1 / v, "groups/valid_fraction": v,
                      "groups/valid_fraction_first_draw": v, "groups/draws": 1})
    lines.append({"step": len(valid), "heldout/accuracy": accs[1]})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_learning_curves_table_plot_and_config(tmp_path):
    dirs = []
    for s, accs in enumerate([(0.2, 0.4), (0.2, 0.6)]):
        dirs.append(tmp_path / f"gpg_s{s}")
        _write_run(dirs[-1], accs)
    results = {"gpg": {"lr": 1e-4, "dirs": dirs, "prompts": 2, "group": 4}}
    steps, mean, std = learning_curves.curves(dirs, "heldout/accuracy", heldout=True)
    assert steps == [0, 3] and mean == pytest.approx([0.2, 0.5]) and std[1] == pytest.approx(0.1414, abs=1e-3)
    text = learning_curves.table(results, {"gpg": {1e-4: 0.3, 2e-4: 0.1}}, "settings")
    assert "**0.500 ± 0.141**" in text and "0.0001: 0.300" in text
    assert "valid fraction" in text
    pytest.importorskip("matplotlib")
    learning_curves.plot(results, tmp_path / "plot.png", "t")
    assert (tmp_path / "plot.png").stat().st_size > 1000

    class Args:
        steps, prompts, group, warmup_steps, eval_every, heldout_per_task = 5, 4, 2, 0, 2, 3
        gpg_min_valid_fraction = None
    path = learning_curves.run_config(str(DEFAULT_CONFIG), "/ckpt", "grpo", 3e-4, 2, Args, tmp_path / "run")
    config = load_config(path)
    assert (config.algorithm.name, config.train.lr, config.train.seed, config.train.steps) == ("grpo", 3e-4, 2, 5)
    assert config.model.path == "/ckpt" and config.warmstart.steps == 0 and config.eval.every == 2
    assert all(e["options"]["size"] == 3 for e in config.data.heldout)
