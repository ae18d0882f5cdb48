"""The one sampling type: how completions are drawn, for rollouts, held-out and suite evaluation.

`SamplingParams` is what a rollout engine's `generate(prompts, n, sampling)` reads, what a suite
entry's `sampling:` block holds (eval/suite.py) and what the training config's `rollout.*`
sampling keys build (`RolloutConfig.sampling_params`). It imports nothing heavy, so the config
and suite loaders can use it without torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """Softmax temperature of sampled completions (ignored when greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 samples the policy's true distribution."""
    top_k: int = 0
    """Top-k; 0 disables it, so samples come from the policy's true distribution."""
    max_new_tokens: int = 32
    """Completion length cap; a cut completion ends with finish reason `length`."""
    greedy: bool = False
    """Pick the most likely token at each step instead of sampling. In a suite file, leaving it
    out means greedy exactly when n == 1."""
    seed: int = 0
    """Seeds this call's sampling, so a resumed run draws the same completions."""
    n: int = 1
    """Completions per prompt, for callers that pass it to `generate` (a suite entry: n > 1
    reports mean@n and pass@n); a rollout takes its n from `rollout.group_size`."""


def sampling_problems(s: SamplingParams) -> list[tuple[str, str]]:
    """(key, what is wrong) for each setting a sampling block may not have, first problem first:
    the checks a suite entry's `sampling:` gets (the training config checks its `rollout.*` keys
    with its own ranges)."""
    problems = []
    if s.n < 1:
        problems.append(("n", f"expected an integer >= 1, got {s.n!r}"))
    if s.max_new_tokens < 1:
        problems.append(("max_new_tokens", f"expected an integer >= 1, got {s.max_new_tokens!r}"))
    if s.top_k < 0:
        problems.append(("top_k", f"expected an integer >= 0, got {s.top_k!r}"))
    if not 0.0 < s.top_p <= 1.0:
        problems.append(("top_p", f"expected a number in (0, 1], got {s.top_p!r}"))
    if s.greedy and s.n > 1:
        problems.append(("greedy", f"greedy decoding with n={s.n} gives {s.n} identical answers; set "
                                   f"greedy: false (and a temperature) for mean@k / pass@k"))
    if not s.greedy and not s.temperature > 0:
        problems.append(("temperature", "must be > 0 when sampling (or set greedy: true)"))
    if not (s.temperature == s.temperature and abs(s.temperature) != float("inf")):
        problems.append(("temperature", f"must be a finite number, got {s.temperature!r}"))
    return problems
