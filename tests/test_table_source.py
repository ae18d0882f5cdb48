"""The `table` source: your own parquet / JSON / JSON-lines / CSV / image-folder data through a
column map, checked like every adapter (a missing column is one error naming file, column and the
columns present; a malformed record is a BadRecord naming its field, skipped and counted with
`on_bad_record: skip`)."""
from __future__ import annotations

import csv
import io
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.prompts import build_messages, image_order
from data_prep.registry import UnknownName, load_source
from data_prep.schema import BadRecord, load_image

datasets.disable_progress_bars()

RED, GREEN, BLUE = (220, 40, 40), (40, 170, 60), (50, 80, 220)


def png(colour, size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path, colour, size=(24, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(colour, size))
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pixel(ref):
    return load_image(ref).getpixel((0, 0))


# --------------------------------------------------------------------------------------------
# The formats


def test_json_lines_with_relative_images_and_defaults(tmp_path):
    write_png(tmp_path / "img" / "a.png", RED)
    write_png(tmp_path / "img" / "b.png", GREEN)
    data = write_jsonl(tmp_path / "questions.jsonl", [
        {"id": "q1", "image": "img/a.png", "question": "<image>\nHow many squares?", "answer": 3},
        {"id": "q2", "image": "img/b.png", "question": "What colour is it?", "answer": "green"},
    ])
    table = load_source("table", path=str(data))
    assert len(table) == 2 and table.skipped == 0
    first, second = table[0], table[1]
    assert first.id == "q1" and second.id == "q2"  # the `id` column, found without id_key
    assert first.question == "How many squares?"  # the bare <image> placeholder is dropped
    assert first.answer == "3" and first.answer_type == "text" and first.choices is None
    assert first.task == "table"
    # relative to the data file's folder
    assert first.images == [str(tmp_path / "img" / "a.png")]
    assert pixel(second.images[0]) == GREEN


def test_json_document_with_a_renamed_column_map_and_multiple_choice(tmp_path):
    write_png(tmp_path / "p.png", BLUE)
    rows = [  # the gold as option text, as letter, as "(C)", as a 0-based integer index
        {"uid": 7, "picture": "p.png", "prompt": "Which colour?", "gold": "blue", "options": ["red", "blue", "green"]},
        {"uid": 8, "picture": "p.png", "prompt": "Which colour?", "gold": "b", "options": ["red", "blue", "green"]},
        {"uid": 9, "picture": "p.png", "prompt": "Which colour?", "gold": "(C)", "options": ["red", "blue", "green"]},
        {"uid": 10, "picture": "p.png", "prompt": "Which colour?", "gold": 0, "options": ["red", "blue", "green"]},
    ]
    data = tmp_path / "mc.json"
    data.write_text(json.dumps(rows, indent=1))  # one JSON document (a list), not JSON lines
    table = load_source("table", path=str(data), image_key="picture", question_key="prompt",
                        answer_key="gold", choices_key="options", id_key="uid", task="colours")
    assert [s.id for s in table] == ["7", "8", "9", "10"]
    # "blue" is option 1 -> B; "b" is the letter B; "(C)" -> C; the index 0 -> A
    assert [s.answer for s in table] == ["B", "B", "C", "A"]
    assert [s.meta["answer_text"] for s in table] == ["blue", "blue", "green", "red"]
    assert {s.answer_type for s in table} == {"multiple_choice"}  # the default when a record has choices
    assert table[0].choices == ["red", "blue", "green"] and table[0].task == "colours"


def test_parquet_with_image_bytes_hub_dicts_lists_and_an_answer_type_column(tmp_path):
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "question": ["Count the red squares.", "Compare <image 2> with <image 1>: which is green?"],
        "answer": ["2", "B"],
        "kind": ["integer", "multiple_choice"],
        "choices": [None, ["first", "second"]],
        # one hub-style {"bytes", "path"} dict per record; a list of two for the second record
        "images": pa.array([[{"bytes": png(RED), "path": None}],
                            [{"bytes": png(BLUE), "path": None}, {"bytes": png(GREEN), "path": None}]],
                           type=pa.list_(image_struct)),
    })
    pq.write_table(table, tmp_path / "train.parquet")
    samples = load_source("table", path=str(tmp_path / "train.parquet"), image_key="images",
                          choices_key="choices", answer_type="kind")
    single, pair = samples[0], samples[1]
    assert (single.answer_type, single.answer, single.choices) == ("integer", "2", None)
    assert (pair.answer_type, pair.answer, pair.meta["answer_text"]) == ("multiple_choice", "B", "second")
    assert [pixel(r) for r in single.images] == [RED]
    assert [pixel(r) for r in pair.images] == [BLUE, GREEN]
    # `<image 2>` then `<image 1>`: the prompt shows the images where the markers say
    assert image_order(build_messages(pair, "r1")) == [1, 0]
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"], "thumb": [png(GREEN)]}),  # raw bytes
                   tmp_path / "raw.parquet")
    raw = load_source("table", path=str(tmp_path / "raw.parquet"), image_key="thumb")
    assert isinstance(raw[0].images[0], bytes) and pixel(raw[0].images[0]) == GREEN


