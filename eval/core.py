"""What the suite runner and the training-time evaluator share: loading a benchmark's samples,
encoding prompts, generating and scoring one batch, and the per-sample prediction record.

Every step that can fail on one sample (building the Sample, decoding its image, encoding the
prompt, generating, scoring) is contained: the sample gets a record with `error` set and a score
of 0, and the rest of the batch goes on.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FORMAT_COMPONENTS = {"r1": "format_r1", "boxed": "format_boxed", "direct": None}
MAX_ERROR_CHARS = 500


def error_text(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(text).split())
    out = f"{type(exc).__name__}: {text}" if text and not isinstance(exc, BenchmarkDataError) else (
        text or type(exc).__name__)  # a data problem's message says what it is
    return out if len(out) <= MAX_ERROR_CHARS else out[:MAX_ERROR_CHARS] + "…"


def stable_int(*parts) -> int:
    """A 31-bit integer from the parts, the same in every process and Python version."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2 ** 31)


def batch_seed(seed: int, benchmark: str, *where) -> int:
    """The sampling seed of one batch: fixed by (run seed, benchmark, batch position), so a
    resumed run draws exactly what the uninterrupted one drew."""
    return stable_int("batch", seed, benchmark, *where)


def jsonable(value: Any) -> Any:
    """`value` if JSON can hold it as is, else its `str` (recursively for lists and dicts)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

@dataclass
class Selected:
    """The samples of one benchmark chosen for evaluation."""

    source: Any
    """A Sequence of Samples (built on access)."""
    indices: list
    """Positions in `source` to evaluate, in source order."""
    available: int
    """How many samples the source offered (before `subset` / `limit`)."""
    skipped: int = 0
    """Records the adapter left out as malformed (`on_bad_record: skip`)."""
    bad_records: list | None = None

    def info(self) -> dict:
        """What the report keeps of the loading (`build_report`'s `loaded` entry)."""
        return {"available": self.available, "selected": len(self.indices), "skipped": self.skipped,
                "bad_records": self.bad_records}


class BenchmarkDataError(ValueError):
    """A benchmark whose source opened but gave too few usable records: 0 samples, or more
    skipped than its `max_skipped_fraction`. `selected` is what was read (for the report); a
    score over what is left would look like a result while measuring a fraction of the set."""

    def __init__(self, message: str, selected: Selected):
        super().__init__(message)
        self.selected = selected


def data_problem(b, selected: Selected) -> str | None:
    """Why the records `selected` read for benchmark `b` are not a benchmark run, or None."""
    read = selected.available + selected.skipped  # records looked at (all, or up to `limit`)
    first = f"; the first: {selected.bad_records[0]}" if selected.bad_records else ""
    if not selected.indices and b.limit != 0:  # `limit: 0` asks for nothing: not a data problem
        if not selected.skipped:
            return "read 0 samples: the source holds no records" + (f" for split {b.split!r}" if b.split else "")
        return f"read 0 samples: {selected.skipped} of {read} record(s) skipped{first}"
    if read and selected.skipped / read > b.max_skipped_fraction:
        return (f"{selected.skipped} of {read} record(s) skipped ({100 * selected.skipped / read:.1f} % > "
                f"max_skipped_fraction {100 * b.max_skipped_fraction:g} %){first}")
    return None


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def load_benchmark(b, cache_dir: str | None = None) -> Selected:
    """Open the benchmark's source and choose the samples (`subset`, then `limit`). Raises
    `BenchmarkDataError` when the source gives 0 samples or skips too many records."""
    from data_prep.registry import get_source
    fn = get_source(b.source)
    options = b.loader_options()
    if cache_dir is not None and _accepts(fn, "cache_dir") and "cache_dir" not in options:
        options["cache_dir"] = cache_dir
    pass_limit = b.limit is not None and b.subset is None and _accepts(fn, "limit")
    if pass_limit:
        options["limit"] = b.limit
    source = fn(**options)
    if not (isinstance(source, Sequence) or (hasattr(source, "__len__") and hasattr(source, "__getitem__"))):
        # a streaming source: read what we need into memory (a bad record here fails the benchmark)
        stop = b.limit if b.subset is None else None
        source = list(itertools.islice(iter(source), stop))
    indices = list(range(len(source)))
    available = len(indices)
    if b.subset is not None:
        ids = getattr(source, "ids", None)
        if ids is None:
            ids = [source[i].id for i in indices]
        ranked = sorted(indices, key=lambda i: (stable_int("subset", b.subset["seed"], ids[i]), i))
        indices = sorted(ranked[:b.subset["size"]])
    if b.limit is not None:
        indices = indices[:b.limit]
    selected = Selected(source=source, indices=indices, available=available,
                        skipped=int(getattr(source, "skipped", 0) or 0),
                        bad_records=list(getattr(source, "bad_records", []) or [])[:5])
    problem = data_problem(b, selected)
    if problem is not None:
        raise BenchmarkDataError(problem, selected)
    return selected


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------

@dataclass
class Item:
    index: int
    sample: Any = None
    prompt: Any = None
    error: str | None = None


def prepare(source, indices: list, b, processor) -> list[Item]:
    """Samples and encoded prompts for one batch; a sample that fails carries its error."""
    from mm_gpg.prompting import encode_prompts
    items = []
    for i in indices:
        try:
            items.append(Item(i, sample=source[i]))
        except Exception as exc:
            items.append(Item(i, error=f"loading the sample failed: {error_text(exc)}"))
    ok = [it for it in items if it.error is None]

    def encode(group):
        return encode_prompts(processor, [it.sample for it in group], b.prompt_style, b.min_pixels,
                              b.max_pixels, b.system_prompt)
    try:
        prompts = encode(ok) if ok else []
    except Exception:
        prompts = None
    if prompts is not None:
        for it, p in zip(ok, prompts):
            it.prompt = p
    else:  # find the culprit(s): one at a time
        for it in ok:
            try:
                it.prompt = encode([it])[0]
            except Exception as exc:
                it.error = f"building the prompt failed: {error_text(exc)}"
    return items


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def verifier_specs(verifier: dict) -> list[dict]:
    """The scorer specs: the benchmark's verifier as component `accuracy`, plus both format
    checks at weight 0 (reported, never added to the score)."""
    acc = {**verifier, "component": "accuracy", "weight": 1.0}
    return [acc, {"name": "format_r1", "weight": 0.0, "component": "format_r1"},
            {"name": "format_boxed", "weight": 0.0, "component": "format_boxed"}]


class Scorers:
    """One `RewardScorer` per distinct verifier spec, started on first use."""

    def __init__(self, timeout_s: float = 5.0, num_workers: int = 2):
        self.timeout_s, self.num_workers = timeout_s, num_workers
        self._scorers: dict[str, Any] = {}

    def get(self, verifier: dict):
        key = json.dumps(verifier, sort_keys=True)
        if key not in self._scorers:
            from rewards import build_scorer
            self._scorers[key] = build_scorer(verifier_specs(verifier), timeout_s=self.timeout_s,
                                              num_workers=self.num_workers)
        return self._scorers[key]

    def close(self) -> None:
        for scorer in self._scorers.values():
            scorer.close()
        self._scorers.clear()

    def __enter__(self) -> "Scorers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def categories_of(sample, keys: list) -> dict:
    """{key: category value (a string) or list of values} for the keys the sample has."""
    out = {}
    for key in keys:
        value = sample.meta.get(key)  # the benchmark's own field first (VQAv2's answer_type)
        if value is None and key in ("task", "answer_type", "source"):
            value = getattr(sample, key, None) if key != "source" else sample.meta.get("source", sample.task)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple, set)):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


