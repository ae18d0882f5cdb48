"""Eval suites: YAML files naming benchmarks (evaluation during training: eval.in_training).

A suite file (see `eval/suites/*.yaml`) holds a `name`, a `description`, `defaults` merged into
every entry, and `benchmarks`, a list of entries:

| key | meaning |
|---|---|
| `name` | the benchmark's name in reports (unique in the suite; default: `source`) |
| `source` | a registered data source (`data_prep.registry`): an adapter or `synthetic` |
| `split` | the split to read (passed to the source's loader) |
| `options` | more loader options (`path`, `config`, `image_dir`, `on_bad_record`, source options...) |
| `limit` | evaluate the first N samples (after `subset`) |
| `subset` | `{size: N, seed: S}`: N samples chosen by a hash of (seed, sample id), order-independent |
| `prompt_style` | `r1`, `boxed` or `direct` (`data_prep.prompts`) |
| `system_prompt` | system turn, or null for the chat template's default |
| `min_pixels`, `max_pixels` | image sizing (qwen-vl-utils) |
| `sampling` | `{n, greedy, temperature, top_p, top_k, max_new_tokens}`; greedy defaults to `n == 1` |
| `verifier` | a reward spec for `rewards.build_scorer`: `{name: accuracy, mode: official}` routes each sample to its benchmark's rule; `{name: mathvista, mode: lenient}` or `{fn: file.py:fn}` also work |
| `categories` | keys to break accuracy down by: `task`, `answer_type` or a `Sample.meta` key (list values count in each of their categories) |
| `batch_size` | prompts per generate call |
| `local`, `local_options` | with `--data-root DIR`: the data is read from `DIR/<local>` (default: the entry's name) when that exists, with `local_options` (relative `image_dir` resolved against it) |
| `max_skipped_fraction` | the benchmark fails (and `mm-gpg eval` exits 1) when its source skips more than this fraction of the records it read as malformed (default 0.05); one that reads 0 samples always fails |

One override syntax for every command (`mm-gpg train`, `mm-gpg eval`, `mm-gpg config show`):
`key=value`, here `defaults.<key>`, `<benchmark name>.<key>` or `benchmarks[i].<key>`, e.g.
`defaults.sampling.n=4`, `mathvista.options.path=/data/MathVista`. Overrides edit the file's
layers (defaults, an entry) before they are merged and checked. The merging and checks are the
training config's (mm_gpg.config: OmegaConf structured configs over the dataclasses below), so a
suite's keys, types and errors behave the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from data_prep.registry import did_you_mean
from mm_gpg.config import (ConfigError, build, check_mapping, escape_interpolations, join_key, merge_layer,
                           parse_override, read_yaml_file, schema_config, set_key, split_key)
from mm_gpg.sampling import SamplingParams, sampling_problems

SUITES_DIR = Path(__file__).resolve().parent / "suites"
PROMPT_STYLES = ("r1", "boxed", "direct")
PATH_OPTIONS = ("path", "image_dir")
OVERRIDE_EXAMPLE = "defaults.sampling.n=4 or mathvista.options.path=/data/MathVista"


class SuiteError(ConfigError):
    """A suite file or override that cannot be used; the message names the file and key."""


def _default_verifier() -> dict:
    return {"name": "accuracy", "mode": "official"}


@dataclass
class Benchmark:
    name: str = ""
    """The benchmark's name in reports, unique in the suite (default: `source`)."""
    source: str = ""
    """A registered data source (`data_prep.registry`): an adapter or `synthetic`."""
    split: str | None = None
    """The split to read (passed to the source's loader)."""
    options: dict = field(default_factory=dict)
    """More loader options (`path`, `config`, `image_dir`, `on_bad_record`, source options...)."""
    limit: int | None = None
    """Evaluate the first N samples (after `subset`); null: all."""
    subset: dict | None = None
    """`{size: N, seed: S}` (or just N): N samples chosen by a hash of (seed, sample id), so the
    choice does not depend on the source's order."""
    prompt_style: str = "r1"
    """r1 (<think>/<answer> tags), boxed (\\boxed{}) or direct (`data_prep.prompts`)."""
    system_prompt: str | None = None
    """System turn; null keeps the chat template's default."""
    min_pixels: int = 56 * 56
    """Smallest image area after qwen-vl-utils resizing."""
    max_pixels: int = 1280 * 28 * 28
    """Largest image area after qwen-vl-utils resizing (bounds image tokens)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=512, greedy=True))
    """How answers are drawn: {n, greedy, temperature, top_p, top_k, max_new_tokens}; greedy
    defaults to n == 1; n > 1 reports mean@n and pass@n. The seed comes from the run (--seed)."""
    verifier: dict = field(default_factory=_default_verifier)
    """A reward spec for `rewards.build_scorer`: {name: accuracy, mode: official} routes each
    sample to its benchmark's rule; {name: mathvista, mode: lenient} or {fn: file.py:fn} also
    work. An entry's verifier replaces the defaults' one whole (it is not merged key by key)."""
    categories: list = field(default_factory=list)
    """Keys to break accuracy down by: `task`, `answer_type` or a `Sample.meta` key (list values
    count in each of their categories); a single key may be given as a string."""
    batch_size: int = 8
    """Prompts per generate call."""
    local: str | None = None
    """With `--data-root DIR`: the data is read from DIR/<local> (default: the entry's name) when
    that exists."""
    local_options: dict = field(default_factory=dict)
    """Loader options used with the local copy (a relative `image_dir` is resolved against it)."""
    max_skipped_fraction: float = 0.05
    """More skipped (malformed) records than this fraction of those read fails the benchmark (and
    `mm-gpg eval` exits 1); one that reads 0 samples always fails."""

    def loader_options(self) -> dict:
        """Keyword arguments for `load_source(self.source, ...)` (without `limit`)."""
        opts = dict(self.options)
        if self.split is not None:
            opts["split"] = self.split
        return opts

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SuiteFile:
    """The shape of a suite YAML file (checked with the training config's machinery)."""
    name: str | None = None
    """The suite's name in reports (default: the file's name)."""
    description: str | None = None
    """One line saying what the suite measures."""
    defaults: dict | None = None
    """Entry keys merged into every benchmark entry (any key of a benchmark but name and source)."""
    benchmarks: list = field(default_factory=list)
    """The benchmark entries (a non-empty list of mappings, each with at least `source`)."""


@dataclass
class VerifierSpec:
    """The keys a benchmark's `verifier` may hold (the values are checked by rewards.build_scorer)."""
    name: str | None = None
    """A registered verifier (accuracy routes by task)."""
    fn: str | None = None
    """A plug-in: path/to/file.py:function or package.module:function."""
    mode: str | None = None
    """official or lenient."""


@dataclass
class SubsetSpec:
    """The keys of a benchmark's `subset`."""
    size: int | None = None
    """How many samples to choose (required, >= 1)."""
    seed: int = 0
    """Seeds the hash that chooses them."""


@dataclass
class Suite:
    name: str
    """The suite's name in reports."""
    description: str = ""
    """What it measures."""
    benchmarks: list = field(default_factory=list)
    """The resolved `Benchmark` entries, in the file's order."""
    path: str | None = None
    """The YAML file it was read from."""

    def to_dict(self) -> dict:
        """The resolved suite (what ran), without the file's location."""
        return {"name": self.name, "description": self.description,
                "benchmarks": [b.to_dict() for b in self.benchmarks]}

    def fingerprint(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def select(self, names: list[str]) -> "Suite":
        known = [b.name for b in self.benchmarks]
        for name in names:
            if name not in known:
                raise SuiteError(f"suite {self.name!r}: no benchmark {name!r}{did_you_mean(name, known)}; "
                                 f"it has {known}")
        return Suite(self.name, self.description, [b for b in self.benchmarks if b.name in names], self.path)


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name_or_path: str | os.PathLike) -> Path:
    """A built-in suite name (`synthetic`, `cross_modal`) or a YAML file path."""
    text = os.fspath(name_or_path)
    candidate = Path(os.path.expanduser(text))
    if candidate.suffix in (".yaml", ".yml") or os.sep in text or "/" in text:
        if not candidate.is_file():
            raise SuiteError(f"suite file not found: {text}")
        return candidate
    builtin = SUITES_DIR / f"{text}.yaml"
    if not builtin.is_file():
        raise SuiteError(f"unknown suite {text!r}{did_you_mean(text, suite_names())}; built-in suites: "
                         f"{suite_names()} (or give a path to a .yaml file)")
    return builtin


def _entry_label(entry: Any, i: int) -> str:
    return str(entry.get("name", entry.get("source", i))) if isinstance(entry, dict) else str(i)


def _layer(raw: Any, where: str) -> dict:
    """One layer of an entry (the defaults or an entry) with its shorthands written out:
    `subset: N` -> {size: N, seed: 0}, `categories: key` -> [key]."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a mapping, got {raw!r}")
    layer = dict(raw)
    subset = layer.get("subset")
    if isinstance(subset, int) and not isinstance(subset, bool):
        layer["subset"] = {"size": subset, "seed": 0}
    if isinstance(layer.get("categories"), str):
        layer["categories"] = [layer["categories"]]
    if isinstance(layer.get("sampling"), dict) and "seed" in layer["sampling"]:
        raise SuiteError(f"{where}.sampling: unknown key 'seed': the sampling seed comes from the run "
                         f"(mm-gpg eval --seed, train.seed)")
    return layer


def apply_override(data: dict, text: str, where: str) -> None:
    """One `key=value` suite override, applied to the file's document (its `defaults` or one
    entry's layer) with the training config's checks: the key must be a benchmark key (nearest
    one suggested), the value of its type; mappings merge key by key."""
    try:
        key, value = parse_override(text, example=OVERRIDE_EXAMPLE)
    except ConfigError as exc:
        raise SuiteError(f"{where}: {exc}") from None
    at = f"{where}: override {text!r}"
    parts = split_key(key, at)
    head, rest = parts[0], parts[1:]
    entries = data.get("benchmarks") if isinstance(data.get("benchmarks"), list) else []
    names = [_entry_label(e, i) for i, e in enumerate(entries)]
    if head == "benchmarks" and rest and isinstance(rest[0], int):
        if rest[0] >= len(entries):
            raise SuiteError(f"{at}: the suite has {len(entries)} benchmarks, so there is no benchmarks[{rest[0]}]")
        holder, slot, rest = entries, rest[0], rest[1:]
    elif head == "defaults":
        holder, slot = data, "defaults"
    elif isinstance(head, str) and head in names:
        holder, slot = entries, names.index(head)
    else:
        raise SuiteError(f"{at}: no benchmark {head!r}{did_you_mean(head, names)}; the key starts with "
                         f"'defaults.', a benchmark's name ({', '.join(names)}) or 'benchmarks[i].'")
    if not rest or isinstance(rest[0], int):
        raise SuiteError(f"{at}: name a benchmark key after {join_key(parts[:len(parts) - len(rest)])!r}, "
                         f"e.g. {OVERRIDE_EXAMPLE}")
    if slot == "defaults" and rest[0] in ("name", "source"):
        raise SuiteError(f"{at}: 'defaults' cannot set {rest[0]!r} (each entry has its own)")
    layer_cfg = OmegaConf.create(escape_interpolations(_layer(holder[slot], at)))
    set_key(layer_cfg, Benchmark, join_key(rest), value, at, noun="key")
    holder[slot] = OmegaConf.to_container(layer_cfg, resolve=True)


def _build_benchmark(defaults: dict, entry: dict, file_where: str, where: str) -> Benchmark:
    """defaults -> entry, merged onto Benchmark's own defaults, checked, resolved."""
    layers = [(_layer(defaults, f"{file_where}: defaults"), f"{file_where}: defaults"), (_layer(entry, where), where)]
    verifier = _default_verifier()
    cfg = schema_config(Benchmark)
    for layer, where in layers:
        if "verifier" in layer:  # replaced whole: {fn: ...} must not inherit the defaults' name
            verifier = layer.pop("verifier")
            if not isinstance(verifier, dict):
                raise SuiteError(f"{where}.verifier: expected a mapping like {{name: accuracy, mode: official}}, "
                                 f"got {verifier!r}")
            check_mapping(VerifierSpec, dict(verifier), f"{where}.verifier", noun="key", list_valid=True)
        if isinstance(layer.get("subset"), dict):
            check_mapping(SubsetSpec, dict(layer["subset"]), f"{where}.subset", noun="key", list_valid=True)
        cfg = merge_layer(cfg, Benchmark, layer, where, noun="key", list_valid=True)
    b = build(cfg, where)
    b.verifier = dict(verifier)
    b.name = b.name or b.source
    if not any("greedy" in (layer.get("sampling") or {}) for layer, _ in layers):
        b.sampling = dataclasses.replace(b.sampling, greedy=b.sampling.n == 1)
    _check_benchmark(b, where)
    return b


def _check_benchmark(b: Benchmark, where: str) -> None:
    if not b.source:
        raise SuiteError(f"{where}: 'source' is required (a registered data source, e.g. mathvista)")
    from data_prep.registry import source_names
    names = source_names()
    if b.source not in names:
        raise SuiteError(f"{where}.source: unknown data source {b.source!r}{did_you_mean(b.source, names)}; "
                         f"registered: {names}")
    if any(c in b.name for c in "/\\ \t\n"):
        raise SuiteError(f"{where}.name: expected a short name without spaces or slashes, got {b.name!r}")
    if b.prompt_style not in PROMPT_STYLES:
        raise SuiteError(f"{where}.prompt_style: unknown style {b.prompt_style!r}"
                         f"{did_you_mean(b.prompt_style, PROMPT_STYLES)}; valid: {list(PROMPT_STYLES)}")
    if "limit" in b.options:
        raise SuiteError(f"{where}.options: give 'limit' at the entry level, not in options")
    if b.limit is not None and b.limit < 0:
        raise SuiteError(f"{where}.limit: expected an integer >= 0 or null, got {b.limit!r}")
    if b.subset is not None:
        size, seed = b.subset.get("size"), b.subset.get("seed", 0)
        if size is None or size < 1:
            raise SuiteError(f"{where}.subset.size: expected an integer >= 1, got {size!r}")
        if seed < 0:
            raise SuiteError(f"{where}.subset.seed: expected an integer >= 0, got {seed!r}")
        b.subset = {"size": size, "seed": seed}
    if not all(isinstance(c, str) for c in b.categories):
        raise SuiteError(f"{where}.categories: expected a list of keys, got {b.categories!r}")
    for key in ("min_pixels", "max_pixels", "batch_size"):
        if getattr(b, key) < 1:
            raise SuiteError(f"{where}.{key}: expected an integer >= 1, got {getattr(b, key)!r}")
    if b.min_pixels > b.max_pixels:
        raise SuiteError(f"{where}: min_pixels {b.min_pixels} > max_pixels {b.max_pixels}")
    if not 0.0 <= b.max_skipped_fraction <= 1.0:
        raise SuiteError(f"{where}.max_skipped_fraction: expected a fraction in [0, 1], got {b.max_skipped_fraction!r}")
    for key, problem in sampling_problems(b.sampling):
        raise SuiteError(f"{where}.sampling.{key}: {problem}")


def load_suite(name_or_path: str | os.PathLike, overrides: list[str] = (), *, data_root: str | None = None,
               only: list[str] | None = None) -> Suite:
    """Read, merge (Benchmark's defaults -> the file's defaults -> entry, each after the
    `key=value` overrides edited it), check and resolve a suite."""
    path = suite_path(name_or_path)
    where = str(path) if path.parent != SUITES_DIR else f"suite {path.stem!r}"
    try:
        data = read_yaml_file(path)
        if data is None:
            data = {}
        check_mapping(SuiteFile, data, where, noun="key", list_valid=True)
        for item in overrides:
            apply_override(data, item, where)
        for key in ("name", "source"):
            if key in (data.get("defaults") or {}):
                raise SuiteError(f"{where}: defaults: unknown key {key!r}: each entry gives its own")
        entries = data.get("benchmarks")
        if not entries:
            raise SuiteError(f"{where}: 'benchmarks' must be a non-empty list")
        benchmarks, seen = [], set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise SuiteError(f"{where}: benchmarks[{i}]: expected a mapping with 'source'")
            b = _build_benchmark(data.get("defaults") or {}, entry, where,
                                 f"{where}: benchmarks[{_entry_label(entry, i)}]")
            if b.name in seen:
                raise SuiteError(f"{where}: two benchmarks are named {b.name!r}; give each a distinct 'name'")
            seen.add(b.name)
            benchmarks.append(b)
    except SuiteError:
        raise
    except ConfigError as exc:  # the shared machinery's errors, already naming the file and key
        raise SuiteError(str(exc)) from None
    suite = Suite(name=str(data.get("name") or path.stem), description=str(data.get("description") or ""),
                  benchmarks=benchmarks, path=str(path))
    if only:
        suite = suite.select(only)
    if data_root is not None:
        resolve_data_root(suite, data_root)
    return suite


def resolve_data_root(suite: Suite, data_root: str | os.PathLike) -> None:
    """Point each entry without an explicit `options.path` at `data_root/<local or name>` when that
    exists (its `local_options` applied, relative paths resolved against it)."""
    root = Path(os.path.expanduser(os.fspath(data_root)))
    if not root.is_dir():
        raise SuiteError(f"--data-root: not a directory: {root}")
    for b in suite.benchmarks:
        if "path" in b.options:
            continue
        local = root / (b.local or b.name)
        if not local.exists():
            continue
        b.options["path"] = str(local)
        for key, value in b.local_options.items():
            if key in PATH_OPTIONS and isinstance(value, str) and not os.path.isabs(value):
                value = str((local if local.is_dir() else local.parent) / value)
            b.options[key] = value


def apply_run_options(suite: Suite, *, limit: int | None = None, max_new_tokens: int | None = None,
                      batch_size: int | None = None, n: int | None = None,
                      temperature: float | None = None) -> None:
    """Command-line knobs that apply to every entry (`--limit` caps each entry's own limit)."""
    for b in suite.benchmarks:
        if limit is not None:
            b.limit = limit if b.limit is None else min(b.limit, limit)
        if batch_size is not None:
            b.batch_size = batch_size
        changes: dict = {}
        if max_new_tokens is not None:
            changes["max_new_tokens"] = max_new_tokens
        if temperature is not None:
            changes["temperature"] = temperature
        if n is not None:
            changes["n"] = n
            if n > 1:
                changes["greedy"] = False
            elif temperature is None:
                changes["greedy"] = True
        if changes:
            b.sampling = dataclasses.replace(b.sampling, **changes)