def test_image_folder_with_metadata_csv(tmp_path):
    """The image-folder convention: images beside a metadata.csv whose `file_name` names them;
    CSV cells hold lists as list literals."""
    folder = tmp_path / "my_images"
    write_png(folder / "one.png", RED)
    write_png(folder / "sub" / "two.png", GREEN)
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "question", "answer", "choices", "hint", "unit"])
        writer.writerow(["one.png", "What colour?", "red", '["red", "green"]', "Look closely.", ""])
        writer.writerow(["sub/two.png", "How long is the side?", "24", "", "", "px"])
    samples = load_source("table", path=str(folder), choices_key="choices", meta_keys=["hint", "unit"])
    assert len(samples) == 2
    mc, number = samples[0], samples[1]
    assert mc.images == [str(folder / "one.png")] and number.images == [str(folder / "sub" / "two.png")]
    assert (mc.answer_type, mc.answer, mc.choices) == ("multiple_choice", "A", ["red", "green"])
    assert number.choices is None and number.answer_type == "text"  # an empty cell: no choices
    assert mc.meta["hint"] == "Look closely." and number.meta["unit"] == "px"
    # the hint reaches the prompt (the prompt builder reads meta["hint"])
    assert "Hint: Look closely." in build_messages(mc, "r1")[-1]["content"][-1]["text"]


def test_empty_csv_cells_are_empty_not_nan(tmp_path):
    """A CSV reader turns an empty cell of a numeric column into NaN: an empty gold is a bad
    record, an empty choices column means no choices."""
    write_png(tmp_path / "a.png", RED)
    (tmp_path / "t.csv").write_text("image,question,answer,choices\na.png,How many?,3,\na.png,How many?,,\n")
    with pytest.raises(BadRecord, match="field 'answer': expected an answer, the field is missing or empty"):
        load_source("table", path=str(tmp_path / "t.csv"), choices_key="choices")
    kept = load_source("table", path=str(tmp_path / "t.csv"), choices_key="choices", answer_type="integer",
                       on_bad_record="skip")
    assert len(kept) == 1 and kept.skipped == 1
    assert (kept[0].answer, kept[0].choices) == ("3", None)


def test_image_folder_with_split_folders_and_metadata_jsonl(tmp_path):
    for split, colour in (("train", RED), ("test", BLUE)):
        write_png(tmp_path / split / "x.png", colour)
        write_jsonl(tmp_path / split / "metadata.jsonl",
                    [{"file_name": "x.png", "question": f"a {split} question", "answer": split}])
    train = load_source("table", path=str(tmp_path))
    test = load_source("table", path=str(tmp_path), split="test")
    assert [s.question for s in train] == ["a train question"] and pixel(train[0].images[0]) == RED
    assert [s.question for s in test] == ["a test question"] and pixel(test[0].images[0]) == BLUE
    assert test[0].id == "table-test-0"  # no id column: <source>-<split>-<row>


def test_image_dir_and_a_list_of_image_columns(tmp_path):
    write_png(tmp_path / "pics" / "l.png", RED)
    write_png(tmp_path / "pics" / "r.png", GREEN)
    data = write_jsonl(tmp_path / "data" / "pairs.jsonl", [
        {"left": "l.png", "right": "r.png", "question": "Which side is green?", "answer": "right"}])
    samples = load_source("table", path=str(data), image_key=["left", "right"], image_dir=str(tmp_path / "pics"))
    assert samples[0].images == [str(tmp_path / "pics" / "l.png"), str(tmp_path / "pics" / "r.png")]


def test_json_lines_columns_of_mixed_types(tmp_path):
    """One record with a single path and one with a list, numbers and strings as golds, and a
    list of accepted answers: `datasets` stores such a column as JSON text, the source decodes it."""
    write_png(tmp_path / "a.png", RED)
    write_png(tmp_path / "b.png", GREEN)
    data = write_jsonl(tmp_path / "mixed.jsonl", [
        {"image": "a.png", "question": "How many?", "answer": 3},
        {"image": ["a.png", "b.png"], "question": "Which is red?", "answer": "the first"},
        {"image": "b.png", "question": "What is it?", "answer": ["a square", "square", "box"]},
    ])
    one, two, three = load_source("table", path=str(data), answer_type="vqa")
    assert one.answer == "3" and len(one.images) == 1
    assert two.answer == "the first" and [pixel(r) for r in two.images] == [RED, GREEN]
    # a list of golds: accepted answers for the vqa verifier, the first one as `answer`
    assert three.answer == "a square" and three.meta["answers"] == ["a square", "square", "box"]
    listed = load_source("table", path=str(data), answer_type="list")
    assert listed[2].answer == "a square, square, box"  # answer_type list: the gold list itself


