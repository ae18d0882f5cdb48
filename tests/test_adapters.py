"""Public-benchmark adapters on small fixtures written in each hub dataset's official schema
(tests/fixtures_data/hub.py), loaded through the same `datasets.load_dataset` path a local copy
of the hub files takes. The hub-id path is exercised by standing a fake `load_dataset` in for
the network."""
from __future__ import annotations

import os

import datasets
import pytest
from PIL import Image

from data_prep.adapters import SampleStream, SampleTable, format_skipped, skipped_report, split_by_id
from data_prep.prompts import build_messages, image_order, question_text
from data_prep.registry import load_source, source_names
from data_prep.schema import ANSWER_TYPES, BadRecord, Sample, load_image
from fixtures_data import hub

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def load(name, cache, **kw):
    return load_source(name, cache_dir=cache, **kw)


def colour(ref):
    return load_image(ref).getpixel((0, 0))


def check_common(samples, task):
    for s in samples:
        assert isinstance(s, Sample) and s.task == task and s.answer_type in ANSWER_TYPES
        for ref in s.images:  # lazy: still encoded bytes or a path, never a decoded image
            assert isinstance(ref, (bytes, str)), type(ref)


def test_every_source_is_registered():
    assert {"geometry3k", "mathvista", "mathverse", "geoqa", "clevr_count", "superclevr", "chartqa",
            "vqav2", "scienceqa", "mmmu"} <= set(source_names())


# --- one test per source: fields, answers, meta, images ----------------------------------------


def test_geometry3k(tmp_path, cache):
    path = hub.write_geometry3k(str(tmp_path / "g3k"))  # data/train-00000-of-00001.parquet
    ds = load("geometry3k", cache, path=path)
    assert isinstance(ds, SampleTable) and len(ds) == 4
    check_common(ds, "geometry3k")
    s = ds[1]
    assert s.id == "101" and s.question == "Find x. Case 1."  # the bare <image> placeholder is gone
    assert s.answer == "4" and s.answer_type == "math" and s.choices is None
    assert s.meta["choices"] == ["3", "4", "5", "6"] and s.meta["answer_letter"] == "B"
    assert colour(s.images[0]) == hub.PALETTE[1] and load_image(s.images[0]).size == (24, 16)
    mc = load("geometry3k", cache, path=path, multiple_choice=True)[2]
    assert (mc.answer, mc.answer_type, mc.choices) == ("C", "multiple_choice", ["6", "7", "8", "9"])
    assert "C. 8" in question_text(mc)


def test_mathvista(tmp_path, cache):
    ds = load("mathvista", cache, path=hub.write_mathvista(str(tmp_path / "mv")))
    check_common(ds, "mathvista")
    mc, integer, flt, lst = ds
    # multiple choice: the gold is the option text, as MathVista gives it; its letter in meta
    assert (mc.answer, mc.answer_type, mc.choices) == ("half", "multiple_choice", ["twice", "half", "same"])
    assert mc.meta["answer_letter"] == "B" and mc.meta["question_type"] == "multi_choice"
    assert integer.answer_type == "integer" and integer.meta["unit"] == "g" and integer.meta["precision"] is None
    assert "(Unit: g)" in question_text(integer) and "integer" in question_text(integer)
    assert flt.answer_type == "float" and flt.meta["precision"] == 2 and flt.meta["mathvista_answer_type"] == "float"
    assert lst.answer_type == "list" and lst.meta["answer_list"] == [1, 2, 3]
    md = integer.meta["metadata"]
    assert md["task"] == "figure question answering" and md["skills"] == ["numeric commonsense"]
    assert integer.meta["category"] == "math-targeted-vqa" and integer.meta["skills"] == ["numeric commonsense"]
    assert colour(flt.images[0]) == hub.PALETTE[2]
    assert "hint" not in load("mathvista", cache, path=str(tmp_path / "mv"), hints=False)[1].meta


