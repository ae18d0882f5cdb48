"""The RolloutEngine contract: `generate(prompts, n, sampling)` and `load_weights(...)`."""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from data_prep.registry import Registry

from ..sampling import SamplingParams  # the one sampling type (re-exported here)


@dataclass
class Completion:
    token_ids: list[int]
    """Sampled tokens, end-of-turn included when it was sampled."""
    text: str
    """Decoded without special tokens."""
    finish_reason: str
    """"stop" (end-of-turn sampled) or "length" (cut at max_new_tokens)."""
    logprobs: list[float] | None = field(default=None)
    """Per-token log-probs of `token_ids` under the distribution they were sampled from (blocked
    ids masked, then temperature, top-k, top-p); None when greedy or not reported. The hf engine
    fills it; with top-k and top-p off it equals the learner's log-probs (diagnostics only)."""


class RolloutEngine(abc.ABC):
    @abc.abstractmethod
    def generate(self, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """n completions for each prompt (`mm_gpg.prompting.Prompt`), grouped per prompt."""

    @abc.abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take the learner's updated weights (full, gathered tensors)."""

    @property
    def shares_learner_weights(self) -> bool:
        """True when the engine generates with the learner's own module (no sync needed)."""
        return False

    def generation_scope(self) -> contextlib.AbstractContextManager:
        """A context inside which `generate` runs no collective with other ranks, however many
        tokens or calls each rank makes: every rank enters it together (it may gather weights),
        then each generates at its own pace. The trainer holds it around each rollout and each
        evaluation; `generate` enters it too (nested entries cost nothing). Default: nothing to
        hold (an engine with its own copy of the weights)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


# Engines register on import; vllm_engine is skipped where vLLM is not installed.
ENGINES: Registry[Callable[..., RolloutEngine]] = Registry(
    "rollout engine", builtins=("mm_gpg.rollout.hf", "mm_gpg.rollout.vllm_engine"), optional=("vllm",))
register_engine = ENGINES.register


def build_engine(name: str, **kwargs) -> RolloutEngine:
    return ENGINES.get(name)(**kwargs)