def test_streaming_gives_the_same_samples(tmp_path):
    write_png(tmp_path / "a.png", RED)
    data = write_jsonl(tmp_path / "s.jsonl", [
        {"image": "a.png", "question": f"q{i}", "answer": i, "id": f"r{i}"} for i in range(5)])
    table = load_source("table", path=str(data), answer_type="integer")
    stream = load_source("table", path=str(data), answer_type="integer", streaming=True)
    assert [(s.id, s.answer, s.images) for s in stream] == [(s.id, s.answer, s.images) for s in table]


# --------------------------------------------------------------------------------------------
# A column map that does not fit the data: one error, in both modes


@pytest.fixture
def small_jsonl(tmp_path):
    write_png(tmp_path / "a.png", RED)
    return write_jsonl(tmp_path / "small.jsonl", [{"image": "a.png", "question": "q", "answer": "1", "hint": "h"}])


@pytest.mark.parametrize("options,message", [
    ({"question_key": "questoin"},
     "missing column 'questoin' (option question_key) (did you mean 'question'?); "
     "the table has columns ['answer', 'hint', 'image', 'question']"),
    ({"answer_key": "gold"}, "missing column 'gold' (option answer_key)"),
    ({"image_key": "img"}, "missing column 'img' (option image_key) (did you mean 'image'?)"),
    ({"image_key": ["image", "image2"]}, "missing column 'image2' (option image_key)"),
    ({"choices_key": "options"}, "missing column 'options' (option choices_key)"),
    ({"id_key": "uid"}, "missing column 'uid' (option id_key)"),
    ({"meta_keys": ["hint", "units"]}, "missing column 'units' (option meta_keys)"),
    ({"answer_type": "multiple-choice"},
     "option answer_type 'multiple-choice' is neither an answer type (multiple_choice, integer, float, "
     "math, text, vqa, list, count) nor a column (did you mean 'multiple_choice'?)"),
])
@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
def test_a_missing_column_is_one_error_naming_file_and_column(small_jsonl, options, message, on_bad_record):
    with pytest.raises(ValueError) as info:
        load_source("table", path=str(small_jsonl), on_bad_record=on_bad_record, **options)
    text = str(info.value)
    assert text.startswith(f"data source 'table': {small_jsonl}: ")
    assert message in text
    assert not isinstance(info.value, BadRecord)


def test_a_missing_column_is_caught_before_streaming_too(small_jsonl):
    with pytest.raises(ValueError, match="missing column 'prompt' \\(option question_key\\)"):
        load_source("table", path=str(small_jsonl), question_key="prompt", streaming=True)


def test_no_image_column_names_the_ones_looked_for(tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"picture": "a.png", "question": "q", "answer": "1"}])
    with pytest.raises(ValueError, match=r"no image column: none of \['image', 'images', 'file_name'\] is "
                                         r"present; name it with option image_key; the table has columns "
                                         r"\['answer', 'picture', 'question'\]"):
        load_source("table", path=str(data))


def test_a_folder_path_names_its_data_file(tmp_path):
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "q": "q", "answer": "1"}])
    with pytest.raises(ValueError, match=f"data source 'table': {tmp_path / 'metadata.jsonl'}: missing column 'question'"):
        load_source("table", path=str(tmp_path))


@pytest.mark.parametrize("options,message", [
    ({"question_col": "q"}, "unknown option(s) 'question_col' (did you mean 'question_key'?)"),
    ({"image_key": []}, "option image_key must be a column name or a non-empty list of column names, got []"),
    ({"meta_keys": "hint"}, "option meta_keys must be a list of column names, got 'hint'"),
    ({"question_key": 3}, "option question_key must be a column name (a non-empty string), got 3"),
    ({"choices_key": ""}, "option choices_key must be a column name (a non-empty string) or null, got ''"),
])
def test_bad_options_are_refused_before_reading(small_jsonl, options, message):
    with pytest.raises((ValueError, UnknownName)) as info:
        load_source("table", path=str(small_jsonl), **options)
    assert message in str(info.value)


def test_the_training_config_checks_the_column_map(tmp_path):
    from mm_gpg.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="option meta_keys must be a list of column names"):
        load_config(None, ["data.train=[{source: table, options: {path: x.jsonl, meta_keys: hint}}]"])
    with pytest.raises(ConfigError, match="not an option of source 'table' \\(did you mean 'answer_key'\\?\\)"):
        load_config(None, ["data.train=[{source: table, options: {path: x.jsonl, answer_col: a}}]"])


