"""Verifier reward modules: registry, routing, composition and safe batch scoring.

    from rewards import build_scorer
    with build_scorer([{"name": "accuracy", "weight": 1.0},
                       {"name": "format_r1", "weight": 0.5}]) as scorer:
        results = scorer.score(responses, samples)   # one RewardResult each

    from rewards import score_samples
    for result in score_samples(zip(responses, samples), verifier="auto", mode="official"):
        ...

Imports only `data_prep` (for `Sample`).
"""
from .registry import get_verifier, register_verifier, route, verifier_names
from .result import RewardResult
from .scorer import RewardScorer, build_scorer, score_samples

__all__ = ["RewardResult", "RewardScorer", "build_scorer", "get_verifier", "register_verifier",
           "route", "score_samples", "verifier_names"]
