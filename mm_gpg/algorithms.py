"""Advantage estimators, policy losses and loss aggregations: pure tensor functions in registries.

The trainer never branches on an algorithm's name. It looks the name up in `ALGORITHMS`, which
says which advantage estimator, policy loss and aggregation the algorithm combines, whether its
loss carries GPG's correction factor alpha, and whether it resamples prompts when too few groups
carry signal. The functions themselves hold no state.

Shapes: B prompts, G completions per prompt, N = B*G completions, T completion tokens (padded).

GPG (DESIGN.md, "GPG, exactly"): A_i = r_i - mean(group); groups whose rewards are all equal are
invalid (A = 0); alpha = n_groups / n_valid over the global batch; the loss is
-alpha * sum_i sum_t A_i log pi(o_it) / sum_i |o_i|. No ratio, clipping, KL or reference model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from data_prep.registry import Registry

VALID_GROUP_STD = 1e-6

SCALE_REWARDS = ("none", "std")
"""What `scale_rewards` may be: centred rewards as they are, or divided by the group's std."""


ADVANTAGES: Registry = Registry("advantage estimator")
POLICY_LOSSES: Registry = Registry("policy loss")
AGGREGATIONS: Registry = Registry("loss aggregation")
ALGORITHMS: Registry = Registry("algorithm")


# ---------------------------------------------------------------- groups and advantages

def valid_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[B, G] rewards -> [B] bool: a group is valid when its rewards are not all equal.
    A group of one (G = 1) has zero spread and is therefore never valid."""
    return rewards.std(dim=1, unbiased=False) > VALID_GROUP_STD


@ADVANTAGES.register("group_mean")
def group_mean_advantages(rewards: torch.Tensor, scale_rewards: str = "none") -> torch.Tensor:
    """[B, G] -> [B, G]: r - mean(group), optionally divided by the group's std (`std`).

    Invalid groups get exactly 0 (and no 0/0 when scaling)."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    valid = valid_groups(rewards)
    if scale_rewards == "std":
        # Sample std (unbiased), as GRPO implementations use; safe because invalid rows are zeroed.
        std = rewards.std(dim=1, keepdim=True, unbiased=rewards.shape[1] > 1)
        centred = centred / torch.where(valid[:, None], std, torch.ones_like(std))
    return torch.where(valid[:, None], centred, torch.zeros_like(centred))


def correction_factor(n_valid: int, n_groups: int) -> float:
    """GPG's alpha = 1 / min(1, n_valid / n_groups), with alpha = 1 when no group is valid
    (the loss is then zero anyway, and 1/0 must not reach the optimizer)."""
    if n_groups <= 0 or n_valid <= 0:
        return 1.0
    return 1.0 / min(1.0, n_valid / n_groups)


# ---------------------------------------------------------------- per-token policy losses

@POLICY_LOSSES.register("pg")
def pg_token_loss(logprobs: torch.Tensor, advantages: torch.Tensor, old_logprobs: torch.Tensor | None = None,
                  clip_eps: float = 0.2) -> torch.Tensor:
    """[N, T] log-probs, [N] advantages -> [N, T] per-token loss -A_i * log pi(o_it)."""
    return -advantages[:, None] * logprobs


@POLICY_LOSSES.register("clipped")
def clipped_token_loss(logprobs: torch.Tensor, advantages: torch.Tensor, old_logprobs: torch.Tensor | None = None,
                       clip_eps: float = 0.2) -> torch.Tensor:
    """PPO/GRPO clipped surrogate per token: -min(rho A, clip(rho, 1-eps, 1+eps) A).

    With one update per batch the behaviour policy is the current one, so `old_logprobs`
    defaults to the detached current log-probs: rho = 1 in value and d rho = d log pi."""
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    ratio = torch.exp(logprobs - old)
    adv = advantages[:, None]
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token unbiased KL(pi || ref) estimate exp(ref - pi) - (ref - pi) - 1 (>= 0)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


# ---------------------------------------------------------------- aggregations
# Each returns this rank's share of the global objective: summing it over micro-batches and ranks
# gives the loss of the whole global batch. `normalizer` is computed by the caller from global
# counts (see `aggregation_normalizer`), which is what makes 2 ranks equal 1.