# --------------------------------------------------------------------------------------------
# Malformed records: a BadRecord naming the field; skipped and counted with `skip`

BAD_RECORDS = [  # (record, field named, words of the reason)
    ({"image": "missing.png", "question": "q", "answer": "1"}, "image", "image file not found: 'missing.png'"),
    ({"image": "a.png", "question": "   ", "answer": "1"}, "question", "expected a non-empty string"),
    ({"image": "a.png", "question": "<image>", "answer": "1"}, "question", "got only an <image> placeholder"),
    ({"image": "a.png", "question": "q", "answer": None}, "answer", "expected an answer, the field is missing or empty"),
    ({"image": "a.png", "question": "q", "answer": " "}, "answer", "expected an answer, the field is missing or empty"),
    ({"image": "a.png", "question": "q", "answer": ["3", ""]}, "answer[1]", "expected a non-empty answer"),
    ({"image": "a.png", "question": "q", "answer": "D", "choices": ["x", "y"], "type": "multiple_choice"}, "answer",
     "expected an option text, a letter A-B or a 0-based index of the 2 choices, got 'D'"),
    ({"image": "a.png", "question": "q", "answer": "x", "choices": ["x"]}, "choices", "expected at least 2 options"),
    ({"image": "a.png", "question": "q", "answer": "x", "choices": "x or y"}, "choices",
     "expected a list of options (or a string holding one)"),
    ({"image": "a.png", "question": "q", "answer": "1", "type": "integr"}, "type",
     "expected one of ['multiple_choice', 'integer', 'float', 'math', 'text', 'vqa', 'list', 'count'], "
     "got 'integr' (did you mean 'integer'?)"),
    ({"image": "a.png", "question": "q", "answer": "1", "type": "multiple_choice"}, "choices",
     "answer_type multiple_choice needs choices"),
    ({"image": [], "question": "q", "answer": "1"}, "image", "expected at least one image, got an empty list"),
    ({"image": "a.png", "question": "see <image 2>", "answer": "1"}, "question",
     "'<image 2>' is referenced but the record has 1 image(s)"),
    ({"image": "a.png", "question": "q", "answer": "1", "id": "dup"}, "id", "expected unique ids"),
]


def _bad_table(tmp_path, record):
    write_png(tmp_path / "a.png", RED)
    good = {"image": "a.png", "question": "fine", "answer": "2", "choices": None, "type": "text"}
    first = {**good, "id": "dup"} if record.get("id") == "dup" else good
    return write_jsonl(tmp_path / "bad.jsonl", [first, {**good, **record}])


@pytest.mark.parametrize("record,field_name,reason", BAD_RECORDS,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_RECORDS)])
def test_a_malformed_record_is_named_or_skipped_and_counted(tmp_path, record, field_name, reason):
    data = _bad_table(tmp_path, record)
    options = {"choices_key": "choices", "answer_type": "type"}
    with pytest.raises(BadRecord) as info:
        load_source("table", path=str(data), **options)
    assert info.value.source == "table" and info.value.field_name == field_name
    assert reason in str(info.value)
    kept = load_source("table", path=str(data), on_bad_record="skip", **options)
    assert len(kept) == 1 and kept[0].question == "fine"
    assert kept.skipped == 1 and reason in kept.bad_records[0]


def test_a_broken_json_line_is_skipped_and_counted(tmp_path):
    write_png(tmp_path / "a.png", RED)
    data = tmp_path / "broken.jsonl"
    data.write_text(json.dumps({"image": "a.png", "question": "q", "answer": "1"}) + "\n{\"image\": \"a.p\n")
    with pytest.raises(BadRecord, match="broken.jsonl line 2"):
        load_source("table", path=str(data))
    kept = load_source("table", path=str(data), on_bad_record="skip")
    assert len(kept) == 1 and kept.skipped == 1


def test_train_with_a_wrong_column_map_is_one_line_and_exit_status_2(tmp_path, tiny_model_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    write_png(tmp_path / "a.png", RED)
    write_jsonl(tmp_path / "mine.jsonl", [{"image": "a.png", "question": "q", "answer": "1"}])
    result = subprocess.run(
        [sys.executable, "-m", "mm_gpg.cli", "train", "--config", str(repo / "configs/tiny_synthetic.yaml"),
         f"model.path={tiny_model_dir}", "model.init_tiny=false", "warmstart.steps=0", "progress=false",
         f"output_dir={tmp_path / 'run'}",
         "data.train=[{source: table, options: {path: mine.jsonl, question_key: prompt}}]"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "mm-gpg: error: data source 'table': mine.jsonl: missing column 'prompt' (option question_key); "
        "the table has columns ['answer', 'image', 'question']")
