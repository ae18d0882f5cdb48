"""`mm-gpg eval` end to end: the synthetic suite on the tiny model (offline), the cross_modal suite
on fixture files in the official schemas, kill -9 and --resume, crash containment, n > 1, the
training-time SuiteEvaluator and `eval compare`.

Budget: the whole eval test set stays well under 90 s on 2 shared cores: few samples, batches of
2, at most 6 new tokens, one subprocess (the one that is killed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from data_prep.registry import register_source
from data_prep.schema import Sample
from data_prep.synthetic import SyntheticTask
from eval.cli import main
from eval.in_training import SuiteEvaluator, chain_evaluators
from eval.runner import PREDICTIONS, REPORT_JSON, REPORT_MD, STALL_ENV, SuiteRun
from eval.suite import load_suite
from fixtures_data import hub
from fixtures_data.sat_cvbench import write_cvbench
from mm_gpg.distributed import Dist
from mm_gpg.rollout import Completion

REPO = Path(__file__).resolve().parent.parent
datasets.disable_progress_bars()

SYNTHETIC = ["--suite", "synthetic", "--limit", "2", "--batch-size", "2", "--max-new-tokens", "6",
             "--workers", "0", "--bootstrap", "200", "--quiet"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Every cross_modal benchmark as fixture files in its official schema, laid out as
    `--data-root` expects (one folder per benchmark, named like the suite entry)."""
    root = tmp_path_factory.mktemp("benchmarks")
    hub.write_geometry3k(str(root / "geometry3k"), split="test")
    hub.write_mathvista(str(root / "mathvista"))
    hub.write_mathverse(str(root / "mathverse"))
    hub.write_geoqa_eval(str(root / "geoqa"))            # R1-V's geoqa_test_prompts.jsonl + images/
    hub.write_superclevr(str(root / "superclevr"))       # R1-V's counting rows + images/
    hub.write_chartqa(str(root / "chartqa"))
    hub.write_vqav2(str(root / "vqav2"))
    hub.write_scienceqa(str(root / "scienceqa"))
    hub.write_mmmu(str(root / "mmmu"))
    write_cvbench(str(root / "cv_bench"))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from mm_gpg.policy import load_policy
    return load_policy(str(tiny_model_dir))


class OracleEngine:
    """Answers every prompt with its gold answer in R1 format (checks scoring end to end);
    raises for the sample ids in `fail_ids`."""

    shares_learner_weights = True

    def __init__(self, fail_ids=()):
        self.fail_ids = set(fail_ids)
        self.calls = 0

    def generate(self, prompts, n, sampling):
        self.calls += 1
        for p in prompts:
            if p.sample.id in self.fail_ids:
                raise RuntimeError(f"engine exploded on {p.sample.id}")
        return [[Completion([], f"<think>looked</think><answer>{p.sample.answer}</answer>", "stop")] * n
                for p in prompts]


def oracle_run(suite, out, policy, engine, **kw):
    run = SuiteRun(suite, model="oracle", output_dir=out, workers=0, n_boot=100, quiet=True, **kw)
    run.policy, run.engine = policy, engine
    return run.run()


# --- the synthetic suite, kill -9 and --resume ---------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "a"
    assert main(["--model", str(tiny_model_dir), *SYNTHETIC, "--output", str(out)]) == 0
    return out


