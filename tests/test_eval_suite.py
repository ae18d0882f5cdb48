"""Eval suite definitions, metrics, reports and compare: pure functions, no model (milliseconds)."""
from __future__ import annotations

import json
import re

import pytest

from eval.cli import main
from eval.compare import compare_reports, render_comparison
from eval.core import batch_seed, categories_of, load_benchmark
from eval.metrics import bootstrap_ci, diff_ci, summarize
from eval.runner import MANIFEST, PREDICTIONS, read_predictions
from eval.suite import SuiteError, apply_run_options, load_suite, suite_names
from data_prep.schema import Sample


def write(path, text):
    path.write_text(text)
    return str(path)


# --- suites ----------------------------------------------------------------------------------


def test_builtin_suites_load_and_cover_the_issue():
    assert {"synthetic", "cross_modal"} <= set(suite_names())
    cm = load_suite("cross_modal")
    assert [b.name for b in cm.benchmarks] == ["geometry3k", "mathvista", "mathverse", "geoqa", "superclevr",
                                              "chartqa", "vqav2", "scienceqa", "mmmu", "cv_bench"]
    by = {b.name: b for b in cm.benchmarks}
    assert by["mathverse"].options["versions"] == ["Text Dominant", "Text Lite", "Vision Intensive",
                                                   "Vision Dominant", "Vision Only"]
    assert (by["mathvista"].split, by["mmmu"].split, by["scienceqa"].split) == ("testmini", "validation", "test")
    assert by["superclevr"].limit == 200 and by["vqav2"].subset == {"size": 5000, "seed": 0}
    assert by["mathvista"].categories == ["task_name", "skills"]
    for b in cm.benchmarks:  # official rules, greedy, no random anything
        assert b.verifier == {"name": "accuracy", "mode": "official"} and b.sampling.greedy and b.sampling.n == 1
        assert b.options["on_bad_record"] == "skip"
    syn = load_suite("synthetic")
    assert [b.name for b in syn.benchmarks] == ["count_shapes", "bar_compare", "segment_sum"]


def test_overrides_merge_defaults_then_entry_then_set():
    s = load_suite("cross_modal", ["defaults.sampling.max_new_tokens=64", "mathvista.options.path=/data/mv",
                                   "defaults.prompt_style=boxed", "mmmu.prompt_style=direct"])
    by = {b.name: b for b in s.benchmarks}
    assert all(b.sampling.max_new_tokens == 64 for b in s.benchmarks)
    assert by["mathvista"].options == {"on_bad_record": "skip", "path": "/data/mv"}
    assert by["geoqa"].prompt_style == "boxed" and by["mmmu"].prompt_style == "direct"
    apply_run_options(s, limit=3, n=4, temperature=0.7)
    assert by["superclevr"].limit == 3 and by["geometry3k"].limit == 3
    assert by["geoqa"].sampling.n == 4 and not by["geoqa"].sampling.greedy and by["geoqa"].sampling.temperature == 0.7


@pytest.mark.parametrize("text,message", [
    ("benchmarks:\n- {source: synthetic, promt_style: r1}\n", "unknown key 'promt_style' (did you mean 'prompt_style'?)"),
    ("benchmarks:\n- {source: mathvistaa}\n", "unknown data source 'mathvistaa' (did you mean 'mathvista'?)"),
    ("benchmarks:\n- {source: synthetic, sampling: {n: 4, greedy: true}}\n", "greedy decoding with n=4"),
    ("benchmarks:\n- {source: synthetic}\n- {source: synthetic}\n", "two benchmarks are named 'synthetic'"),
    ("benchmarks:\n- {source: synthetic, prompt_style: cot}\n", "unknown style 'cot'"),
    ("benchmarks:\n- {source: synthetic, verifier: {name: accuracy, modes: official}}\n", "unknown key 'modes'"),
    ("benchmark: []\n", "unknown key 'benchmark' (did you mean 'benchmarks'?)"),
])
def test_bad_suite_files_name_the_key(tmp_path, text, message):
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(write(tmp_path / "s.yaml", text))


