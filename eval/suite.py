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

Command-line `--set` overrides edit the raw YAML before it is checked: `defaults.sampling.n=4`,
`mathvista.options.path=/data/MathVista`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from data_prep.registry import did_you_mean

SUITES_DIR = Path(__file__).resolve().parent / "suites"
PROMPT_STYLES = ("r1", "boxed", "direct")
ENTRY_KEYS = ("name", "source", "split", "options", "limit", "subset", "prompt_style", "system_prompt",
              "min_pixels", "max_pixels", "sampling", "verifier", "categories", "batch_size", "local",
              "local_options", "max_skipped_fraction")
SAMPLING_KEYS = ("n", "greedy", "temperature", "top_p", "top_k", "max_new_tokens")
TOP_KEYS = ("name", "description", "defaults", "benchmarks")
PATH_OPTIONS = ("path", "image_dir")


class SuiteError(ValueError):
    """A suite file or override that cannot be used; the message names the file and key."""


@dataclass
class Sampling:
    n: int = 1
    """Completions per prompt; n > 1 reports mean@n and pass@n."""
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512


@dataclass
class Benchmark:
    name: str
    source: str
    split: str | None = None
    options: dict = field(default_factory=dict)
    limit: int | None = None
    subset: dict | None = None
    prompt_style: str = "r1"
    system_prompt: str | None = None
    min_pixels: int = 56 * 56
    max_pixels: int = 1280 * 28 * 28
    sampling: Sampling = field(default_factory=Sampling)
    verifier: dict = field(default_factory=lambda: {"name": "accuracy", "mode": "official"})
    categories: list = field(default_factory=list)
    batch_size: int = 8
    local: str | None = None
    local_options: dict = field(default_factory=dict)
    max_skipped_fraction: float = 0.05
    """More skipped (malformed) records than this fraction of those read fails the benchmark."""

    def loader_options(self) -> dict:
        """Keyword arguments for `load_source(self.source, ...)` (without `limit`)."""
        opts = dict(self.options)
        if self.split is not None:
            opts["split"] = self.split
        return opts

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Suite:
    name: str
    description: str = ""
    benchmarks: list = field(default_factory=list)
    path: str | None = None

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


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "verifier":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(text: str) -> tuple[list[str], object]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise SuiteError(f"--set {text!r}: expected KEY=VALUE, e.g. defaults.sampling.n=4 or "
                         f"mathvista.options.path=/data/MathVista")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise SuiteError(f"--set {text!r}: the key must start with 'defaults.' or a benchmark name, "
                         f"e.g. defaults.sampling.n=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def _apply_set(data: dict, text: str, where: str) -> None:
    parts, value = parse_set(text)
    head, rest = parts[0], parts[1:]
    if head == "defaults":
        target = data.setdefault("defaults", {}) or {}
        data["defaults"] = target
    else:
        entries = data.get("benchmarks") or []
        names = [e.get("name", e.get("source")) for e in entries if isinstance(e, dict)]
        matches = [e for e in entries if isinstance(e, dict) and e.get("name", e.get("source")) == head]
        if not matches:
            raise SuiteError(f"{where}: --set {text!r}: no benchmark {head!r}{did_you_mean(head, names)}; "
                             f"use 'defaults.' or one of {names}")
        target = matches[0]
    for part in rest[:-1]:
        nxt = target.get(part)
        if nxt is None:
            nxt = target[part] = {}
        if not isinstance(nxt, dict):
            raise SuiteError(f"{where}: --set {text!r}: {part!r} is not a mapping")
        target = nxt
    target[rest[-1]] = value


def _check_keys(mapping: dict, allowed, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise SuiteError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; valid keys: {list(allowed)}")


def _int(value, where: str, minimum: int = 0, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SuiteError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _sampling(raw, where: str) -> Sampling:
    raw = dict(raw or {})
    _check_keys(raw, SAMPLING_KEYS, where)
    n = _int(raw.get("n", 1), f"{where}.n", minimum=1)
    greedy = raw.get("greedy")
    if greedy is None:
        greedy = n == 1
    if not isinstance(greedy, bool):
        raise SuiteError(f"{where}.greedy: expected true, false or null, got {greedy!r}")
    if greedy and n > 1:
        raise SuiteError(f"{where}: greedy decoding with n={n} gives {n} identical answers; set "
                         f"greedy: false (and a temperature) for mean@k / pass@k")
    s = Sampling(n=n, greedy=greedy,
                 temperature=_number(raw.get("temperature", 1.0), f"{where}.temperature"),
                 top_p=_number(raw.get("top_p", 1.0), f"{where}.top_p"),
                 top_k=_int(raw.get("top_k", 0), f"{where}.top_k"),
                 max_new_tokens=_int(raw.get("max_new_tokens", 512), f"{where}.max_new_tokens", minimum=1))
    if not greedy and s.temperature <= 0:
        raise SuiteError(f"{where}.temperature: must be > 0 when sampling (or set greedy: true)")
    return s


def _benchmark(raw: dict, where: str) -> Benchmark:
    _check_keys(raw, ENTRY_KEYS, where)
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise SuiteError(f"{where}: 'source' is required (a registered data source, e.g. mathvista)")
    from data_prep.registry import source_names
    names = source_names()
    if source not in names:
        raise SuiteError(f"{where}.source: unknown data source {source!r}{did_you_mean(source, names)}; "
                         f"registered: {names}")
    name = raw.get("name", source)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ \t\n"):
        raise SuiteError(f"{where}.name: expected a short name without spaces or slashes, got {name!r}")
    style = raw.get("prompt_style", "r1")
    if style not in PROMPT_STYLES:
        raise SuiteError(f"{where}.prompt_style: unknown style {style!r}{did_you_mean(style, PROMPT_STYLES)}; "
                         f"valid: {list(PROMPT_STYLES)}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise SuiteError(f"{where}.options: expected a mapping, got {options!r}")
    if "limit" in options:
        raise SuiteError(f"{where}.options: give 'limit' at the entry level, not in options")
    verifier = raw.get("verifier") or {"name": "accuracy", "mode": "official"}
    if not isinstance(verifier, dict):
        raise SuiteError(f"{where}.verifier: expected a mapping like {{name: accuracy, mode: official}}")
    _check_keys(verifier, ("name", "fn", "mode"), f"{where}.verifier")
    categories = raw.get("categories") or []
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise SuiteError(f"{where}.categories: expected a list of keys, got {categories!r}")
    subset = raw.get("subset")
    if subset is not None:
        if isinstance(subset, int) and not isinstance(subset, bool):
            subset = {"size": subset, "seed": 0}
        if not isinstance(subset, dict):
            raise SuiteError(f"{where}.subset: expected {{size: N, seed: S}} or N, got {subset!r}")
        _check_keys(subset, ("size", "seed"), f"{where}.subset")
        subset = {"size": _int(subset.get("size"), f"{where}.subset.size", minimum=1),
                  "seed": _int(subset.get("seed", 0), f"{where}.subset.seed")}
    local_options = raw.get("local_options") or {}
    if not isinstance(local_options, dict):
        raise SuiteError(f"{where}.local_options: expected a mapping")
    split = raw.get("split")
    if split is not None and not isinstance(split, str):
        raise SuiteError(f"{where}.split: expected a string, got {split!r}")
    max_skipped = _number(raw.get("max_skipped_fraction", 0.05), f"{where}.max_skipped_fraction")
    if not 0.0 <= max_skipped <= 1.0:
        raise SuiteError(f"{where}.max_skipped_fraction: expected a fraction in [0, 1], got {max_skipped!r}")
    b = Benchmark(
        name=name, source=source, split=split, options=dict(options),
        limit=_int(raw.get("limit"), f"{where}.limit", optional=True), subset=subset,
        prompt_style=style, system_prompt=raw.get("system_prompt"),
        min_pixels=_int(raw.get("min_pixels", 56 * 56), f"{where}.min_pixels", minimum=1),
        max_pixels=_int(raw.get("max_pixels", 1280 * 28 * 28), f"{where}.max_pixels", minimum=1),
        sampling=_sampling(raw.get("sampling"), f"{where}.sampling"), verifier=dict(verifier),
        categories=list(categories), batch_size=_int(raw.get("batch_size", 8), f"{where}.batch_size", minimum=1),
        local=raw.get("local"), local_options=dict(local_options), max_skipped_fraction=max_skipped)
    if b.min_pixels > b.max_pixels:
        raise SuiteError(f"{where}: min_pixels {b.min_pixels} > max_pixels {b.max_pixels}")
    return b


def load_suite(name_or_path: str | os.PathLike, overrides: list[str] = (), *, data_root: str | None = None,
               only: list[str] | None = None) -> Suite:
    """Read, merge (defaults -> entry -> `--set` overrides), check and resolve a suite."""
    path = suite_path(name_or_path)
    where = str(path) if path.parent != SUITES_DIR else f"suite {path.stem!r}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SuiteError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: expected a mapping with 'benchmarks'")
    _check_keys(data, TOP_KEYS, where)
    for item in overrides:
        _apply_set(data, item, where)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteError(f"{where}: 'defaults' must be a mapping")
    _check_keys(defaults, [k for k in ENTRY_KEYS if k not in ("name", "source")], f"{where}: defaults")
    entries = data.get("benchmarks")
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{where}: 'benchmarks' must be a non-empty list")
    benchmarks, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SuiteError(f"{where}: benchmarks[{i}]: expected a mapping with 'source'")
        label = entry.get("name", entry.get("source", i))
        b = _benchmark(_merge(defaults, entry), f"{where}: benchmarks[{label}]")
        if b.name in seen:
            raise SuiteError(f"{where}: two benchmarks are named {b.name!r}; give each a distinct 'name'")
        seen.add(b.name)
        benchmarks.append(b)
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
        if max_new_tokens is not None:
            b.sampling.max_new_tokens = max_new_tokens
        if batch_size is not None:
            b.batch_size = batch_size
        if temperature is not None:
            b.sampling.temperature = temperature
        if n is not None:
            b.sampling.n = n
            if n > 1:
                b.sampling.greedy = False
            elif temperature is None:
                b.sampling.greedy = True
