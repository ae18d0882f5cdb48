"""The config edge cases users hit (issue 14, item 3), each on the one config system that the
training config and the eval suites share (mm_gpg.config over OmegaConf): list entries addressed
by index, dict settings merged key by key, YAML 1.2 floats, Optional fields type-checked,
nearest-key suggestions from the same section, `mm-gpg config show`, one override syntax for
every command, one sampling type. Pure loading and checking: no model, milliseconds each."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re

import pytest
import yaml

from eval.cli import main as eval_main
from eval.suite import SuiteError, load_suite
from mm_gpg.cli import main
from mm_gpg.config import (Config, ConfigError, TrainConfig, all_keys, field_docs, load_config, nearest_key,
                           parse_override, safe_load_yaml, to_dict)
from mm_gpg.rollout import SamplingParams


def _run(entry, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = entry(args)
    return rc, out.getvalue(), err.getvalue()


# --- a list entry can be overridden ------------------------------------------------------------

def test_a_list_entry_is_addressed_by_index():
    config = load_config(None, ["data.heldout=[{source: geometry3k, options: {split: test}}]",
                                "data.heldout[0].options.path=/data/geometry3k", "data.train[0].weight=2"])
    assert config.data.heldout == [{"source": "geometry3k", "options": {"split": "test", "path": "/data/geometry3k"}}]
    assert config.data.train[0]["weight"] == 2 and config.data.train[0]["options"] == {"split": "train"}


@pytest.mark.parametrize("override, message", [
    ("data.train[3].weight=2", "'data.train' has 1 entry, so there is no [3]"),
    ("data.train.weight=2", "'data.train' is a list: address an entry by position, e.g. data.train[0].weight"),
    ("train[0].lr=1", "'train' is not a list"),
    ("train.lr.x=1", "key 'train.lr' is a float setting, not a section"),
    ("data.train[0]options=1", "malformed key 'data.train[0]options'"),
])
def test_bad_list_addresses_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=r"^override .*" + re.escape(message)):
        load_config(None, [override])


def test_a_suite_entry_is_addressed_by_name_or_index():
    suite = load_suite("cross_modal", ["benchmarks[1].limit=3", "mathverse.options.versions=[Vision Only]",
                                       "geoqa.local_options.image_dir=pics"])
    by = {b.name: b for b in suite.benchmarks}
    assert by["mathvista"].limit == 3 and by["geometry3k"].limit is None
    assert by["mathverse"].options == {"on_bad_record": "skip", "versions": ["Vision Only"]}
    assert by["geoqa"].local_options == {"image_dir": "pics"}
    with pytest.raises(SuiteError, match=r"suite 'cross_modal': override 'benchmarks\[99\].limit=3': the suite has "):
        load_suite("cross_modal", ["benchmarks[99].limit=3"])


# --- a dict override merges instead of replacing the dict --------------------------------------

def test_a_dict_override_merges_key_by_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  engine: vllm\n  vllm: {gpu_memory_utilization: 0.5, max_model_len: 4096}\n"
                    "train:\n  deepspeed: {zero_optimization: {offload_optimizer: {device: cpu}}}\n")
    config = load_config(path, ["rollout.vllm.enforce_eager=true",
                                "train.deepspeed.zero_optimization.reduce_bucket_size=5e7"])
    assert config.rollout.vllm == {"gpu_memory_utilization": 0.5, "max_model_len": 4096, "enforce_eager": True}
    assert config.train.deepspeed == {"zero_optimization": {"offload_optimizer": {"device": "cpu"},
                                                            "reduce_bucket_size": 5e7}}
    # a mapping value merges too; a list value replaces the list
    config = load_config(path, ["rollout.vllm={enforce_eager: true}", "rewards=[{name: accuracy, weight: 1.0}]"])
    assert config.rollout.vllm == {"gpu_memory_utilization": 0.5, "max_model_len": 4096, "enforce_eager": True}
    assert config.rewards == [{"name": "accuracy", "weight": 1.0}]


def test_a_section_given_as_a_mapping_merges_into_its_defaults():
    config = load_config(None, ["model.lora={r: 8}"])
    assert config.model.lora.r == 8 and config.model.lora.alpha == 16.0  # alpha kept from the defaults


# --- YAML 1.2 floats ---------------------------------------------------------------------------

def test_yaml_1_2_floats_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    # YAML 1.1 (PyYAML's safe_load) reads all three of these as strings: it needs a dot and a signed
    # exponent. YAML 1.2 reads them as 1e-06, 2000.0 and 0.05.
    path.write_text("train:\n  lr: 1e-6\n  collective_timeout_s: 2E3\nwarmstart:\n  lr: .5e-1\n")
    config = load_config(path)
    assert (config.train.lr, config.train.collective_timeout_s, config.warmstart.lr) == (1e-6, 2000.0, 0.05)
    assert load_config(None, ["train.lr=3e-5"]).train.lr == 3e-5
    assert safe_load_yaml("[1e3, 10, 1_000, '1e3', 1.5e+3, 0x10]", "t") == [1000.0, 10, 1000, "1e3", 1500.0, 16]
    assert parse_override("a=1e-6") == ("a", 1e-6)


def test_a_quoted_number_is_still_a_string():
    with pytest.raises(ConfigError, match=r"key 'train.lr' expects float, got '1e-6'"):
        load_config(None, ["train.lr='1e-6'"])
    with pytest.raises(ConfigError, match=r"key 'rollout.group_size' expects int, got '8'"):
        load_config(None, ["rollout.group_size='8'"])


def test_suite_files_read_yaml_1_2_floats_too(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("benchmarks:\n- {source: synthetic, max_skipped_fraction: 5e-2, sampling: {n: 2, temperature: 7e-1}}\n")
    b = load_suite(str(path)).benchmarks[0]
    assert b.max_skipped_fraction == 0.05 and b.sampling.temperature == 0.7 and not b.sampling.greedy


# --- fields whose default is None are type-checked ---------------------------------------------

@pytest.mark.parametrize("override, expects", [
    ("eval.suite_limit=abc", "key 'eval.suite_limit' expects int or null, got 'abc'"),
    ("data.system_prompt=5", "key 'data.system_prompt' expects str or null, got 5"),
    ("train.bf16=1", "key 'train.bf16': must be true, false or null, got 1"),
    ("train.resume=[1]", "key 'train.resume' expects str or null, got [1]"),
    ("algorithm.scale_rewards=true", "key 'algorithm.scale_rewards' expects str or null, got True"),
    ("eval.suite={a: 1}", "key 'eval.suite' expects str or null, got {'a': 1}"),
    ("train.lr=null", "key 'train.lr' expects float, got None"),  # null only where the field is Optional
])
def test_optional_fields_are_type_checked(override, expects):
    with pytest.raises(ConfigError, match=re.escape(expects)):
        load_config(None, [override])


def test_optional_fields_take_null_and_their_type():
    config = load_config(None, ["eval.suite_limit=null", "data.system_prompt=Be brief.", "train.bf16=true"])
    assert (config.eval.suite_limit, config.data.system_prompt, config.train.bf16) == (None, "Be brief.", True)


def test_optional_suite_fields_are_type_checked(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("benchmarks:\n- {source: synthetic, limit: ten}\n")
    with pytest.raises(SuiteError, match=r"s.yaml: benchmarks\[synthetic\]: key 'limit' expects int or null, got 'ten'"):
        load_suite(str(path))


# --- the nearest valid key comes from the same section -----------------------------------------

def test_nearest_key_prefers_the_same_section():
    # learning_rate's words' initials are l, r: `lr` is the same section's abbreviation of it (the
    # old whole-key spelling match gave 'train.max_nonfinite', which shares more letters).
    assert nearest_key("learning_rate", TrainConfig, "train.") == "train.lr"
    # `mnt` abbreviates max_new_tokens (m, n, t) in the rollout section
    assert nearest_key("mnt", type(Config().rollout), "rollout.") == "rollout.max_new_tokens"
    # `rank` starts with the section's `r` (difflib alone: ratio 2 * 1 / 5 = 0.4, and 'train' at 0.67)
    assert nearest_key("rank", type(Config().model.lora), "model.lora.", Config) == "model.lora.r"
    # a misspelling within the section: difflib ratio('group_sise', 'group_size') = 18/20 = 0.9
    assert nearest_key("group_sise", type(Config().rollout), "rollout.") == "rollout.group_size"
    # nothing close in the section: the same leaf in another section, then the closest key anywhere
    assert nearest_key("lr", type(Config().rollout), "rollout.", Config) == "train.lr"
    assert nearest_key("qqqq", TrainConfig, "train.", Config) is None


def test_unknown_keys_name_the_nearest_key_in_yaml_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match=r"^override 'train.learning_rate=1e-5': unknown config key "
                                          r"'train.learning_rate' \(did you mean 'train.lr'\?\)$"):
        load_config(None, ["train.learning_rate=1e-5"])
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'train.learning_rate' \(did you mean 'train.lr'"):
        load_config(path)
    rc, _, err = _run(main, ["train", "--check", "model.lora.rank=8"])
    assert rc == 2 and err.strip() == ("mm-gpg: error: override 'model.lora.rank=8': unknown config key "
                                       "'model.lora.rank' (did you mean 'model.lora.r'?)")


# --- mm-gpg config show ------------------------------------------------------------------------

def test_config_show_prints_the_resolved_config_with_every_docstring():
    rc, out, err = _run(main, ["config", "show", "--config", "configs/tiny_synthetic.yaml", "train.lr=1e-6",
                               "rollout.vllm.enforce_eager=true", "rollout.engine=vllm"])
    assert rc == 0 and not err
    expected = load_config("configs/tiny_synthetic.yaml", ["train.lr=1e-6", "rollout.vllm.enforce_eager=true",
                                                            "rollout.engine=vllm"])
    assert yaml.safe_load(out) == to_dict(expected)  # the printout is itself a loadable config
    lines = out.splitlines()
    for key in all_keys(Config):  # each key is printed under its docstring's last line
        section, _, leaf = key.rpartition(".")
        owner = Config
        for part in filter(None, section.split(".")):
            owner = type(getattr(owner(), part))
        doc_last = field_docs(owner)[leaf].splitlines()[-1]
        indent = "  " * key.count(".")
        at = [i for i, line in enumerate(lines) if line.startswith(f"{indent}{leaf}:")]
        assert any(lines[i - 1] == f"{indent}# {doc_last}".rstrip() for i in at), key


def test_config_show_for_a_suite_and_its_errors():
    rc, out, err = _run(main, ["config", "show", "--suite", "synthetic", "defaults.sampling.max_new_tokens=8"])
    assert rc == 0 and not err
    shown = yaml.safe_load(out)
    assert shown["benchmarks"] == load_suite("synthetic", ["defaults.sampling.max_new_tokens=8"]).to_dict()["benchmarks"]
    assert "    # How answers are drawn" in out and all(b["sampling"]["max_new_tokens"] == 8 for b in shown["benchmarks"])
    rc, out, err = _run(main, ["config", "show", "train.learning_rate=1"])
    assert rc == 2 and not out and err.count("\n") == 1 and "did you mean 'train.lr'" in err


# --- one override syntax across commands -------------------------------------------------------

def test_eval_takes_the_same_key_value_overrides_as_train(tmp_path):
    model = str(tmp_path)  # nothing is loaded: the suite is checked first
    for args in (["defaults.sampling.nn=2"], ["--set", "defaults.sampling.nn=2"]):
        rc, _, err = _run(eval_main, ["--model", model, "--suite", "synthetic", *args, "--quiet"])
        assert rc == 2 and err.count("\n") == 1, err
        assert ("override 'defaults.sampling.nn=2': unknown key 'sampling.nn' (did you mean 'sampling.n'?)"
                in err), err
    # the training config's eval.suite_overrides uses the suite syntax and is checked with the config
    rc, _, err = _run(main, ["train", "--check", "eval.suite=synthetic", "eval.suite_overrides=[count_shapes.limt=3]"])
    assert rc == 2 and "config key 'eval.suite_overrides'" in err and "did you mean 'limit'" in err, err
    rc, out, _ = _run(main, ["train", "--check", "eval.suite=synthetic", "eval.suite_overrides=[count_shapes.limit=3]"])
    assert rc == 0 and "config OK" in out


# --- values are literal ------------------------------------------------------------------------

def test_dollar_braces_are_kept_literally():
    # OmegaConf would read ${...} as an interpolation; a prompt may well contain it
    config = load_config(None, ["data.system_prompt=Answer in ${unit} or \\${x}, see ${"])
    assert config.data.system_prompt == "Answer in ${unit} or \\${x}, see ${"


# --- one sampling type -------------------------------------------------------------------------

def test_rollouts_suites_and_engines_share_one_sampling_type():
    from eval.core import sampling_params
    b = load_suite("synthetic").benchmarks[0]
    assert type(b.sampling) is SamplingParams and b.sampling.greedy and b.sampling.max_new_tokens == 64
    assert sampling_params(b, seed=7) == dataclasses.replace(b.sampling, seed=7)
    rollout = load_config(None, ["rollout.temperature=0.7", "rollout.top_k=5", "rollout.group_size=4"]).rollout
    assert rollout.sampling_params(seed=3) == SamplingParams(temperature=0.7, top_p=1.0, top_k=5,
                                                             max_new_tokens=24, greedy=False, seed=3, n=4)


def test_every_shown_key_has_a_docstring():
    """`config show` prints field docstrings: the suite's and the sampling type's fields have them too."""
    from eval.suite import Benchmark, Suite, SuiteFile
    for cls in (Benchmark, Suite, SuiteFile, SamplingParams, Config):
        fields = [f.name for f in dataclasses.fields(cls)]
        assert set(field_docs(cls)) == set(fields), (cls.__name__, set(fields) - set(field_docs(cls)))