def test_mathvista_falls_back_to_the_image_path(tmp_path, cache):
    rows = hub.mathvista_rows()[:1]
    rows[0]["decoded_image"] = None
    hub.write_image_files(str(tmp_path / "mv"), ["images/1.jpg"])
    ds = load("mathvista", cache, path=hub.write_mathvista(str(tmp_path / "mv"), rows))
    assert ds[0].images == [str(tmp_path / "mv" / "images" / "1.jpg")]


def test_mathverse(tmp_path, cache):
    path = hub.write_mathverse(str(tmp_path / "mverse"))
    ds = load("mathverse", cache, path=path)
    check_common(ds, "mathverse")
    text_dom, vision_only, vision_dom, text_lite = ds
    # the options inside the question move to `choices`; the gold stays a letter
    assert text_dom.choices == ["40°", "50°", "130°", "140°"] and text_dom.answer == "C"
    assert "Choices" not in text_dom.question and text_dom.meta["answer_text"] == "130°"
    assert text_dom.meta["problem_version"] == "Text Dominant"
    assert vision_only.choices is None and vision_only.answer == "C" and vision_only.question
    assert vision_dom.answer_type == "math" and vision_dom.answer == "2\\sqrt{3}"
    assert text_lite.meta["subject"] == "Plane Geometry"
    only = load("mathverse", cache, path=path, versions=["Vision Only", "Text Lite"])
    assert [s.meta["problem_version"] for s in only] == ["Vision Only", "Text Lite"] and only.skipped == 0
    with pytest.raises(ValueError, match="Vision Onyl"):
        load("mathverse", cache, path=path, versions=["Vision Onyl"])


def test_mathverse_hub_snapshot_layout(tmp_path, cache):
    """The hub repo holds testmini.parquet, testmini_text_only.parquet and their .json twins."""
    root = str(tmp_path / "snapshot")
    hub.write_mathverse(root)
    text_only = [dict(r, problem_version="Text Only", image=None, sample_index=f"t{r['sample_index']}")
                 for r in hub.mathverse_rows()[2:]]
    hub._write(text_only, hub.MATHVERSE_FEATURES, os.path.join(root, "testmini_text_only.parquet"))
    with open(os.path.join(root, "testmini.json"), "w") as f:
        f.write("[]")
    assert [s.id for s in load("mathverse", cache, path=root)] == ["1", "2", "3", "4"]
    only_text = load("mathverse", cache, path=root, config="testmini_text_only")
    assert [s.id for s in only_text] == ["t3", "t4"] and only_text[0].images == []


def test_geoqa_train_and_eval_forms(tmp_path, cache):
    ds = load("geoqa", cache, path=hub.write_geoqa(str(tmp_path / "geoqa")))
    check_common(ds, "geoqa")
    assert [s.answer for s in ds] == ["140°", "3cm", "25°", "2√{3}"]  # units kept, tags unwrapped
    assert all(s.answer_type == "math" for s in ds)
    path, image_dir = hub.write_geoqa_eval(str(tmp_path / "geoqa_eval"))
    rows = load("geoqa", cache, path=path, image_dir=image_dir, split="test")
    assert [s.answer for s in rows] == ["140°", "3cm", "65"] and rows[0].meta["form"] == "r1v_eval"
    assert rows[2].images[0] == os.path.join(image_dir, "Geo170K", "images", "test", "2.png")
    assert colour(rows[2].images[0]) == hub.PALETTE[2]


def test_clevr_count_and_superclevr(tmp_path, cache):
    ds = load("clevr_count", cache, path=hub.write_clevr(str(tmp_path / "clevr")))
    check_common(ds, "clevr_count")
    assert [s.answer for s in ds] == ["2", "3", "4", "5"] and ds[0].answer_type == "integer"
    assert ds[0].meta["solution_raw"] == "<answer> 2 </answer>"
    path, image_dir = hub.write_superclevr(str(tmp_path / "sc"))
    sc = load("superclevr", cache, path=path, image_dir=image_dir)
    check_common(sc, "superclevr")
    assert [s.answer for s in sc] == ["3", "4", "5"] and colour(sc[1].images[0]) == hub.PALETTE[1]


