"""Every bad setting is refused up front (issue 16): exit status 2 and one line naming the key,
never a traceback, before anything is loaded. A property-based fuzz run (hypothesis) draws
invalid values for every numeric and enum key (and broken relations between keys) and checks
`mm-gpg train --check`, the CLI's validation entry point, in this process."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_gpg.cli import main
from mm_gpg.config import FLOAT_RANGES, INT_RANGES, Config

ENUMS = {
    "rollout.engine": ["hf", "vllm"], "model.dtype": None, "model.device": None, "model.attn_implementation": None,
    "algorithm.name": None, "algorithm.scale_rewards": ["none", "std"], "algorithm.aggregation": None,
    "data.prompt_style": None, "train.resume": None, "train.bf16": None,
}
"""Enum-like keys (None: the valid set is the code's; the drawn values are never valid ones)."""


def _numeric_keys(cls=Config, prefix="") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += _numeric_keys(type(default), prefix + f.name + ".")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_key_has_a_checked_range():
    missing = [k for k in _numeric_keys() if k not in INT_RANGES and k not in FLOAT_RANGES]
    assert not missing, f"numeric config keys without a range check: {missing}"


def _render(value) -> str:
    """The override text YAML reads back as `value`."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-3].strip() if text.endswith("...") else text


WRONG_TYPES = st.one_of(st.booleans(), st.lists(st.integers(), max_size=2),
                        st.text("abcdxyz", min_size=1, max_size=6).map(lambda t: "x" + t),
                        st.dictionaries(st.sampled_from("ab"), st.integers(), min_size=1, max_size=1))


def _bad_int(key: str):
    low, high = INT_RANGES[key]
    options = [st.integers(max_value=low - 1), WRONG_TYPES,
               st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer())]
    if key != "eval.suite_limit":  # null means "no limit" there
        options.append(st.none())
    if high is not None:
        options.append(st.integers(min_value=high + 1))
    return st.one_of(*options)


def _bad_float(key: str):
    bounds = FLOAT_RANGES[key]
    low, high, low_in = bounds[:3]
    high_in = bounds[3] if len(bounds) > 3 else True
    options = [st.floats(max_value=low, exclude_max=low_in, allow_nan=False, allow_infinity=True),
               st.sampled_from([math.nan, math.inf, -math.inf]), WRONG_TYPES, st.none()]
    if high is not None:
        options.append(st.floats(min_value=high, exclude_min=high_in, allow_nan=False))
    return st.one_of(*options)


def _bad_enum(key: str):
    valid = ENUMS[key] or []
    text = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda t: "bad-" + t)
    values = st.one_of(text, st.lists(st.integers(), min_size=1, max_size=2), st.floats(allow_nan=True))
    if key == "train.resume":  # any string is a path; the wrong types are what to refuse
        values = st.one_of(st.lists(st.integers(), min_size=1, max_size=2), st.integers(), st.just(""))
    if key == "train.bf16":
        values = st.one_of(text, st.integers(), st.lists(st.integers(), min_size=1, max_size=2))
    return values.filter(lambda v: v not in valid)


def _single(key: str):
    if key in INT_RANGES:
        return _bad_int(key).map(lambda v: (key, [f"{key}={_render(v)}"]))
    if key in FLOAT_RANGES:
        return _bad_float(key).map(lambda v: (key, [f"{key}={_render(v)}"]))
    return _bad_enum(key).map(lambda v: (key, [f"{key}={_render(v)}"]))


RELATIONS = st.one_of(
    st.tuples(st.integers(2, 10 ** 7), st.integers(1, 10 ** 7)).filter(lambda p: p[0] > p[1]).map(
        lambda p: ("data.min_pixels", [f"data.min_pixels={p[0]}", f"data.max_pixels={p[1]}"])),
    st.sampled_from(["gpu_memory_utilization", "max_model_len", "dtype", "enforce_eager"]).map(
        lambda k: ("rollout.vllm", ["rollout.engine=hf", f"rollout.vllm={{{k}: 1}}"])),
    st.text("abcdefghij", min_size=3, max_size=8).map(
        lambda k: ("rollout.vllm", ["rollout.engine=vllm", f"rollout.vllm={{zz_{k}: 1}}"])),
)

CASES = st.one_of(st.sampled_from(sorted([*INT_RANGES, *FLOAT_RANGES, *ENUMS])).flatmap(_single), RELATIONS)


def _check(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", "--check", *args])
    return rc, out.getvalue(), err.getvalue()


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(CASES)
def test_fuzzed_invalid_settings_exit_2_with_one_line_naming_the_key(case):
    key, args = case
    rc, out, err = _check(args)
    lines = err.splitlines()
    assert rc == 2, (args, out, err)
    assert len(lines) == 1 and lines[0].startswith("mm-gpg: error:"), (args, err)
    assert key in lines[0], (args, err)


@pytest.mark.parametrize("args, key", [
    (["train.steps=-1"], "train.steps"), (["warmstart.steps=-5"], "warmstart.steps"),
    (["rollout.top_p=5.0"], "rollout.top_p"), (["eval.samples=0"], "eval.samples"),
    (["rollout.temperature=0"], "rollout.temperature"), (["rollout.temperature=-1"], "rollout.temperature"),
    (["rollout.max_new_tokens=0"], "rollout.max_new_tokens"),
    (["train.micro_batch_groups=0"], "train.micro_batch_groups"),
    (["data.min_pixels=50000", "data.max_pixels=1000"], "data.min_pixels"),
    (["reward_timeout_s=.inf"], "reward_timeout_s"), (["rollout.vllm={dtype: bfloat16}"], "rollout.vllm"),
    (["data.train=[{source: synthetic, weight: .nan}]"], "data.train[0].weight"),
    (["data.train=[{source: nope}]"], "data.train[0].source"),
    (["rewards=[{name: accuracy, weight: .inf}]"], "rewards"),
])
def test_the_reported_settings_are_refused_up_front(args, key):
    rc, _, err = _check(args)
    assert rc == 2 and len(err.splitlines()) == 1 and key in err, err


def test_valid_settings_pass_the_check():
    rc, out, err = _check(["--config", "configs/tiny_synthetic.yaml", "train.steps=3", "rollout.top_p=0.9"])
    assert rc == 0 and "config OK" in out and not err


def test_score_refuses_an_infinite_timeout(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"response": "1", "answer": "1"}\n')
    assert main(["score", str(src), "--verifier", "auto", "--output", str(tmp_path / "o.jsonl"),
                 "--timeout", "inf"]) == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and len(err.splitlines()) == 1 and not (tmp_path / "o.jsonl").exists()


BOMB = """data:
  train:
    - source: synthetic
      options:
        a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
""" + "".join(f"        {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """9 ** 9 (387 million) strings in a dozen lines: refused while composing, in well under a
    second, with no MemoryError; a config that uses an anchor sensibly still loads."""
    import time
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.perf_counter()
    rc, _, err = _check(["--config", str(path)])
    assert rc == 2 and len(err.splitlines()) == 1 and str(path) in err and "alias" in err, err
    assert time.perf_counter() - started < 5
    rc, _, err = _check(["data.train=[{source: synthetic, options: {x: &a [1, 2, 3], y: [*a, *a, *a, *a, *a, *a, *a, *a, "
                         "*a, *a, *a, *a, *a, *a]}}]"])
    assert rc == 2 and "data.train[0].options.x" in err  # small: expands fine, then the option name is refused
    fine = tmp_path / "fine.yaml"
    fine.write_text("data:\n  train:\n    - {source: synthetic, options: &o {split: train, size: 50}}\n"
                    "  heldout:\n    - {source: synthetic, options: *o}\n")
    rc, out, err = _check(["--config", str(fine)])
    assert rc == 0, err


def test_deeply_nested_yaml_is_one_error_line(tmp_path):
    for depth in (300, 100_000):
        path = tmp_path / f"deep{depth}.yaml"
        path.write_text("data:\n  train: " + "[" * depth + "]" * depth + "\n")
        rc, _, err = _check(["--config", str(path)])
        assert rc == 2 and len(err.splitlines()) == 1 and "nested" in err and str(path) in err, err[-500:]


def test_source_options_are_checked_before_anything_uses_them():
    rc, _, err = _check(["data.train=[{source: synthetic, options: {sise: 5}}]"])
    assert rc == 2 and "data.train[0].options.sise" in err and "did you mean 'size'" in err
    rc, _, err = _check(["data.heldout=[{source: geometry3k, options: {paht: x}}]"])
    assert rc == 2 and "data.heldout[0].options.paht" in err