def test_bad_names_and_sets():
    with pytest.raises(SuiteError, match="unknown suite 'cross_modl'.*'cross_modal'"):
        load_suite("cross_modl")
    with pytest.raises(SuiteError, match="no benchmark 'mathvsta'.*'mathvista'"):
        load_suite("cross_modal", ["mathvsta.limit=3"])
    with pytest.raises(SuiteError, match="expected key=value"):
        load_suite("cross_modal", ["limit"])
    with pytest.raises(SuiteError, match="no benchmark 'mmu'"):
        load_suite("cross_modal", only=["mmu"])


def test_data_root_points_entries_at_local_copies(tmp_path):
    (tmp_path / "geoqa" / "images").mkdir(parents=True)
    (tmp_path / "chartqa").mkdir()
    s = load_suite("cross_modal", ["mmmu.options.path=/elsewhere"], data_root=str(tmp_path))
    by = {b.name: b for b in s.benchmarks}
    assert by["geoqa"].options["path"] == str(tmp_path / "geoqa")
    assert by["geoqa"].options["image_dir"] == str(tmp_path / "geoqa" / "images")  # local_options, resolved
    assert by["chartqa"].options["path"] == str(tmp_path / "chartqa") and "image_dir" not in by["chartqa"].options
    assert "path" not in by["mathvista"].options          # no local copy: the hub default stays
    assert by["mmmu"].options["path"] == "/elsewhere"     # an explicit path wins


def test_subset_is_chosen_by_id_hash_and_limit_caps(tmp_path):
    suite = load_suite(write(tmp_path / "s.yaml", "benchmarks:\n- {source: synthetic, split: heldout, "
                             "options: {tasks: [count_shapes], size: 20}, subset: {size: 5, seed: 3}}\n"))
    b = suite.benchmarks[0]
    first, again = load_benchmark(b), load_benchmark(b)
    assert first.indices == again.indices and len(first.indices) == 5 and first.available == 20
    assert first.indices == sorted(first.indices)        # evaluated in source order
    b.subset = {"size": 5, "seed": 4}
    assert load_benchmark(b).indices != first.indices
    b.subset, b.limit = None, 3
    assert load_benchmark(b).indices == [0, 1, 2]


def test_batch_seeds_depend_on_run_seed_benchmark_and_position_only():
    assert batch_seed(0, "mathvista", 3) == batch_seed(0, "mathvista", 3)
    assert len({batch_seed(0, "mathvista", 3), batch_seed(1, "mathvista", 3), batch_seed(0, "mmmu", 3),
                batch_seed(0, "mathvista", 4)}) == 4
    assert 0 <= batch_seed(0, "x", 0) < 2 ** 31


def test_categories_prefer_the_benchmarks_own_fields():
    s = Sample(id="1", answer="2", answer_type="vqa", task="vqav2",
               meta={"answer_type": "number", "skills": ["a", "b"], "empty": None})
    assert categories_of(s, ["answer_type", "skills", "task", "empty", "absent"]) == \
        {"answer_type": "number", "skills": ["a", "b"], "task": "vqav2"}


# --- metrics ---------------------------------------------------------------------------------


def rec(scores, cats=None, **kw):
    base = {"score": sum(scores) / len(scores), "best": max(scores), "responses": ["x"] * len(scores),
            "parse_failures": 0, "timeouts": 0, "verifier_errors": 0, "truncated": 0, "format": None,
            "categories": cats or {}, "error": None, "index": 0, "id": None}
    base.update(kw)
    return base


def test_mean_and_pass_at_k_by_hand():
    # per-sample scores of k=2 answers: [1,0] [0,0] [1,1]
    # mean@2 = (0.5 + 0 + 1) / 3 = 0.5; pass@2 = (1 + 0 + 1) / 3 = 0.666667
    records = [rec([1, 0], {"skills": ["x", "y"]}), rec([0, 0], {"skills": ["y"]}), rec([1, 1], {"skills": ["x"]})]
    s = summarize(records, categories=["skills"], k=2, n_boot=200, seed=0, name="t")
    assert s["accuracy"] == 0.5 and s["pass_at_k"] == 0.666667 and s["n"] == 3 and s["k"] == 2
    # a list-valued category counts the sample in each of its values:
    # x: [1,0],[1,1] -> mean@2 0.75, pass@2 1.0; y: [1,0],[0,0] -> mean@2 0.25, pass@2 0.5
    x, y = s["categories"]["skills"]["x"], s["categories"]["skills"]["y"]
    assert (x["n"], x["accuracy"], x["pass_at_k"]) == (2, 0.75, 1.0)
    assert (y["n"], y["accuracy"], y["pass_at_k"]) == (2, 0.25, 0.5)