def test_relative_image_paths_resolve_beside_the_file_then_under_image_dir(tmp_path, cache):
    # R1-V's files as distributed: the paths are relative to the JSONL, with or without image_dir
    path, _ = hub.write_geoqa_eval(str(tmp_path / "geoqa"))
    beside = str(tmp_path / "geoqa" / "Geo170K" / "images" / "test" / "1.png")
    for image_dir in (None, str(tmp_path / "elsewhere")):
        rows = load("geoqa", cache, path=str(tmp_path / "geoqa"), image_dir=image_dir, split="test")
        assert len(rows) == 3 and rows[1].images[0] == beside and colour(rows[1].images[0]) == hub.PALETTE[1]
    sc_path, sc_images = hub.write_superclevr(str(tmp_path / "sc"))  # "./images/superCLEVR_new_000000.png"
    sc = load("superclevr", cache, path=sc_path, image_dir=str(tmp_path / "elsewhere"))
    assert sc[2].images[0] == os.path.join(sc_images, "superCLEVR_new_000002.png")
    # a copy whose images sit elsewhere: image_dir is the second place looked at
    moved, moved_dir = hub.write_geoqa_eval(str(tmp_path / "moved"), layout="images_dir")
    rows = load("geoqa", cache, path=moved, image_dir=moved_dir, split="test")
    assert rows[0].images[0] == os.path.join(moved_dir, "Geo170K", "images", "test", "0.png")
    # neither place holds it: the one-line error names the record, the field and both places tried
    with pytest.raises(BadRecord) as err:
        load("geoqa", cache, path=moved, image_dir=str(tmp_path / "elsewhere"), split="test")
    message = str(err.value)
    assert "\n" not in message and "geoqa-test-0" in message and "'image_path'" in message
    assert "image file not found: './Geo170K/images/test/0.png', tried " in message
    assert (f"{tmp_path / 'moved' / 'Geo170K' / 'images' / 'test' / '0.png'} and "
            f"{tmp_path / 'elsewhere' / 'Geo170K' / 'images' / 'test' / '0.png'}") in message
    # unchecked (check_images=False) samples still point at the file that exists
    lazy = load("geoqa", cache, path=moved, image_dir=moved_dir, split="test", check_images=False)
    assert lazy[2].images[0] == os.path.join(moved_dir, "Geo170K", "images", "test", "2.png")


def test_chartqa(tmp_path, cache):
    ds = load("chartqa", cache, path=hub.write_chartqa(str(tmp_path / "chart")), split="test")
    check_common(ds, "chartqa")
    number, word, percent = ds
    assert number.answer == "23.5" and number.answer_type == "float" and number.meta["human_or_machine"] == "human"
    assert word.answer_type == "text" and word.meta["human_or_machine"] == "machine"
    assert percent.meta["labels"] == ["45%", "45"] and percent.id == "chartqa-test-2"


def test_vqav2(tmp_path, cache):
    ds = load("vqav2", cache, path=hub.write_vqav2(str(tmp_path / "vqa")))
    check_common(ds, "vqav2")
    s = ds[0]
    assert s.id == "42001" and s.answer == "red" and s.answer_type == "vqa"
    assert len(s.meta["answers"]) == 10 and s.meta["answers"].count("red") == 8
    assert s.meta["answer_type"] == "other" and ds[1].meta["answer_type"] == "yes/no"


def test_scienceqa(tmp_path, cache):
    ds = load("scienceqa", cache, path=hub.write_scienceqa(str(tmp_path / "sqa")), config="ScienceQA-IMG")
    check_common(ds, "scienceqa")
    no_hint, hinted = ds
    assert no_hint.answer == "A" and no_hint.meta["answer_index"] == 0 and "hint" not in no_hint.meta
    assert hinted.answer == "B" and hinted.meta["answer_index"] == 1 and hinted.choices == ["hare", "camel"]
    text = question_text(hinted)  # the hint (ScienceQA's context) comes before the question
    assert text.index("Hint: Lynxes") < text.index("Which animal") < text.index("B. camel")


