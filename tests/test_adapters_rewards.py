"""Contract between the adapters and the verifiers: every adapter's Samples route to a verifier
that scores the gold answer 1 and a wrong one 0 (the meta keys the verifiers read are filled)."""
from __future__ import annotations

import datasets
import pytest

from data_prep.registry import load_source
from fixtures_data import hub

rewards = pytest.importorskip("rewards")
datasets.disable_progress_bars()

WRITERS = {
    "geometry3k": (hub.write_geometry3k, {}), "mathvista": (hub.write_mathvista, {}),
    "mathverse": (hub.write_mathverse, {}), "geoqa": (hub.write_geoqa, {}),
    "clevr_count": (hub.write_clevr, {}), "chartqa": (hub.write_chartqa, {"split": "test"}),
    "vqav2": (hub.write_vqav2, {}), "scienceqa": (hub.write_scienceqa, {}), "mmmu": (hub.write_mmmu, {}),
}
EXPECTED_ROUTES = {"mathvista": "mathvista", "chartqa": "relaxed", "vqav2": "vqa", "scienceqa": "scienceqa",
                   "mmmu": "mmmu", "clevr_count": "numeric", "geometry3k": "math", "geoqa": "math"}


def score(verifier, text, sample):
    out = verifier(f"<think>working</think><answer>{text}</answer>", sample)
    return getattr(out, "score", out)


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_gold_scores_one_and_a_wrong_answer_zero(tmp_path, source):
    writer, options = WRITERS[source]
    samples = load_source(source, path=writer(str(tmp_path / source)), cache_dir=str(tmp_path / "c"), **options)
    for sample in samples:
        name = rewards.route(sample)
        if source in EXPECTED_ROUTES:
            assert name == EXPECTED_ROUTES[source], (sample.id, name)
        verifier = rewards.get_verifier(name)
        assert score(verifier, sample.answer, sample) == 1.0, (source, sample.id, sample.answer)
        assert score(verifier, "zzz 987654", sample) == 0.0, (source, sample.id)


def test_unicode_root_gold(tmp_path):
    """GeoQA writes roots as `2√{3}`; the gold must match the LaTeX form a model writes."""
    rows = hub.geoqa_rows(4)[3:]
    sample = load_source("geoqa", path=hub.write_geoqa(str(tmp_path / "g"), rows), cache_dir=str(tmp_path / "c"))[0]
    assert sample.answer == "2√{3}"
    verifier = rewards.get_verifier(rewards.route(sample))
    assert score(verifier, "2\\sqrt{3}", sample) == 1.0