def test_bootstrap_interval_properties():
    values = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    ci = bootstrap_ci(values, n_boot=500, seed=1, name="b")
    assert ci == bootstrap_ci(values, n_boot=500, seed=1, name="b")      # reproducible
    assert ci != bootstrap_ci(values, n_boot=500, seed=2, name="b")
    assert ci[0] < 0.7 < ci[1] and 0.0 <= ci[0] and ci[1] <= 1.0
    assert bootstrap_ci([1, 1, 1], n_boot=100) == [1.0, 1.0]
    assert bootstrap_ci([0.6]) == [0.6, 0.6] and bootstrap_ci([]) is None
    wide = bootstrap_ci(values[:4] * 1, n_boot=500, seed=1, name="b")
    narrow = bootstrap_ci(values * 20, n_boot=500, seed=1, name="b")
    assert narrow[1] - narrow[0] < wide[1] - wide[0]                       # more samples, tighter
    # paired difference of identical vectors is exactly 0; a uniform +1 shift is exactly 1
    assert diff_ci(values, values, paired=True, n_boot=100) == [0.0, 0.0]
    assert diff_ci([0] * 5, [1] * 5, paired=True, n_boot=100) == [1.0, 1.0]


# --- predictions file and output folder -----------------------------------------------------


def test_torn_last_line_is_dropped_and_file_repaired(tmp_path):
    path = tmp_path / PREDICTIONS
    good = [{"benchmark": "b", "index": i, "score": 1.0} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"benchmark": "b", "ind')
    records, dropped = read_predictions(path)
    assert records == good and dropped == 1
    assert path.read_text().endswith("}\n") and read_predictions(path) == (good, 0)


def test_output_folder_guards(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    model = str(tmp_path)  # a folder; nothing is loaded before these checks
    (out / MANIFEST).write_text(json.dumps({"format": "mm-gpg-eval-run/1", "model": model, "seed": 1, "suite": {}}))
    args = ["--model", model, "--suite", "synthetic", "--output", str(out), "--quiet"]
    assert main(args) == 2
    assert "already holds an eval run; add --resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 2
    assert "holds a different run (seed: 1 then, now 0)" in capsys.readouterr().err
    assert main(args + ["--resume", "--overwrite"]) == 2
    assert main(["--model", model, "--suite", "nope", "--quiet"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "absent"), "--suite", "synthetic", "--quiet"]) == 2
    assert "--model: " in capsys.readouterr().err


# --- compare ---------------------------------------------------------------------------------


def report(scores_by_id, model):
    preds = [rec([s], {"kind": "odd" if int(i) % 2 else "even"}, id=i, index=int(i)) for i, s in scores_by_id.items()]
    return {"model": model, "suite": "t",
            "benchmarks": {"bench": {"categories_by": ["kind"], "predictions": preds}}}


def test_compare_pairs_samples_by_id():
    a = report({"0": 0, "1": 0, "2": 1, "3": 0, "4": 0, "5": 1}, "A")
    b = report({"0": 1, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1}, "B")
    cmp = compare_reports(a, b, n_boot=300)
    e = cmp["benchmarks"]["bench"]
    # A 2/6, B 6/6: delta = +4/6 = 0.666667; every paired difference is 0 or +1
    assert (e["a"], e["b"], e["delta"], e["n_paired"], e["paired"]) == (0.333333, 1.0, 0.666667, 6, True)
    assert e["significant"] and 0 < e["ci95"][0] <= 0.666667 <= e["ci95"][1] <= 1
    odd = e["categories"]["kind"]["odd"]          # ids 1, 3, 5: A 1/3, B 3/3
    assert (odd["n_paired"], odd["delta"]) == (3, 0.666667)
    same = compare_reports(a, a, n_boot=100)["benchmarks"]["bench"]
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"]
    text = render_comparison(cmp)
    assert "+66.7 *" in text and "kind=odd" in text
