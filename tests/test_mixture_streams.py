"""Mixture over Sequence and iterable (streaming) sources: weights, determinism, epochs, and
resumption from `state_dict` equal to the uninterrupted run; plus the geometry3k + GeoQA + CLEVR
training mixture built from its `data.train` entries on local fixtures."""
from __future__ import annotations

import datasets
import pytest
import yaml

from data_prep.mixture import Mixture, shard
from data_prep.registry import load_source
from data_prep.schema import Sample, load_image
from fixtures_data import hub

datasets.disable_progress_bars()


def samples(prefix: str, n: int) -> list[Sample]:
    return [Sample(id=f"{prefix}{i}", question="q", answer=str(i), answer_type="integer", task=prefix)
            for i in range(n)]


class PlainStream:
    """A re-iterable source with no random access and no `iter_from`."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def ids(batch):
    return [s.id for s in batch]


def test_sequences_only_behaves_as_before():
    mix = Mixture({"a": samples("a", 5), "b": samples("b", 3)}, {"a": 2, "b": 1}, seed=7)
    first = ids(mix.draw(12))
    state = mix.state_dict()
    assert set(state) == {"drawn", "positions"}  # no stream entry: old checkpoints stay valid
    rest = ids(mix.draw(9))
    again = Mixture({"a": samples("a", 5), "b": samples("b", 3)}, {"a": 2, "b": 1}, seed=7)
    assert ids(again.draw(12)) == first
    again.load_state_dict(state)
    assert ids(again.draw(9)) == rest
    # within an epoch of a source, no sample repeats
    a_ids = [i for i in first + rest if i.startswith("a")][:5]
    assert len(set(a_ids)) == 5


def test_streams_epochs_and_weights():
    mix = Mixture({"s": PlainStream(samples("s", 4)), "q": samples("q", 50)}, {"s": 1, "q": 1}, seed=1)
    drawn = ids(mix.draw(200))
    s_ids = [i for i in drawn if i.startswith("s")]
    assert 60 < len(s_ids) < 140  # about half
    assert s_ids[:8] == ["s0", "s1", "s2", "s3"] * 2  # stream order, restarted each epoch
    with pytest.raises(ValueError, match="empty"):
        Mixture({"e": PlainStream([])}, seed=0).draw(1)
    with pytest.raises(ValueError, match="unknown source"):
        Mixture({"a": samples("a", 2)}, {"typo": 1.0})


@pytest.mark.parametrize("kind", ["plain", "sample_stream"])
def test_resume_equals_the_uninterrupted_run(tmp_path, kind):
    if kind == "plain":
        def make():
            return {"s": PlainStream(samples("s", 7)), "q": samples("q", 5)}
    else:
        rows = hub.clevr_rows(9)
        rows[4]["solution"] = "no count here"  # a bad record inside the stream
        root = hub.write_clevr(str(tmp_path / "clevr"), rows)

        def make():
            return {"s": load_source("clevr_count", path=root, streaming=True, on_bad_record="skip",
                                     shuffle_buffer=4, seed=11, cache_dir=str(tmp_path / "cache")),
                    "q": samples("q", 5)}
    weights = {"s": 2.0, "q": 1.0}
    full = Mixture(make(), weights, seed=3)
    expected = ids(full.draw(40))
    part = Mixture(make(), weights, seed=3)
    head = ids(part.draw(17))
    state = part.state_dict()
    assert "s" in state["streams"] and "q" not in state["streams"]
    resumed = Mixture(make(), weights, seed=3)
    resumed.load_state_dict(state)
    assert head + ids(resumed.draw(23)) == expected
    if kind == "sample_stream":
        assert full.skipped() == {"s": 1}
        # the shuffle buffer reorders each epoch differently but reproducibly
        epoch = [i for i in expected if not i.startswith("q")]
        assert sorted(epoch[:8]) == sorted(f"clevr_count-train-{i}" for i in range(9) if i != 4)
        assert epoch[:8] != epoch[8:16]


def test_state_without_stream_positions_is_refused():
    mix = Mixture({"s": PlainStream(samples("s", 3))}, seed=0)
    with pytest.raises(ValueError, match="stream position"):
        mix.load_state_dict({"drawn": 0, "positions": {"s": 0}})


def test_shard_unchanged():
    items = list(range(8))
    assert shard(items, 1, 4) == [2, 3]
    with pytest.raises(ValueError):
        shard(items, 0, 3)


# The `data.train` entries for a geometry3k + GeoQA + CLEVR counting mixture on local copies of
# the hub files (the report hands these to the configs' owner). {root} is the data folder.
GEO_CLEVR_TRAIN = """
data:
  train:
    - source: geometry3k
      weight: 1.0
      options: {path: "{root}/geometry3k", split: train, on_bad_record: skip}
    - source: geoqa
      weight: 1.0
      options: {path: "{root}/GEOQA_R1V_Train_8K", split: train, on_bad_record: skip}
    - source: clevr_count
      weight: 0.5
      options: {path: "{root}/clevr_cogen_a_train", split: train, on_bad_record: skip}
"""


def test_geometry3k_geoqa_clevr_mixture_from_config_entries(tmp_path):
    root = str(tmp_path)
    hub.write_geometry3k(f"{root}/geometry3k", hub.geometry3k_rows(6))
    hub.write_geoqa(f"{root}/GEOQA_R1V_Train_8K", hub.geoqa_rows(8))
    hub.write_clevr(f"{root}/clevr_cogen_a_train", hub.clevr_rows(5))
    entries = yaml.safe_load(GEO_CLEVR_TRAIN.replace("{root}", root))["data"]["train"]
    sources, weights = {}, {}
    for i, entry in enumerate(entries):  # as data_prep.mixture.build_mixture does
        name = entry.get("name") or f"{entry['source']}#{i}"
        sources[name] = load_source(entry["source"], cache_dir=str(tmp_path / "cache"), **entry["options"])
        weights[name] = float(entry.get("weight", 1.0))
    assert [len(s) for s in sources.values()] == [6, 8, 5]
    mix = Mixture(sources, weights, seed=0)
    batch = mix.draw(50)
    tasks = [s.task for s in batch]
    assert {"geometry3k", "geoqa", "clevr_count"} == set(tasks)
    assert tasks.count("clevr_count") < tasks.count("geoqa")  # half the weight
    for s in batch[:6]:
        assert load_image(s.images[0]).size == (24, 16)
    assert {s.answer_type for s in batch} == {"math", "integer"}