def test_mmmu_images_follow_markers(tmp_path, cache):
    ds = load("mmmu", cache, path=hub.write_mmmu(str(tmp_path / "mmmu")))
    check_common(ds, "mmmu")
    first, option_images, open_q = ds
    assert first.choices == ["The first", "The second", "They're the same age"] and first.answer == "B"
    assert [load_image(r).size for r in first.images] == [(24, 16), (20, 20)]
    assert first.meta["subject"] == "Art" and first.meta["img_type"] == ["Paintings"]
    # markers kept in the question and the options; the prompt puts each image at its marker
    assert "<image 1>" in option_images.question and option_images.choices == ["<image 2>", "<image 3>"]
    messages = build_messages(option_images, style="direct")
    assert image_order(messages) == [0, 1, 2]
    assert open_q.answer == "3" and open_q.answer_type == "math" and open_q.choices is None


# --- malformed records: error names source/record/field; skip counts ----------------------------


BAD_CASES = [
    # (source, writer, row index to break, mutation, field named in the error)
    ("geometry3k", hub.write_geometry3k, hub.geometry3k_rows, lambda r: r.update(problem=None), "problem"),
    ("geometry3k", hub.write_geometry3k, hub.geometry3k_rows, lambda r: r.update(images=[hub.CORRUPT]), "images[0]"),
    ("mathvista", hub.write_mathvista, hub.mathvista_rows, lambda r: r.update(answer="quarter"), "answer"),
    ("mathvista", hub.write_mathvista, hub.mathvista_rows, lambda r: r.update(question_type="essay"), "question_type"),
    ("mathverse", hub.write_mathverse, hub.mathverse_rows, lambda r: r.update(problem_version="Vision Max"),
     "problem_version"),
    ("geoqa", hub.write_geoqa, hub.geoqa_rows, lambda r: r.update(image=None), "image"),
    ("clevr_count", hub.write_clevr, hub.clevr_rows, lambda r: r.update(solution="<answer>many</answer>"), "solution"),
    ("chartqa", hub.write_chartqa, hub.chartqa_rows, lambda r: r.update(label=[]), "label"),
    ("vqav2", hub.write_vqav2, hub.vqav2_rows, lambda r: r.update(answers=[]), "answers"),
    ("scienceqa", hub.write_scienceqa, hub.scienceqa_rows, lambda r: r.update(answer=7), "answer"),
    ("mmmu", hub.write_mmmu, None, lambda r: r.update(options="__import__('os').system('echo pwned')"), "options"),
    ("mmmu", hub.write_mmmu, None, lambda r: r.update(image_2=None), "image_2"),
]


@pytest.mark.parametrize("source,writer,rows_fn,mutate,field", BAD_CASES,
                         ids=[f"{c[0]}-{c[4]}" for c in BAD_CASES])
def test_bad_record_is_named_or_skipped(tmp_path, cache, source, writer, rows_fn, mutate, field):
    rows = rows_fn() if rows_fn else hub.mmmu_rows()
    mutate(rows[0])
    root = str(tmp_path / source)
    if source == "mmmu":
        writer(root, {"Art": rows})
    else:
        writer(root, rows)
    split = {"chartqa": "test"}.get(source)
    with pytest.raises(BadRecord) as err:
        load(source, cache, path=root, split=split)
    assert err.value.source == source and err.value.field_name == field
    assert f"field {field!r}" in str(err.value) and source in str(err.value)
    kept = load(source, cache, path=root, split=split, on_bad_record="skip")
    assert kept.skipped == 1 and len(kept) == len(rows) - 1
    assert skipped_report({source: kept}) == {source: 1}
    assert f"{source}: skipped 1" in format_skipped({source: kept})


