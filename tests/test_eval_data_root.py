"""`--data-root` on local copies laid out as the hubs and R1-V distribute them (flat files, nested
`data/` shards with hashed names, config and subject sub-folders, R1-V's GeoQA and SuperCLEVR
files with their images): every benchmark of `cross_modal` reads all its good records, and a
benchmark that reads 0 samples or skips too many records fails the run (exit 1), named in the
summary with its count and first reason.

Budget: a few seconds on 2 shared cores (fixtures of 2-6 records, 2 new tokens, no subprocess)."""
from __future__ import annotations

import json
import shutil

import datasets
import pytest

from eval.cli import main
from eval.core import BenchmarkDataError, load_benchmark
from eval.runner import REPORT_JSON, REPORT_MD
from eval.suite import SuiteError, load_suite
from fixtures_data import hub

datasets.disable_progress_bars()
FAST = ["--max-new-tokens", "2", "--batch-size", "8", "--workers", "0", "--bootstrap", "50"]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return root, hub.write_data_root(str(root))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def test_every_benchmark_reads_all_its_good_records(hub_root, cache):
    root, sizes = hub_root
    suite = load_suite("cross_modal", data_root=str(root))
    assert sorted(b.name for b in suite.benchmarks) == sorted(sizes)
    for b in suite.benchmarks:
        assert b.options["path"] == str(root / b.name)
        selected = load_benchmark(b, cache_dir=cache)
        assert (selected.available, len(selected.indices), selected.skipped) == (sizes[b.name], sizes[b.name], 0), \
            (b.name, selected.bad_records)
    mmmu = next(b for b in suite.benchmarks if b.name == "mmmu")
    subjects = {s.meta["subject"] for s in load_benchmark(mmmu, cache_dir=cache).source}
    assert subjects == {"Art", "Math"}  # every subject folder, validation split only


def test_the_images_folder_of_earlier_docs_still_reads(tmp_path, cache):
    """GeoQA / SuperCLEVR images under `DIR/<name>/images/` (what the suite documented before):
    the entries' `image_dir: images` is the second place looked at."""
    hub.write_geoqa_eval(str(tmp_path / "geoqa"), layout="images_dir")
    hub.write_superclevr(str(tmp_path / "superclevr"), layout="images_dir")
    suite = load_suite("cross_modal", data_root=str(tmp_path), only=["geoqa", "superclevr"])
    assert [len(load_benchmark(b, cache_dir=cache).indices) for b in suite.benchmarks] == [3, 3]


def _superclevr(tmp_path, n: int, missing: int, max_skipped=None):
    """SuperCLEVR rows as R1-V writes them, the images of the first `missing` removed."""
    path, image_dir = hub.write_superclevr(str(tmp_path / "superclevr"), n=n)
    for i in range(missing):
        (tmp_path / "superclevr" / "images" / f"superCLEVR_new_{i:06d}.png").unlink()
    sets = [] if max_skipped is None else [f"superclevr.max_skipped_fraction={max_skipped}"]
    suite = load_suite("cross_modal", sets, data_root=str(tmp_path), only=["superclevr"])
    return suite.benchmarks[0]


def test_skipping_more_than_max_skipped_fraction_fails_the_benchmark(tmp_path, cache):
    ok = load_benchmark(_superclevr(tmp_path / "a", n=20, missing=1), cache_dir=cache)   # 5 %: at the limit
    assert (len(ok.indices), ok.skipped) == (19, 1)
    with pytest.raises(BenchmarkDataError) as err:                                      # 10 %
        load_benchmark(_superclevr(tmp_path / "b", n=20, missing=2), cache_dir=cache)
    text = str(err.value)
    assert text.startswith("2 of 20 record(s) skipped (10.0 % > max_skipped_fraction 5 %); the first: "
                           "superclevr: record 'superclevr-test-0': field 'image_path': image file not found")
    assert err.value.selected.skipped == 2 and len(err.value.selected.indices) == 18
    relaxed = load_benchmark(_superclevr(tmp_path / "c", n=20, missing=2, max_skipped=0.2), cache_dir=cache)
    assert len(relaxed.indices) == 18
    with pytest.raises(BenchmarkDataError, match=r"^read 0 samples: 3 of 3 record\(s\) skipped; the first: "):
        load_benchmark(_superclevr(tmp_path / "d", n=3, missing=3, max_skipped=1.0), cache_dir=cache)
    none = _superclevr(tmp_path / "e", n=3, missing=3)
    none.limit = 0  # asking for nothing is not a data problem
    assert load_benchmark(none, cache_dir=cache).indices == []
    with pytest.raises(SuiteError, match=r"max_skipped_fraction: expected a fraction in \[0, 1\], got 5.0"):
        load_suite("cross_modal", ["defaults.max_skipped_fraction=5"])


# --- the real command on the tiny model -----------------------------------------------------------


def test_cross_modal_reads_every_good_record_via_the_cli(tiny_model_dir, hub_root, cache, tmp_path, capsys):
    root, sizes = hub_root
    out = tmp_path / "run"
    code = main(["--model", str(tiny_model_dir), "--suite", "cross_modal", "--data-root", str(root),
                 "--cache-dir", cache, *FAST, "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["summary"]["failed"] == [] and report["summary"]["samples"] == sum(sizes.values())
    for name, e in report["benchmarks"].items():
        assert (e["status"], e["available"], e["selected"], e["n"], e["skipped_records"]) == \
            ("ok", sizes[name], sizes[name], sizes[name], 0), name
        assert e["errors"] == 0, (name, [p["error"] for p in e["predictions"] if p["error"]])
    header = printed.splitlines()[2].split()
    assert header[:4] == ["benchmark", "n", "skipped", "accuracy"]
    geoqa_row = next(line for line in printed.splitlines() if line.startswith("geoqa "))
    assert geoqa_row.split()[1:3] == ["3", "0"]


def test_a_benchmark_without_its_images_fails_the_run_by_name(tiny_model_dir, hub_root, cache, tmp_path, capsys):
    root = tmp_path / "benchmarks"
    shutil.copytree(hub_root[0], root)
    shutil.rmtree(root / "geoqa" / "Geo170K")
    out = tmp_path / "run"
    code = main(["--model", str(tiny_model_dir), "--suite", "cross_modal", "--data-root", str(root),
                 "--cache-dir", cache, "--limit", "1", *FAST, "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["summary"]["failed"] == ["geoqa"]
    geoqa = report["benchmarks"]["geoqa"]
    assert geoqa["status"] == "failed" and geoqa["skipped_records"] == 3 and geoqa["predictions"] == []
    assert all(e["status"] == "ok" and e["n"] == 1 for name, e in report["benchmarks"].items() if name != "geoqa")
    row = next(line for line in printed.splitlines() if line.startswith("geoqa "))
    assert row.split()[1:4] == ["-", "3", "FAILED"]
    reason = next(line for line in printed.splitlines() if line.startswith("FAILED geoqa: "))
    assert reason.startswith("FAILED geoqa: read 0 samples: 3 of 3 record(s) skipped; the first: geoqa: "
                             "record 'geoqa-test-0': field 'image_path': image file not found: "
                             "'./Geo170K/images/test/0.png', tried ")
    assert str(root / "geoqa" / "Geo170K" / "images" / "test" / "0.png") in reason
    assert str(root / "geoqa" / "images" / "Geo170K" / "images" / "test" / "0.png") in reason
    md = (out / REPORT_MD).read_text()
    assert "| geoqa | - | 3 | FAILED |" in md and "- FAILED geoqa: read 0 samples" in md
