"""Weighted, seeded, resumable mixing of several sources into one stream of prompts.

Every choice is a pure function of (seed, position), so the whole state is a few integers
(`state_dict`) and a resumed run draws exactly the prompts the uninterrupted run would have.
All ranks draw the same global batch and each keeps its slice (`shard`), which makes N
processes see exactly the data one process sees.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .schema import Sample


class Mixture:
    """Draw samples from `sources` (name -> Sequence of Samples) with relative `weights`.

    Each source is walked in a fresh seeded permutation per epoch, so within an epoch no
    sample repeats.
    """

    def __init__(self, sources: dict[str, Sequence[Sample]], weights: dict[str, float] | None = None,
                 seed: int = 0):
        if not sources:
            raise ValueError("mixture: no sources")
        self.names = list(sources)
        self.sources = [sources[n] for n in self.names]
        for name, src in zip(self.names, self.sources):
            if len(src) == 0:
                raise ValueError(f"mixture: source {name!r} is empty")
        weights = weights or {}
        w = np.array([float(weights.get(n, 1.0)) for n in self.names])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture: weights must be >= 0 with a positive sum, got {dict(zip(self.names, w))}")
        self.probs = w / w.sum()
        self.seed = seed
        self.drawn = 0
        self.positions = [0] * len(self.sources)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

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
            size = len(self.sources[s])
            epoch, offset = divmod(self.positions[s], size)
            out.append(self.sources[s][int(self._permutation(s, epoch)[offset])])
            self.positions[s] += 1
            self.drawn += 1
        return out

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "positions": dict(zip(self.names, self.positions))}

    def load_state_dict(self, state: dict) -> None:
        if set(state["positions"]) != set(self.names):
            raise ValueError(f"mixture state is for sources {sorted(state['positions'])}, "
                             f"this run has {sorted(self.names)}")
        self.drawn = int(state["drawn"])
        self.positions = [int(state["positions"][n]) for n in self.names]


def shard(items: list, rank: int, world_size: int) -> list:
    """This rank's contiguous slice of a global batch whose length divides by world_size."""
    if len(items) % world_size:
        raise ValueError(f"global batch of {len(items)} does not divide over {world_size} ranks")
    per = len(items) // world_size
    return items[rank * per:(rank + 1) * per]