def test_zero_size_and_missing_image_files(tmp_path, cache):
    path, image_dir = hub.write_superclevr(str(tmp_path / "sc"), n=3)
    open(os.path.join(image_dir, "superCLEVR_new_000001.png"), "wb").close()  # 0 bytes
    os.remove(os.path.join(image_dir, "superCLEVR_new_000002.png"))
    with pytest.raises(BadRecord, match="image_path"):
        load("superclevr", cache, path=path, image_dir=image_dir)
    kept = load("superclevr", cache, path=path, image_dir=image_dir, on_bad_record="skip")
    assert len(kept) == 1 and kept.skipped == 2 and any("not found" in m for m in kept.bad_records)
    # check_images=False defers image checks to decoding (and does not read the image columns)
    lazy = load("superclevr", cache, path=path, image_dir=image_dir, check_images=False)
    assert len(lazy) == 3
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(lazy[1].images[0])


def test_duplicate_ids_are_bad_records(tmp_path, cache):
    rows = hub.geometry3k_rows()
    rows[3]["id"] = rows[0]["id"]
    root = hub.write_geometry3k(str(tmp_path / "dup"), rows)
    with pytest.raises(BadRecord, match="unique"):
        load("geometry3k", cache, path=root)
    assert len(load("geometry3k", cache, path=root, on_bad_record="skip")) == 3


def test_wrong_types_are_named(tmp_path, cache):
    rows = [{"image_path": "a.png", "question": "How many?", "ground_truth": "lots"}]
    hub.write_image_files(str(tmp_path), ["a.png"])
    path = hub.write_jsonl(str(tmp_path / "rows.jsonl"), rows)
    with pytest.raises(BadRecord, match=r"superclevr: record 'superclevr-test-0': field 'ground_truth'"):
        load("superclevr", cache, path=path)


# --- loader options, streaming, hub path -------------------------------------------------------


def test_streaming_gives_the_same_samples_with_bounded_reads(tmp_path, cache):
    rows = hub.geoqa_rows(6)
    rows[2]["solution"] = ""
    root = hub.write_geoqa(str(tmp_path / "geoqa"), rows)
    table = load("geoqa", cache, path=root, on_bad_record="skip")
    stream = load("geoqa", cache, path=root, on_bad_record="skip", streaming=True)
    assert isinstance(stream, SampleStream) and not hasattr(stream, "__len__")
    assert [s.id for s in stream] == table.ids and stream.skipped == table.skipped == 1
    assert [s.answer for s in stream] == [s.answer for s in table]
    # resume inside a pass: raw position 3 (the bad record at 2 already consumed)
    it = stream.iter_from(3)
    assert [s.id for s in it] == table.ids[2:] and it.position == 6
    assert len(list(load("geoqa", cache, path=root, streaming=True, limit=2, on_bad_record="skip"))) == 2


def test_limit_and_option_errors(tmp_path, cache):
    root = hub.write_clevr(str(tmp_path / "clevr"), hub.clevr_rows(6))
    assert len(load("clevr_count", cache, path=root, limit=3)) == 3
    with pytest.raises(KeyError, match="did you mean 'image_dir'"):
        load("clevr_count", cache, path=root, imagedir="x")
    with pytest.raises(ValueError, match="on_bad_record"):
        load("clevr_count", cache, path=root, on_bad_record="ignore")
    with pytest.raises(FileNotFoundError, match="local path not found"):
        load("clevr_count", cache, path=str(tmp_path / "missing" / "file.parquet"))
    with pytest.raises(FileNotFoundError, match="split 'validation'"):
        load("clevr_count", cache, path=root, split="validation")
    with pytest.raises(ValueError, match="no hub copy"):
        load("superclevr", cache)


def _no_rows():
    yield from ()