def test_synthetic_suite_on_the_tiny_model(uninterrupted, tiny_model_dir):
    report = json.loads((uninterrupted / REPORT_JSON).read_text())
    assert report["suite"] == "synthetic" and report["model"] == str(tiny_model_dir)
    assert list(report["benchmarks"]) == ["count_shapes", "bar_compare", "segment_sum"]
    for name, e in report["benchmarks"].items():
        assert e["status"] == "ok" and e["n"] == 2 and e["k"] == 1 and len(e["predictions"]) == 2
        assert 0.0 <= e["accuracy"] <= 1.0 and e["ci95"][0] <= e["accuracy"] <= e["ci95"][1]
        assert e["parse_failures"] + e["timeouts"] <= 2 and e["errors"] == 0
        for p in e["predictions"]:
            assert p["benchmark"] == name and len(p["responses"]) == 1 and p["finish_reasons"][0] in ("stop", "length")
            assert p["verifiers"] == [{"count_shapes": "numeric", "bar_compare": "multiple_choice",
                                       "segment_sum": "math"}[name]]
    assert report["benchmarks"]["count_shapes"]["categories"]["color"]  # categories broken down
    md = (uninterrupted / REPORT_MD).read_text()
    assert md.startswith("# Eval report: suite `synthetic`") and "## count_shapes" in md and "### by color" in md
    lines = (uninterrupted / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 6


def test_kill_9_then_resume_gives_the_uninterrupted_report(uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "b"
    args = ["--model", str(tiny_model_dir), *SYNTHETIC, "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), STALL_ENV: "1"}  # stop making progress after 1 batch
    proc = subprocess.Popen([sys.executable, "-m", "mm_gpg.cli", "eval", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    preds = out / PREDICTIONS
    deadline = time.monotonic() + 240
    try:
        while not (preds.exists() and len(preds.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the eval never wrote its first batch"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / REPORT_JSON).exists()
    assert len(preds.read_text().splitlines()) == 2           # one batch of the six samples on disk
    with open(preds, "a") as f:                                # and a line torn mid-write
        f.write('{"benchmark": "bar_compare", "index": 0, "resp')
    assert main(args + ["--resume"]) == 0
    assert (out / REPORT_JSON).read_bytes() == (uninterrupted / REPORT_JSON).read_bytes()
    assert (out / REPORT_MD).read_bytes() == (uninterrupted / REPORT_MD).read_bytes()
    assert len(preds.read_text().splitlines()) == 6
    # resuming a finished run re-scores nothing and writes the same report again
    assert main(args + ["--resume"]) == 0
    assert (out / REPORT_JSON).read_bytes() == (uninterrupted / REPORT_JSON).read_bytes()


def test_sampling_n_gives_mean_and_pass_at_k_reproducibly(tiny_model_dir, tmp_path, capsys):
    suite = tmp_path / "sampled.yaml"
    suite.write_text("name: sampled\nbenchmarks:\n"
                     "  - {name: count, source: synthetic, split: heldout, options: {tasks: [count_shapes], size: 2},\n"
                     "     min_pixels: 12544, max_pixels: 12544, batch_size: 2,\n"
                     "     sampling: {n: 2, temperature: 1.0, max_new_tokens: 4}}\n")
    args = ["--model", str(tiny_model_dir), "--suite", str(suite), "--workers", "0", "--bootstrap", "100", "--quiet"]
    assert main(args + ["--output", str(tmp_path / "s1")]) == 0
    assert main(args + ["--output", str(tmp_path / "s2")]) == 0
    one = json.loads((tmp_path / "s1" / REPORT_JSON).read_text())
    assert (tmp_path / "s1" / REPORT_JSON).read_bytes() == (tmp_path / "s2" / REPORT_JSON).read_bytes()
    e = one["benchmarks"]["count"]
    assert e["k"] == 2 and "pass_at_k" in e and e["pass_at_k"] >= e["accuracy"]
    assert all(len(p["responses"]) == 2 for p in e["predictions"])
    assert any(len(set(p["responses"])) == 2 for p in e["predictions"])  # sampled, not greedy copies


# --- the cross_modal suite on official-schema fixtures --------------------------------------------


def test_cross_modal_suite_on_fixtures_with_the_tiny_model(tiny_model_dir, data_root, cache, tmp_path):
    out = tmp_path / "cm"
    assert main(["--model", str(tiny_model_dir), "--suite", "cross_modal", "--data-root", str(data_root),
                 "--cache-dir", cache, "--limit", "1", "--max-new-tokens", "4", "--batch-size", "2",
                 "--workers", "0", "--bootstrap", "100", "--output", str(out), "--quiet"]) == 0
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["summary"]["failed"] == [] and report["summary"]["benchmarks"] == 10
    for name, e in report["benchmarks"].items():
        assert e["status"] == "ok" and e["n"] == 1 and e["errors"] == 0, (name, e.get("error"))
        assert e["verifier"] == {"name": "accuracy", "mode": "official"}
    md = (out / REPORT_MD).read_text()
    assert all(f"## {name}" in md for name in report["benchmarks"])


def test_cross_modal_official_rules_end_to_end(policy, data_root, cache, tmp_path):
    """Every fixture sample answered with its gold scores 1 under its benchmark's official rule,
    routed through the suite exactly as a model's answers are; categories come from the records."""
    suite = load_suite("cross_modal", data_root=str(data_root))
    for b in suite.benchmarks:
        b.batch_size = 8
    report, code = oracle_run(suite, tmp_path / "oracle", policy, OracleEngine(), cache_dir=cache)
    assert code == 0
    sizes = {"geometry3k": 4, "mathvista": 4, "mathverse": 4, "geoqa": 3, "superclevr": 3, "chartqa": 3,
             "vqav2": 3, "scienceqa": 2, "mmmu": 3, "cv_bench": 6}
    for name, e in report["benchmarks"].items():
        assert (e["n"], e["accuracy"], e["parse_failures"], e["errors"]) == (sizes[name], 1.0, 0, 0), name
    routes = {name: {v for p in e["predictions"] for v in p["verifiers"]} for name, e in report["benchmarks"].items()}
    assert routes["mathvista"] == {"mathvista"} and routes["vqav2"] == {"vqa"} and routes["chartqa"] == {"relaxed"}
    assert routes["mmmu"] == {"mmmu"} and routes["scienceqa"] == {"scienceqa"} and routes["superclevr"] == {"numeric"}
    assert routes["mathverse"] == {"multiple_choice", "math"} and routes["geoqa"] == {"math"}
    cats = {name: e["categories"] for name, e in report["benchmarks"].items()}
    assert set(cats["mathverse"]["problem_version"]) == {"Text Dominant", "Vision Only", "Vision Dominant", "Text Lite"}
    assert set(cats["vqav2"]["answer_type"]) == {"other", "yes/no", "number"}
    assert cats["mathvista"]["task_name"]["figure question answering"]["n"] == 2
    assert cats["mathvista"]["skills"]["numeric commonsense"]["n"] == 1
    assert set(cats["chartqa"]["human_or_machine"]) == {"human", "machine"}
    assert set(cats["mmmu"]["question_type"]) == {"multiple-choice", "open"} and set(cats["mmmu"]["subject"]) == {"Art"}
    assert routes["cv_bench"] == {"multiple_choice"} and set(cats["cv_bench"]["source"]) == {"ADE20K", "COCO", "Omni3D"}
    assert report["benchmarks"]["cv_bench"]["official"]["overall"] == 1.0  # CV-Bench's own overall, all right
    assert "official scores: overall 100.0 (2D 100.0, 3D 100.0), all questions 100.0, Count 100.0" in \
        (tmp_path / "oracle" / REPORT_MD).read_text()


def test_a_missing_source_and_crashing_samples_do_not_lose_the_run(policy, data_root, cache, tmp_path):
    suite_file = tmp_path / "flaky.yaml"
    suite_file.write_text(
        "name: flaky\ndefaults: {min_pixels: 3136, max_pixels: 3136, batch_size: 4,\n"
        "  sampling: {max_new_tokens: 4}}\nbenchmarks:\n"
        "  - {source: eval_test_flaky}\n"
        "  - {source: superclevr, options: {path: /nonexistent/superclevr_test200.jsonl}}\n"
        "  - {source: chartqa, split: test}\n")
    suite = load_suite(str(suite_file), data_root=str(data_root))
    engine = OracleEngine(fail_ids={"flaky-3"})
    report, code = oracle_run(suite, tmp_path / "out", policy, engine, cache_dir=cache)
    assert code == 1                                            # a benchmark failed: say so
    bad = report["benchmarks"]["superclevr"]
    assert bad["status"] == "failed" and "/nonexistent/superclevr_test200.jsonl" in bad["error"]
    assert report["summary"]["failed"] == ["superclevr"]
    assert report["benchmarks"]["chartqa"]["accuracy"] == 1.0   # the rest finished
    e = report["benchmarks"]["eval_test_flaky"]
    errors = {p["index"]: p["error"] for p in e["predictions"]}
    assert errors[0] is None and e["predictions"][0]["score"] == 1.0
    assert errors[1].startswith("loading the sample failed: ValueError: record 1 is broken")
    assert errors[2].startswith("building the prompt failed: ValueError:") and "cannot read image" in errors[2]
    assert errors[3] == "generation failed: RuntimeError: engine exploded on flaky-3"
    assert (e["n"], e["errors"], e["accuracy"]) == (4, 3, 0.25)  # failed samples count as wrong
    text = (tmp_path / "out" / REPORT_MD).read_text()
    assert "3 sample(s) failed before scoring" in text and "FAILED" in text


def test_verifier_timeouts_are_counted(policy, tmp_path):
    """A verifier call past the hard time limit scores 0 and is counted, and the run goes on."""
    suite_file = tmp_path / "slow.yaml"
    suite_file.write_text(
        "name: slow\nbenchmarks:\n"
        "  - {name: slow, source: synthetic, split: heldout, options: {tasks: [count_shapes], size: 2},\n"
        f"     verifier: {{fn: '{REPO}/tests/fixtures/rewards/user_reward.py:hang'}},\n"
        "     min_pixels: 12544, max_pixels: 12544, batch_size: 2, sampling: {max_new_tokens: 4}}\n")

    class HangOnFirst(OracleEngine):
        def generate(self, prompts, n, sampling):
            return [[Completion([], "hang" if p.sample.id.endswith("-0") else "fine", "stop")] * n for p in prompts]

    run = SuiteRun(load_suite(str(suite_file)), model="scripted", output_dir=tmp_path / "out", workers=1,
                   timeout_s=1.0, n_boot=100, quiet=True)
    run.policy, run.engine = policy, HangOnFirst()
    report, code = run.run()
    e = report["benchmarks"]["slow"]
    assert code == 0 and (e["n"], e["timeouts"], e["accuracy"]) == (2, 1, 0.5)
    first, second = e["predictions"]
    assert (first["timeouts"], first["score"], first["verdicts"][0]["timeout"]) == (1, 0.0, True)
    assert (second["timeouts"], second["score"]) == (0, 1.0)


class Flaky:
    """Sample 1 cannot be built, sample 2 has an unreadable image, the rest are fine."""

    def __init__(self, size):
        self.base = SyntheticTask("count_shapes", split="heldout", size=size)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == 1:
            raise ValueError("record 1 is broken")
        s = self.base[i]
        s = Sample(id=f"flaky-{i}", images=s.images, question=s.question, answer=s.answer,
                   answer_type=s.answer_type, task="flaky")
        if i == 2:
            s.images = [b"not an image"]
        return s


def _flaky_source(size: int = 4):
    return Flaky(size)


try:
    register_source("eval_test_flaky")(_flaky_source)
except ValueError:  # this module imported twice in one process
    pass


# --- evaluation during training, and compare --------------------------------------------------------


def test_suite_evaluator_for_the_trainer(policy, tmp_path):
    logged = []
    with SuiteEvaluator("synthetic", policy.processor, dist=Dist(0, 1), limit=2, max_new_tokens=4, reward_workers=0,
                        overrides=["defaults.batch_size=4", "segment_sum.options.path=/nonexistent"],
                        output_dir=str(tmp_path), log=logged.append) as evaluator:
        engine = OracleEngine()
        metrics = chain_evaluators(evaluator, None, lambda engine, step: {"heldout/accuracy": 0.5})(engine, 10)
    assert metrics.pop("heldout/accuracy") == 0.5
    assert metrics == {"suite/count_shapes/accuracy": 1.0, "suite/count_shapes/parse_failure_rate": 0.0,
                       "suite/count_shapes/errors": 0.0, "suite/count_shapes/n": 2.0,
                       "suite/bar_compare/accuracy": 1.0, "suite/bar_compare/parse_failure_rate": 0.0,
                       "suite/bar_compare/errors": 0.0, "suite/bar_compare/n": 2.0, "suite/accuracy": 1.0}
    assert engine.calls == 2                                    # prompts batched per benchmark
    assert len(logged) == 1 and "segment_sum left out" in logged[0]
    step = json.loads((tmp_path / "step_000010.json").read_text())
    assert step["benchmarks"]["count_shapes"]["accuracy"] == 1.0 and step["summary"]["failed"] == ["segment_sum"]


def test_compare_two_runs(uninterrupted, policy, tmp_path, capsys):
    suite = load_suite("synthetic")
    for b in suite.benchmarks:
        b.limit, b.batch_size = 2, 2
    oracle_run(suite, tmp_path / "oracle", policy, OracleEngine())
    a, b = str(uninterrupted / REPORT_JSON), str(tmp_path / "oracle" / REPORT_JSON)
    assert main(["compare", a, a, "--bootstrap", "100", "--output", str(tmp_path / "same.json")]) == 0
    same = json.loads((tmp_path / "same.json").read_text())["benchmarks"]
    assert all(e["delta"] == 0.0 and not e["significant"] for e in same.values())
    assert main(["compare", a, b, "--bootstrap", "100", "--output", str(tmp_path / "diff.json")]) == 0
    printed = capsys.readouterr().out
    diff = json.loads((tmp_path / "diff.json").read_text())
    for name, e in diff["benchmarks"].items():
        assert e["n_paired"] == 2 and e["b"] == 1.0 and e["delta"] == round(1.0 - e["a"], 6)
    assert "count_shapes" in printed and "color=" in printed
    assert main(["compare", a, str(tmp_path / "nope.json")]) == 2


def test_lmms_eval_layout_beside_the_report(uninterrupted):
    """results.json and samples_<benchmark>.jsonl (issue 18, item 7), agreeing with report.json;
    and `mm-gpg view` of the folder holds every prediction."""
    report = json.loads((uninterrupted / REPORT_JSON).read_text())
    results = json.loads((uninterrupted / "results.json").read_text())
    assert list(results["results"]) == list(report["benchmarks"])
    for name, e in report["benchmarks"].items():
        task = results["results"][name]
        assert task["alias"] == name and task["accuracy,none"] == e["accuracy"]
        assert task["accuracy_stderr,none"] == pytest.approx((e["ci95"][1] - e["ci95"][0]) / 3.92, abs=1e-6)
        assert results["n-samples"][name]["effective"] == len(e["predictions"]) == 2
        assert results["configs"][name]["verifier"] == e["verifier"]
        lines = [json.loads(line) for line in (uninterrupted / f"samples_{name}.jsonl").read_text().splitlines()]
        assert [s["doc_id"] for s in lines] == [p["index"] for p in e["predictions"]]
        for s, p in zip(lines, e["predictions"]):
            assert s["resps"] == [p["responses"]] and s["target"] == p["gold"] and s["accuracy"] == p["score"]
            assert s["doc"]["question"] == p["question"]
    assert results["config"]["model"] == report["model"] and results["config"]["seed"] == report["seed"]
    from mm_gpg.view import build_page
    _, n_items = build_page(uninterrupted)
    assert n_items == report["summary"]["samples"] == 6
