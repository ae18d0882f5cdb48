"""Weighted, seeded, resumable mixing of several sources into one stream of prompts.

Every choice is a pure function of (seed, position), so the whole state is a few integers
(`state_dict`) and a resumed run draws exactly the prompts the uninterrupted run would have.
All ranks draw the same global batch and each keeps its slice (`shard`), which makes N
processes see exactly the data one process sees.

A source is either a `Sequence` (random access: walked in a seeded permutation per epoch) or an
iterable (a streaming source: walked in its own order, restarted for each epoch). An iterable
that has `iter_from(position, epoch)` (a `data_prep.adapters.SampleStream`) resumes at its raw
record position; any other iterable is resumed by re-reading and dropping the samples already
drawn in the current epoch. Either way the state stays a few integers.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from .registry import load_source
from .schema import Sample


def _skipped_summary(source) -> str:
    """How many records an empty source skipped and why (lazy import: adapters import heavy deps)."""
    from .adapters.base import skipped_summary
    return skipped_summary(source)


def _is_sequence(source) -> bool:
    return hasattr(source, "__getitem__") and hasattr(source, "__len__")


class Mixture:
    """Draw samples from `sources` (name -> Sequence or iterable of Samples) with relative
    `weights`.

    Each Sequence source is walked in a fresh seeded permutation per epoch, so within an epoch no
    sample repeats; each iterable source is read in its own order, epoch after epoch.
    """

    def __init__(self, sources: dict[str, Sequence[Sample] | Iterable[Sample]],
                 weights: dict[str, float] | None = None, seed: int = 0):
        if not sources:
            raise ValueError("mixture: no sources")
        self.names = list(sources)
        self.sources = [sources[n] for n in self.names]
        self._streaming = [not _is_sequence(src) for src in self.sources]
        for name, src, streaming in zip(self.names, self.sources, self._streaming):
            if streaming:
                if not isinstance(src, Iterable):
                    raise TypeError(f"mixture: source {name!r} is neither a sequence nor an iterable")
            elif len(src) == 0:
                raise ValueError(f"mixture: source {name!r} is empty{_skipped_summary(src)}")
        unknown = set(weights or {}) - set(self.names)
        if unknown:
            raise ValueError(f"mixture: weights given for unknown source(s) {sorted(unknown)}, "
                             f"sources are {self.names}")
        weights = weights or {}
        w = np.array([float(weights.get(n, 1.0)) for n in self.names])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture: weights must be >= 0 with a positive sum, got {dict(zip(self.names, w))}")
        self.probs = w / w.sum()
        self.seed = seed
        self.drawn = 0
        self.positions = [0] * len(self.sources)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        # Streaming sources: epoch, raw position within it, samples drawn within it, live iterator.
        n = len(self.sources)
        self._epoch, self._raw, self._in_epoch = [0] * n, [0] * n, [0] * n
        self._iters: list = [None] * n

    def _permutation(self, source_index: int, epoch: int) -> np.ndarray:
        key = (source_index, epoch)
        if key not in self._perm_cache:
            self._perm_cache.clear()  # only the current epoch of each source is ever needed
            rng = np.random.default_rng([self.seed, source_index, epoch])
            self._perm_cache[key] = rng.permutation(len(self.sources[source_index]))
        return self._perm_cache[key]

    def draw(self, n: int) -> list[Sample]:
        out = []
        for _ in range(n):
            choice_rng = np.random.default_rng([self.seed, 1_000_003, self.drawn])
            s = int(choice_rng.choice(len(self.sources), p=self.probs))
            if self._streaming[s]:
                out.append(self._next_streamed(s))
            else:
                size = len(self.sources[s])
                epoch, offset = divmod(self.positions[s], size)
                out.append(self.sources[s][int(self._permutation(s, epoch)[offset])])
            self.positions[s] += 1
            self.drawn += 1
        return out

    def _open_stream(self, s: int):
        src, epoch = self.sources[s], self._epoch[s]
        if hasattr(src, "iter_from"):
            return src.iter_from(self._raw[s], epoch)
        # A plain iterable: raw position == samples drawn this epoch; replay up to it.
        return itertools.islice(iter(src), self._in_epoch[s], None)

    def _next_streamed(self, s: int) -> Sample:
        for _ in range(2):
            if self._iters[s] is None:
                self._iters[s] = self._open_stream(s)
            it = self._iters[s]
            try:
                sample = next(it)
            except StopIteration:
                if self._in_epoch[s] == 0:
                    raise ValueError(f"mixture: source {self.names[s]!r} is empty"
                                     f"{_skipped_summary(self.sources[s])}") from None
                self._epoch[s] += 1
                self._raw[s] = self._in_epoch[s] = 0
                self._iters[s] = None
                continue
            self._in_epoch[s] += 1
            self._raw[s] = getattr(it, "position", self._in_epoch[s])
            return sample
        raise ValueError(f"mixture: source {self.names[s]!r} is empty")

    def skipped(self) -> dict[str, int]:
        """Malformed records each source left out (sources with `on_bad_record: skip`)."""
        return {n: int(getattr(src, "skipped", 0)) for n, src in zip(self.names, self.sources)
                if getattr(src, "skipped", 0)}

    def state_dict(self) -> dict:
        state = {"drawn": self.drawn, "positions": dict(zip(self.names, self.positions))}
        streams = {n: {"epoch": self._epoch[i], "raw": self._raw[i], "in_epoch": self._in_epoch[i]}
                   for i, n in enumerate(self.names) if self._streaming[i]}
        if streams:
            state["streams"] = streams
        return state

    def load_state_dict(self, state: dict) -> None:
        if set(state["positions"]) != set(self.names):
            raise ValueError(f"mixture state is for sources {sorted(state['positions'])}, "
                             f"this run has {sorted(self.names)}")
        self.drawn = int(state["drawn"])
        self.positions = [int(state["positions"][n]) for n in self.names]
        streams = state.get("streams", {})
        for i, n in enumerate(self.names):
            if self._streaming[i]:
                if n not in streams:
                    raise ValueError(f"mixture state has no stream position for streaming source {n!r}")
                st = streams[n]
                self._epoch[i], self._raw[i], self._in_epoch[i] = int(st["epoch"]), int(st["raw"]), int(st["in_epoch"])
                self._iters[i] = None


def shard(items: list, rank: int, world_size: int) -> list:
    """This rank's contiguous slice of a global batch whose length divides by world_size."""
    if len(items) % world_size:
        raise ValueError(f"global batch of {len(items)} does not divide over {world_size} ranks")
    per = len(items) // world_size
    return items[rank * per:(rank + 1) * per]


def build_mixture(entries: list[dict], seed: int) -> Mixture:
    """The mixture a config's source list describes (`data.train`: {source, weight, options,
    name}): each source loaded through the registry and named by `name`, or `source#index` (two
    entries of one source with different options stay two sources)."""
    sources, weights = {}, {}
    for i, entry in enumerate(entries):
        name = entry.get("name") or f"{entry['source']}#{i}"
        sources[name] = load_source(entry["source"], **entry.get("options", {}))
        weights[name] = float(entry.get("weight", 1.0))
    return Mixture(sources, weights, seed=seed)