_VERDICT_KEYS = ("extraction", "parse_failure", "reason", "prediction", "predicted", "extracted_by", "mode",
                 "shotgun")


def _verdict(result) -> dict:
    details = (result.info.get("details") or {}).get("accuracy") or {}
    out = {k: jsonable(details[k]) for k in _VERDICT_KEYS if k in details}
    for k, v in list(out.items()):
        if isinstance(v, str) and len(v) > 200:
            out[k] = v[:200] + "…"
    error = (result.info.get("error") or {}).get("accuracy")
    if error:
        out["error"] = str(error)[:MAX_ERROR_CHARS]
    if "accuracy" not in result.components:
        out["error"] = out.get("error") or "the verifier does not apply to this sample"
    if result.info.get("timeout"):
        out["timeout"] = True
    return out


def _base_record(b, index: int, sample) -> dict:
    return {"benchmark": b.name, "index": index,
            "id": None if sample is None else str(sample.id),
            "question": None if sample is None else sample.question,
            "gold": None if sample is None else jsonable(sample.answer),
            "answer_type": None if sample is None else sample.answer_type,
            "choices": None if sample is None else jsonable(sample.choices),
            "categories": {} if sample is None else categories_of(sample, b.categories)}


def error_record(b, index: int, sample, error: str) -> dict:
    rec = _base_record(b, index, sample)
    rec.update(responses=[], finish_reasons=[], scores=[], score=0.0, best=0.0, parse_failures=0,
               timeouts=0, verifier_errors=0, truncated=0, format=None, verifiers=[], verdicts=[],
               error=error)
    return rec


