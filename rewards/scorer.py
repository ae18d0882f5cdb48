"""The public entry of reward scoring: `build_scorer`, `RewardScorer` and `score_samples`.

`build_scorer(specs)` resolves a list of reward specs once (`specs`); `scorer.score(responses,
samples)` runs them in a persistent pool of worker processes (`pool`), each call under a hard time
limit, and combines each response's outcomes into one RewardResult (`compose`).
`score_samples(pairs, verifier=...)` is the one-verifier form for scoring a file of predictions.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator

from data_prep.registry import UnknownName, did_you_mean
from data_prep.schema import Sample

from . import _worker
from .compose import compose
from .pool import WorkerPool, strip_images
from .registry import accepts_mode, get_verifier, verifier_names
from .result import RewardResult
from .specs import SPEC_KEYS, prepare_for_workers, resolve_specs

__all__ = ["SPEC_KEYS", "RewardScorer", "build_scorer", "resolve_specs", "score_samples", "strip_images",
           "verifier_spec"]


class RewardScorer:
    """Scores batches of responses with a fixed list of weighted reward specs.

    Use as a context manager or call `close()`. `num_workers=0` scores in the calling process
    (no hard time limit: for debugging only). `stats` holds running totals.
    """

    def __init__(self, specs: list[dict], timeout_s: float = 5.0, num_workers: int = 2):
        if not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s: expected a finite positive number of seconds, got {timeout_s!r}")
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"num_workers: expected an integer >= 0, got {num_workers!r}")
        self.specs = resolve_specs(specs)
        self.components = [s["component"] for s in self.specs]
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self._totals = {"responses": 0, "timeouts": 0, "parse_failures": 0, "errors": 0}
        self._closed = False
        self._lock = threading.RLock()  # one score() at a time per scorer (any thread)
        self.pool: WorkerPool | None = None
        self._runners = None
        if num_workers:
            prepare_for_workers(self.specs)
            self.pool = WorkerPool(self.specs, self.timeout_s, num_workers)
        else:
            self._runners = [_worker.SpecRunner(s) for s in self.specs]

    @property
    def stats(self) -> dict:
        """Running totals: responses scored, timeouts, parse failures, errors, worker restarts."""
        return {**self._totals, "worker_restarts": self.pool.restarts if self.pool else 0}

    def wait_ready(self) -> None:
        """Block until every worker has loaded its verifiers (score() waits only for one)."""
        if self.pool is not None:
            self.pool.wait_ready()

    def score(self, responses: list[str], samples: list[Sample]) -> list[RewardResult]:
        """One RewardResult per response: `score` is the weighted sum of the non-None
        components; `info` counts timeouts, parse failures and errors for that response.
        Safe to call from any thread; concurrent calls on one scorer are serialised."""
        with self._lock:
            return self._score(responses, samples)

    def _score(self, responses, samples) -> list[RewardResult]:
        if self._closed or (self.pool is not None and self.pool.closed):
            raise RuntimeError("RewardScorer.score called after close()")
        responses, samples = list(responses), list(samples)
        if len(responses) != len(samples):
            raise ValueError(f"score: {len(responses)} responses but {len(samples)} samples")
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise ValueError(f"score: responses[{i}] is {type(r).__name__}, expected str")
        if self.pool is not None:
            outcomes = self.pool.run(responses, samples)
        else:
            outcomes = [{j: _worker.run_one(runner, r, s) for j, runner in enumerate(self._runners)}
                        for r, s in zip(responses, samples)]
        results = [compose(self.specs, row) for row in outcomes]
        for res in results:
            self._totals["responses"] += 1
            for key in ("timeouts", "parse_failures", "errors"):
                self._totals[key] += res.info[key]
        return results

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self.pool is not None:
                    self.pool.close()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_scorer(specs: list[dict], timeout_s: float = 5.0, num_workers: int = 2) -> RewardScorer:
    """A RewardScorer for `specs` (see `resolve_specs`); its workers start at once."""
    return RewardScorer(specs, timeout_s=timeout_s, num_workers=num_workers)


def verifier_spec(verifier: str = "auto", mode: str | None = "official") -> dict:
    """The one reward spec that scores with `verifier` (a registered name, or "auto": each sample
    routed by its task, then its answer type) in `mode` where the verifier has modes; its
    component is called "score". ValueError naming the nearest verifier for an unknown name."""
    if verifier == "auto":
        return {"name": "accuracy", "mode": mode, "component": "score"}
    names = verifier_names()
    if verifier not in names:
        raise UnknownName(f"unknown verifier {verifier!r}{did_you_mean(verifier, names + ['auto'])}; "
                          f"valid: {['auto'] + names}")
    spec = {"name": verifier, "component": "score"}
    if mode is not None and accepts_mode(get_verifier(verifier)):
        spec["mode"] = mode
    return spec


def score_samples(pairs: Iterable[tuple[str, Sample]], *, verifier: str = "auto", mode: str | None = "official",
                  timeout_s: float = 5.0, num_workers: int = 2, batch_size: int = 512) -> Iterator[RewardResult]:
    """Score `(response, Sample)` pairs with one verifier (see `verifier_spec`): one RewardResult
    per pair, in order. `pairs` is read lazily, `batch_size` at a time, so a file of any length
    streams through in bounded memory; the worker pool lives while the iterator does."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    # built now, so that a bad verifier, mode or limit is an error here, not at the first result
    scorer = build_scorer([verifier_spec(verifier, mode)], timeout_s=timeout_s, num_workers=num_workers)
    return _scored_batches(scorer, pairs, batch_size)


def _scored_batches(scorer: RewardScorer, pairs: Iterable[tuple[str, Sample]], batch_size: int):
    with scorer:
        batch: list[tuple[str, Sample]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= batch_size:
                yield from scorer.score([r for r, _ in batch], [s for _, s in batch])
                batch.clear()
        if batch:
            yield from scorer.score([r for r, _ in batch], [s for _, s in batch])
