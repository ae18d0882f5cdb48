"""The GPG paper's multimodal recipes (configs/gpg_*.yaml and their GRPO twins, docs/recipes.md):
each loads and validates as written, and runs two training steps with its model swapped for the
tiny model of the same family and its data for fixture files in the same hub schema.

The overrides of a run, and why each is there (the run folder's config.yaml is checked to differ
from the recipe in exactly these keys):
- `model.path`, `model.init_tiny`, `model.tiny_family`: the tiny model of the recipe's family
  (no hub access here). Qwen2-VL recipes use the session's tiny Qwen2-VL; the GeoQA recipe a tiny
  Qwen2.5-VL.
- `data.train`, `data.heldout`: the recipe's own entries with `options.path` pointed at a fixture in
  the source's schema (every other option kept).
- `train.steps=2`: two steps.
- `rollout.max_new_tokens`, `eval.max_new_tokens`: CPU time. The tiny model's random weights
  rarely emit the end-of-turn token, so every completion runs to the cap (256 to 1024 tokens in
  the recipes) for 8 x 16 completions and up to 20 draws a step; 16 tokens exercise the same code.
- `output_dir`, `progress`: where the run writes, and no progress bars in the test log.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fixtures_data import hub
from fixtures_data import sat_cvbench as fx
from mm_gpg.config import load_config, to_dict

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
PAIRS = ("geoqa_qwen25vl3b", "clevr_qwen2vl2b", "sat_qwen2vl2b")
RECIPES = [f"{algo}_{name}" for name in PAIRS for algo in ("gpg", "grpo")]
FAMILY = {"geoqa_qwen25vl3b": "qwen2_5_vl", "clevr_qwen2vl2b": "qwen2_vl", "sat_qwen2vl2b": "qwen2_vl"}
# the real model each recipe trains (what the tiny family stands in for)
MODEL = {"geoqa_qwen25vl3b": "Qwen/Qwen2.5-VL-3B-Instruct", "clevr_qwen2vl2b": "Qwen/Qwen2-VL-2B-Instruct",
         "sat_qwen2vl2b": "Qwen/Qwen2-VL-2B"}
CPU_CAP = 16  # new tokens per completion in the test runs (see the module docstring)


def _pair(recipe: str) -> str:
    return recipe.split("_", 1)[1]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, str]:
    """{source: path} of fixture files in each source's hub (or R1-V) schema."""
    root = tmp_path_factory.mktemp("recipe_data")
    geoqa_eval, _ = hub.write_geoqa_eval(str(root / "geoqa_eval"))
    superclevr, _ = hub.write_superclevr(str(root / "superclevr"))
    return {"geoqa_train": hub.write_geoqa(str(root / "geoqa_train")),        # GEOQA_R1V_Train_8K form
            "geoqa_test": geoqa_eval,                                         # geoqa_test_prompts.jsonl
            "clevr_count": hub.write_clevr(str(root / "clevr")),              # clevr_cogen_a_train form
            "superclevr": superclevr,                                         # R1-V's SuperCLEVR-200 rows
            "sat": fx.write_sat(str(root / "SAT")),                           # SAT_train.parquet
            "cv_bench": fx.write_cvbench(str(root / "CV-Bench"))}             # test.parquet


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    from mm_gpg.tiny import build_tiny
    return {"qwen2_vl": str(tiny_model_dir),
            "qwen2_5_vl": str(build_tiny(tmp_path_factory.mktemp("models") / "tiny-qwen25vl", seed=0,
                                         family="qwen2_5_vl"))}


def _fixture_for(entry: dict, fixtures: dict, role: str) -> str:
    source = entry["source"]
    return fixtures[f"geoqa_{'train' if role == 'train' else 'test'}"] if source == "geoqa" else fixtures[source]


def _swapped(entries: list[dict], fixtures: dict, role: str) -> list[dict]:
    """The recipe's entries with only `options.path` changed."""
    return [{**e, "options": {**e.get("options", {}), "path": _fixture_for(e, fixtures, role)}} for e in entries]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_loads_validates_and_says_its_command(recipe):
    path = CONFIGS / f"{recipe}.yaml"
    assert path.read_text().splitlines()[0] == f"# mm-gpg train --config configs/{recipe}.yaml"
    config = load_config(path)  # every check `mm-gpg train --check` runs
    pair = _pair(recipe)
    assert config.model.path == MODEL[pair] and config.algorithm.name == recipe.split("_")[0]
    assert config.output_dir == f"runs/{recipe}"
    # the official scripts' shared settings (see each file's comments)
    assert (config.rollout.group_size, config.rollout.temperature, config.train.lr) == (8, 1.0, 1e-6)
    assert config.data.max_pixels == 401408 and config.algorithm.aggregation == "seq_mean"


@pytest.mark.parametrize("pair", PAIRS)
def test_the_grpo_twin_differs_only_in_the_algorithm(pair):
    gpg = _flat(to_dict(load_config(CONFIGS / f"gpg_{pair}.yaml")))
    grpo = _flat(to_dict(load_config(CONFIGS / f"grpo_{pair}.yaml")))
    differ = {k for k in gpg.keys() | grpo.keys() if gpg.get(k) != grpo.get(k)}
    assert {k.split(".")[0] for k in differ} == {"algorithm", "output_dir"}, differ
    assert (gpg["algorithm.name"], gpg["algorithm.min_valid_fraction"]) == ("gpg", 0.4)
    assert (grpo["algorithm.name"], grpo["algorithm.scale_rewards"], grpo["algorithm.kl_coef"]) == ("grpo", "std", 0.04)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_two_steps_on_the_tiny_model_and_fixtures(recipe, fixtures, tiny_models, tmp_path):
    from mm_gpg.cli import main

    path = CONFIGS / f"{recipe}.yaml"
    raw = yaml.safe_load(path.read_text())
    family = FAMILY[_pair(recipe)]
    train = _swapped(raw["data"]["train"], fixtures, "train")
    heldout = _swapped(raw["data"]["heldout"], fixtures, "heldout")
    overrides = [f"model.path={tiny_models[family]}", "model.init_tiny=true", f"model.tiny_family={family}",
                 f"data.train={json.dumps(train)}", f"data.heldout={json.dumps(heldout)}",
                 "train.steps=2", f"rollout.max_new_tokens={CPU_CAP}", f"eval.max_new_tokens={CPU_CAP}",
                 f"output_dir={tmp_path / 'run'}", "progress=false"]
    assert main(["train", "--config", str(path), *overrides]) == 0
    run = tmp_path / "run"

    # the run's resolved config is the recipe's but for the overrides above
    ran = _flat(yaml.safe_load((run / "config.yaml").read_text()))
    recipe_config = _flat(to_dict(load_config(path)))
    differ = {k for k in ran.keys() | recipe_config.keys() if ran.get(k) != recipe_config.get(k)}
    assert differ <= {"model.path", "model.init_tiny", "model.tiny_family", "data.train", "data.heldout",
                      "train.steps", "rollout.max_new_tokens", "eval.max_new_tokens", "output_dir", "progress"}, differ
    assert {"model.path", "model.init_tiny", "data.train", "data.heldout", "train.steps"} <= differ

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    if recipe.startswith("gpg"):  # GPG's resampling and correction factor at work
        assert all("alpha" in r and 1 <= r["groups/draws"] <= 20 for r in steps)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["heldout_n"] == len(heldout_samples(heldout))
    assert (run / "final" / "config.json").is_file()


def heldout_samples(entries: list[dict]) -> list:
    from data_prep.registry import load_source
    return [s for e in entries for s in load_source(e["source"], **e.get("options", {}))]