def scored_record(b, index: int, sample, completions: list, results: list) -> dict:
    rec = _base_record(b, index, sample)
    scores = [float(r.components.get("accuracy", 0.0)) for r in results]
    verdicts = [_verdict(r) for r in results]
    fmt = FORMAT_COMPONENTS.get(b.prompt_style)
    rec.update(
        responses=[c.text for c in completions],
        finish_reasons=[c.finish_reason for c in completions],
        scores=scores,
        score=sum(scores) / len(scores),
        best=max(scores),
        parse_failures=sum(1 for v in verdicts if v.get("parse_failure")),
        timeouts=sum(1 for r in results if r.info.get("timeout")),
        verifier_errors=sum(1 for v in verdicts if "error" in v),
        truncated=sum(1 for c in completions if c.finish_reason == "length"),
        format=None if fmt is None else [float(r.components.get(fmt, 0.0)) for r in results],
        verifiers=[(r.info.get("verifiers") or {}).get("accuracy") for r in results],
        verdicts=verdicts,
        error=None)
    return rec


def sampling_params(b, seed: int):
    """The entry's sampling (already the engine's type) with this batch's seed."""
    import dataclasses
    return dataclasses.replace(b.sampling, seed=seed)


def generate_robust(engine, prompts: list, n: int, sampling) -> list:
    """One entry per prompt: its n completions, or the exception that generating it raised
    (the batch is retried one prompt at a time to find the failing ones)."""
    try:
        out = engine.generate(prompts, n, sampling)
        if len(out) != len(prompts):
            raise RuntimeError(f"the engine returned {len(out)} groups for {len(prompts)} prompts")
        return out
    except Exception as exc:
        if len(prompts) == 1:
            return [exc]
    out = []
    for p in prompts:
        try:
            out.append(engine.generate([p], n, sampling)[0])
        except Exception as exc:
            out.append(exc)
    return out


def run_batch(engine, scorer, items: list[Item], b, seed: int) -> list[dict]:
    """Generate and score a batch of prepared items (all with prompts); one record per item."""
    if not items:
        return []
    n = b.sampling.n
    groups = generate_robust(engine, [it.prompt for it in items], n, sampling_params(b, seed))
    records: list[dict | None] = [None] * len(items)
    flat_responses, flat_samples, owners = [], [], []
    for k, (it, group) in enumerate(zip(items, groups)):
        if isinstance(group, BaseException):
            records[k] = error_record(b, it.index, it.sample, f"generation failed: {error_text(group)}")
            continue
        for c in group:
            flat_responses.append(c.text)
            flat_samples.append(it.sample)
            owners.append(k)
    results = []
    if flat_responses:
        try:
            results = scorer.score(flat_responses, flat_samples)
        except Exception as exc:
            for k in set(owners):
                records[k] = error_record(b, items[k].index, items[k].sample, f"scoring failed: {error_text(exc)}")
            results = None
    if results is not None:
        per_item: dict[int, list] = {}
        for k, res in zip(owners, results):
            per_item.setdefault(k, []).append(res)
        for k, res in per_item.items():
            records[k] = scored_record(b, items[k].index, items[k].sample, groups[k], res)
    return records  # type: ignore[return-value]