@AGGREGATIONS.register("token_mean")
def token_mean(token_loss: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
    """sum over all tokens / total completion tokens in the global batch."""
    return (token_loss * mask).sum() / normalizer


@AGGREGATIONS.register("seq_mean")
def seq_mean(token_loss: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
    """mean over each completion's tokens, then / number of completions in the global batch.
    An empty completion (no tokens) contributes 0."""
    lengths = mask.sum(dim=1).clamp(min=1)
    return ((token_loss * mask).sum(dim=1) / lengths).sum() / normalizer


@AGGREGATIONS.register("seq_sum_const")
def seq_sum_const(token_loss: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
    """Dr. GRPO: sum over tokens / (completions * max_new_tokens), a constant per batch shape."""
    return (token_loss * mask).sum() / normalizer


def aggregation_normalizer(aggregation: str, n_tokens: int, n_completions: int, max_new_tokens: int) -> float:
    """The global denominator each aggregation divides by (guarded against 0)."""
    table = {"token_mean": n_tokens, "seq_mean": n_completions,
             "seq_sum_const": n_completions * max_new_tokens}
    if aggregation not in table:
        AGGREGATIONS.get(aggregation)  # raises the standard "unknown name, supported" error
    return float(max(1, table[aggregation]))


# ---------------------------------------------------------------- algorithms

@dataclass(frozen=True)
class Algorithm:
    """How one algorithm combines the pieces above."""
    advantage: str
    policy_loss: str
    aggregation: str
    scale_rewards: str
    uses_alpha: bool
    resamples: bool
    description: str
    kl: bool = False
    """Whether the loss may carry a KL penalty to the initial policy (`algorithm.kl_coef` > 0);
    for the others a non-zero kl_coef is a configuration error, not a silent extra term."""


for _name, _algo in {
    "gpg": Algorithm("group_mean", "pg", "token_mean", "none", True, True,
                     "Group Policy Gradient: centred rewards, alpha correction, resampling"),
    "reinforce": Algorithm("group_mean", "pg", "token_mean", "none", False, False,
                           "group-baseline REINFORCE: GPG with alpha = 1 and no resampling"),
    "grpo": Algorithm("group_mean", "clipped", "seq_mean", "std", False, False,
                      "GRPO: std-normalised advantage, clipped ratio, optional KL", kl=True),
    "dr_grpo": Algorithm("group_mean", "clipped", "seq_sum_const", "none", False, False,
                         "Dr. GRPO: centred rewards, clipped ratio, constant normaliser"),
}.items():
    ALGORITHMS.register(_name)(_algo)


def resolve_algorithm(name: str, *, scale_rewards: str | None = None, aggregation: str | None = None) -> Algorithm:
    """The algorithm a run trains with: the registry's entry for `name` with the config's overrides
    (`algorithm.scale_rewards`, `algorithm.aggregation`; None keeps the entry's own) put in it.

    The one place the overrides are resolved: the trainer's update, its rollout log and the loss
    read `scale_rewards` and `aggregation` from the result, never from the config."""
    algorithm = ALGORITHMS.get(name)
    if scale_rewards is not None and scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if aggregation is not None:
        AGGREGATIONS.get(aggregation)  # the standard "unknown name, supported" error
    return replace(algorithm, scale_rewards=scale_rewards or algorithm.scale_rewards,
                   aggregation=aggregation or algorithm.aggregation)


def policy_loss(algorithm: Algorithm, logprobs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
                *, normalizer: float, alpha: float = 1.0, aggregation: str | None = None,
                clip_eps: float = 0.2, old_logprobs: torch.Tensor | None = None,
                ref_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0) -> torch.Tensor:
    """The scalar loss of one micro-batch.

    logprobs, mask, old/ref_logprobs: [N, T]; advantages: [N]; mask is 1 on completion tokens.
    alpha multiplies the loss only for algorithms with `uses_alpha`. `aggregation` defaults to the
    algorithm's own (a `resolve_algorithm` result already holds the config's override).
    """
    mask = mask.to(logprobs.dtype)
    token_loss = POLICY_LOSSES.get(algorithm.policy_loss)(logprobs, advantages, old_logprobs, clip_eps)
    if kl_coef:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference log-probs")
        token_loss = token_loss + kl_coef * kl_k3(logprobs, ref_logprobs)
    loss = AGGREGATIONS.get(aggregation or algorithm.aggregation)(token_loss, mask, normalizer)
    return loss * (alpha if algorithm.uses_alpha else 1.0)