def test_hub_id_path(tmp_path, cache, monkeypatch):
    """`path=<hub id>` calls `datasets.load_dataset(hub_id, config, split=..., streaming=...)`;
    MMMU with `config=None` loads every subject config and concatenates them."""
    hub.write_mmmu(str(tmp_path / "mmmu"), {"Art": hub.mmmu_rows("Art"), "Math": hub.mmmu_rows("Math")})
    hub.write_scienceqa(str(tmp_path / "sqa"))
    real = datasets.load_dataset
    calls = []

    def fake(path, name=None, split=None, streaming=False, cache_dir=None, **kw):
        if path in ("parquet", "json", "csv"):
            return real(path, split=split, streaming=streaming, cache_dir=cache_dir, **kw)
        calls.append((path, name, split, streaming))
        folder = {"MMMU/MMMU": tmp_path / "mmmu" / str(name), "lmms-lab/ScienceQA": tmp_path / "sqa" / str(name)}[path]
        files = sorted(str(f) for f in folder.glob(f"{split}-*.parquet"))
        if not files:  # subjects without a fixture: an empty table of the same schema
            if streaming:
                return datasets.IterableDataset.from_generator(_no_rows, features=hub.MMMU_FEATURES)
            return datasets.Dataset.from_dict({k: [] for k in hub.MMMU_FEATURES}, features=hub.MMMU_FEATURES)
        return real("parquet", data_files={"train": files}, split="train", streaming=streaming, cache_dir=cache)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    sqa = load_source("scienceqa", split="test")
    assert calls == [("lmms-lab/ScienceQA", "ScienceQA-IMG", "test", False)] and len(sqa) == 2
    calls.clear()
    mmmu = load_source("mmmu")
    assert len(calls) == 30 and {c[0] for c in calls} == {"MMMU/MMMU"} and len(mmmu) == 6
    assert {s.meta["subject"] for s in mmmu} == {"Art", "Math"}
    calls.clear()
    art = list(load_source("mmmu", config="Art", streaming=True))
    assert calls == [("MMMU/MMMU", "Art", "validation", True)] and len(art) == 3
    calls.clear()
    every = list(load_source("mmmu", streaming=True))
    assert len(calls) == 30 and [s.id for s in every] == [s.id for s in mmmu]


def test_split_by_id_is_deterministic_and_disjoint(tmp_path, cache):
    root = hub.write_clevr(str(tmp_path / "clevr"), hub.clevr_rows(40))
    ds = load("clevr_count", cache, path=root)
    train, held = split_by_id(ds, heldout_fraction=0.25, seed=3)
    assert len(train) + len(held) == 40 and 3 <= len(held) <= 18
    assert not set(train.ids) & set(held.ids)
    assert [s.id for s in held] == held.ids  # lazy views over the same samples
    again_train, again_held = split_by_id(ds, 0.25, seed=3)
    assert again_held.ids == held.ids
    assert split_by_id(ds, 0.25, seed=4)[1].ids != held.ids
    # a sample's side depends on its id only: a prefix of the source splits the same way
    prefix_held = split_by_id(load("clevr_count", cache, path=root, limit=20), 0.25, seed=3)[1]
    assert prefix_held.ids == [i for i in held.ids if int(i.rsplit("-", 1)[1]) < 20]
    s_train, s_held = split_by_id(load("clevr_count", cache, path=root, streaming=True), 0.25, seed=3)
    assert [s.id for s in s_held] == held.ids and [s.id for s in s_train] == train.ids
    with pytest.raises(ValueError):
        split_by_id(ds, 1.5)


def test_images_decode_and_resize_through_qwen_vl_utils(tmp_path, cache):
    from data_prep.vision import fit_image

    rows = hub.clevr_rows(1)
    rows[0]["image"] = {"bytes": hub.png((10, 200, 10), size=(480, 320), fmt="JPEG"), "path": None}
    ds = load("clevr_count", cache, path=hub.write_clevr(str(tmp_path / "c"), rows))
    image = fit_image(ds[0].images[0], min_pixels=56 * 56, max_pixels=224 * 224)
    assert isinstance(image, Image.Image) and image.width % 28 == 0 and image.height % 28 == 0
    assert image.width * image.height <= 224 * 224
