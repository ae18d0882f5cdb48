"""Reward failures are visible (issue 16): a plug-in reward that raises, returns NaN, a value
outside [0, 1] or a string, sleeps past the limit, exits or segfaults scores 0 as documented, and
each failure is counted per component (`reward/errors/NAME`, `reward/timeouts/NAME`, worker
restarts) with a warning line when a component fails on more than 5 % of a step's responses;
math-verify's own internal timeouts are counted, not printed as bare lines."""
from __future__ import annotations

import json

import pytest

from data_prep.schema import Sample

PLUGIN = '''import math, os, signal, time


def behave(response, sample):
    kind = response.split()[0]
    if kind == "raise":
        raise RuntimeError("plug-in broke")
    if kind == "nan":
        return math.nan
    if kind == "five":
        return 5.0
    if kind == "string":
        return "1.0"
    if kind == "sleep":
        time.sleep(30)
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    return 1.0


def wide(response, sample):
    return 5.0
'''


def _sample(i: int = 0) -> Sample:
    return Sample(id=f"s{i}", images=[], question="q", answer="1", answer_type="integer")


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "plugin.py"
    path.write_text(PLUGIN)
    return str(path)


def test_every_way_a_plugin_can_fail_is_counted_as_an_error_or_timeout(plugin):
    from rewards.scorer import build_scorer
    kinds = ["ok", "raise", "nan", "five", "string", "sleep", "exit", "segfault", "ok"]
    with build_scorer([{"fn": f"{plugin}:behave", "component": "mine"}], timeout_s=1.0, num_workers=1) as scorer:
        results = scorer.score([f"{k} x" for k in kinds], [_sample(i) for i in range(len(kinds))])
    failed = [r.info.get("failed", {}).get("mine") for r in results]
    assert failed == [None, "error", "error", "error", "error", "timeout", "error", "error", None]
    assert [r.score for r in results] == [1.0, 0, 0, 0, 0, 0, 0, 0, 1.0]
    assert "outside [0, 1]" in results[3].info["error"]["mine"]
    assert "str" in results[4].info["error"]["mine"]
    assert scorer.stats["worker_restarts"] == 3  # sleep (killed), exit, segfault
    assert scorer.stats["errors"] == 6 and scorer.stats["timeouts"] == 1


def test_a_spec_may_declare_a_wider_range(plugin):
    from rewards.scorer import build_scorer
    with build_scorer([{"fn": f"{plugin}:wide", "component": "wide", "range": [0, 10]}], num_workers=0) as scorer:
        assert scorer.score(["a"], [_sample()])[0].score == 5.0
    with pytest.raises(ValueError, match=r"rewards\[0\]: key 'range'"):
        build_scorer([{"fn": f"{plugin}:wide", "range": [1, 0]}], num_workers=0)


def test_failures_reach_the_step_metrics_with_a_warning(plugin, dist):
    import torch
    from rewards.scorer import build_scorer
    from mm_gpg.trainer import Group, failure_warnings, reward_failures, step_metrics
    from mm_gpg.rollout import Completion
    specs = [{"fn": f"{plugin}:behave", "component": "mine"}, {"name": "format_r1", "weight": 0.1}]
    texts = ["raise"] + ["ok"] * 19  # 1 of 20 fails: 5 %, no warning yet
    with build_scorer(specs, num_workers=0) as scorer:
        results = scorer.score(texts, [_sample(i) for i in range(20)])
    groups = [Group(None, [Completion([1], t, "stop") for t in texts[k:k + 4]],
                    torch.tensor([r.score for r in results[k:k + 4]]), {}, reward_failures(results[k:k + 4]))
              for k in range(0, 20, 4)]
    metrics = step_metrics(groups, dist, worker_restarts=2)
    assert metrics["reward/errors/mine"] == 1 and metrics["reward/timeouts/mine"] == 0
    assert metrics["reward/errors/format"] == 0 and metrics["reward/worker_restarts"] == 2
    assert failure_warnings(7, metrics, groups) == []
    groups[1].failures["mine"]["timeouts"] = 1  # 2 of 20: 10 %
    lines = failure_warnings(7, step_metrics(groups, dist), groups)
    assert len(lines) == 1 and "step 7" in lines[0] and "'mine'" in lines[0] and "2 of 20" in lines[0]
    assert "plug-in broke" in lines[0]


def test_a_training_step_logs_reward_errors_and_warns(plugin, tiny_model_dir, dist, tmp_path, capsys):
    from rewards.scorer import build_scorer
    from test_distributed import build_trainer
    trainer = build_trainer(dist, tiny_model_dir, tmp_path, steps=1)
    trainer.config.algorithm.max_draws = 1
    # FakeEngine's completions are numbers: "raise"-free, so make the plug-in fail on all of them
    (tmp_path / "always.py").write_text("def broken(response, sample):\n    raise KeyError('answer')\n")
    with build_scorer([{"fn": f"{tmp_path / 'always.py'}:broken", "component": "accuracy"}],
                      num_workers=0) as scorer:
        trainer.scorer = scorer
        trainer.fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["reward/errors/accuracy"] == record["reward/responses"] == 16
    assert record["reward/timeouts/accuracy"] == 0 and record["reward/worker_restarts"] == 0
    err = capsys.readouterr().err
    assert "warning: step 1: reward component 'accuracy' failed on 16 of 16" in err and "KeyError" in err


def test_math_verify_internal_timeouts_are_counted_not_printed(tmp_path, monkeypatch, capfd):
    """math-verify's own signal-based limit (1 s here) fires inside a comparison made slow on
    purpose: the score summary counts it and no bare "Timeout during comparison" line appears."""
    import time
    import math_verify.grader
    from eval.score import main
    from rewards.verifiers import math as math_verifier
    real = math_verify.grader.sympy_expr_eq

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", slow)
    monkeypatch.setattr(math_verifier, "INTERNAL_TIMEOUT_S", 1)
    math_verifier._equivalent.cache_clear()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"response": "<answer>\\sqrt{2}/2</answer>", "answer": "\\frac{1}{\\sqrt{2}}",
                               "answer_type": "math"}) + "\n")
    try:
        assert main([str(src), "--verifier", "math", "-o", str(dst), "--workers", "0"]) == 0
    finally:
        math_verifier._equivalent.cache_clear()
    out, err = capfd.readouterr()
    assert "timeouts 1" in out and "Timeout during" not in out + err  # the summary goes to stdout
    assert json.loads(dst.read_text())["timeout"] is True
