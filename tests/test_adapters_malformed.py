"""Adapters on files in the hub schemas with deliberate defects, for every adapter (each reads
JSON lines and parquet):

- a JSON-lines file with one truncated line: `error` names the file line; `skip` skips and counts
  that line like any other bad record (it used to fail the whole load inside `datasets`);
- every record bad: `skip` ends in an error that says how many were skipped and the first reason;
- a file missing a required column: one error naming the column, in both modes.
"""
from __future__ import annotations

import json
import os

import datasets
import pytest

from data_prep.adapters import skipped_summary
from data_prep.mixture import Mixture
from data_prep.registry import load_source
from data_prep.schema import BadRecord
from fixtures_data import hub

datasets.disable_progress_bars()

# source -> (hub rows, split, the column holding the question, the gold column)
SOURCES = {
    "geometry3k": (hub.geometry3k_rows, "train", "problem", "answer"),
    "mathvista": (hub.mathvista_rows, "testmini", "question", "answer"),
    "mathverse": (hub.mathverse_rows, "testmini", "question", "answer"),
    "geoqa": (hub.geoqa_rows, "train", "problem", "solution"),
    "clevr_count": (hub.clevr_rows, "train", "problem", "solution"),
    "superclevr": (None, "test", "question", "ground_truth"),
    "chartqa": (hub.chartqa_rows, "test", "query", "label"),
    "vqav2": (hub.vqav2_rows, "validation", "question", "answers"),
    "scienceqa": (hub.scienceqa_rows, "test", "question", "answer"),
    "mmmu": (hub.mmmu_rows, "validation", "question", "answer"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def plain_rows(name: str, folder: str) -> list[dict]:
    """The source's hub rows with every image written to a file and named by its relative path
    (JSON lines hold no bytes), as local JSON-lines copies carry them."""
    rows_fn = SOURCES[name][0]
    if rows_fn is None:  # superclevr exists only as R1-V's JSON-lines file
        path, _ = hub.write_superclevr(folder)
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        os.remove(path)
        return rows
    counter = iter(range(10_000))

    def plain(value):
        if isinstance(value, dict) and "bytes" in value:
            if value["bytes"] is None:
                return value.get("path")
            fname = f"img_{next(counter)}.png"
            with open(os.path.join(folder, fname), "wb") as f:
                f.write(value["bytes"])
            return fname
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    os.makedirs(folder, exist_ok=True)
    return [{k: plain(v) for k, v in row.items()} for row in rows_fn()]


def write_lines(path: str, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def load(name, cache, path, **kw):
    return load_source(name, path=path, split=SOURCES[name][1], cache_dir=cache, **kw)


@pytest.mark.parametrize("name", list(SOURCES))
def test_json_lines_round_trip(tmp_path, cache, name):
    # the baseline the defects below are measured against: the clean file loads whole
    rows = plain_rows(name, str(tmp_path))
    path = write_lines(str(tmp_path / f"{SOURCES[name][1]}.jsonl"), [json.dumps(r) for r in rows])
    assert len(load(name, cache, path)) == len(rows)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("name", list(SOURCES))
def test_a_truncated_line_is_one_bad_record(tmp_path, cache, name, streaming):
    rows = plain_rows(name, str(tmp_path))
    lines = [json.dumps(r) for r in rows]
    lines.insert(1, lines[1][: len(lines[1]) // 2])  # line 2: cut mid-record, as a crash leaves it
    path = write_lines(str(tmp_path / f"{SOURCES[name][1]}.jsonl"), lines)
    with pytest.raises(BadRecord, match=r"jsonl line 2': field '<json>': not valid JSON"):
        load(name, cache, path)
    kept = load(name, cache, path, on_bad_record="skip", streaming=streaming)
    samples = list(kept)
    assert len(samples) == len(rows) and kept.skipped == 1
    assert "line 2" in kept.bad_records[0] and "not valid JSON" in kept.bad_records[0]


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_line_that_is_not_an_object_is_one_bad_record(tmp_path, cache, name):
    rows = plain_rows(name, str(tmp_path))
    lines = [json.dumps(r) for r in rows] + ['["a", "list"]']
    path = write_lines(str(tmp_path / f"{SOURCES[name][1]}.jsonl"), lines)
    kept = load(name, cache, path, on_bad_record="skip")
    assert len(kept) == len(rows) and kept.skipped == 1 and "not a JSON object (list)" in kept.bad_records[0]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("name", list(SOURCES))
def test_every_record_bad_says_how_many_and_why(tmp_path, cache, name, fmt):
    rows = plain_rows(name, str(tmp_path))
    question = SOURCES[name][2]
    for row in rows:
        row[question] = None  # every record: the question left empty
    path = str(tmp_path / f"{SOURCES[name][1]}.{fmt}")
    if fmt == "jsonl":
        write_lines(path, [json.dumps(r) for r in rows])
    else:
        datasets.Dataset.from_list(rows).to_parquet(path)
    kept = load(name, cache, path, on_bad_record="skip")
    assert len(kept) == 0 and kept.skipped == len(rows)
    summary = skipped_summary(kept)
    assert f"{len(rows)} record(s) skipped as malformed" in summary and f"field {question!r}" in summary
    with pytest.raises(ValueError, match=rf"is empty; {len(rows)} record\(s\) skipped as malformed, first: .*{question}"):
        Mixture({name: kept})


def test_inspect_names_the_count_and_the_first_reason(tmp_path, capsys):
    from data_prep.inspect import main
    rows = plain_rows("chartqa", str(tmp_path))
    for row in rows:
        row["query"] = None
    path = write_lines(str(tmp_path / "test.jsonl"), [json.dumps(r) for r in rows])
    code = main(["chartqa", "--path", path, "--split", "test", "--on-bad-record", "skip", "--no-sheet"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0 and "yielded no samples" in text
    assert f"{len(rows)} record(s) skipped as malformed" in text and "field 'query'" in text


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("mode", ["error", "skip"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("name", list(SOURCES))
def test_a_missing_required_column_is_one_error(tmp_path, cache, name, fmt, mode, streaming):
    rows = plain_rows(name, str(tmp_path))
    gold = SOURCES[name][3]
    for row in rows:
        del row[gold]
    path = str(tmp_path / f"{SOURCES[name][1]}.{fmt}")
    if fmt == "jsonl":
        write_lines(path, [json.dumps(r) for r in rows])
    else:
        datasets.Dataset.from_list(rows).to_parquet(path)
    with pytest.raises(ValueError, match=rf"missing column .*'{gold}'") as err:
        load(name, cache, path, on_bad_record=mode, streaming=streaming)
    assert not isinstance(err.value, BadRecord) and path in str(err.value)


@pytest.mark.parametrize("mode", ["error", "skip"])
@pytest.mark.parametrize("name", ["chartqa", "vqav2", "mathvista"])
def test_a_damaged_file_is_one_error_naming_it(tmp_path, cache, name, mode):
    # a parquet file cut in half (no footer) and a JSON document cut mid-record cannot be read
    # record by record: one error naming the file and the reason, in both modes
    rows = plain_rows(name, str(tmp_path))
    parquet = str(tmp_path / f"{SOURCES[name][1]}.parquet")
    datasets.Dataset.from_list(rows).to_parquet(parquet)
    data = open(parquet, "rb").read()
    open(parquet, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*\.parquet: ArrowInvalid"):
        load(name, cache, parquet, on_bad_record=mode)
    document = str(tmp_path / "doc" / f"{SOURCES[name][1]}.json")
    os.makedirs(os.path.dirname(document))
    text = json.dumps(rows)
    write_lines(document, [text[: len(text) // 2]])
    with pytest.raises(ValueError, match=r"cannot read .*\.json: JSONDecodeError"):
        load(name, cache, document, on_bad_record=mode)
