"""Verifier reward modules: registry, routing, composition and safe batch scoring.

    from rewards import build_scorer
    with build_scorer([{"name": "accuracy", "weight": 1.0},
                       {"name": "format_r1", "weight": 0.5}]) as scorer:
        results = scorer.score(responses, samples)   # one RewardResult each

Imports only `data_prep` (for `Sample`).
"""
from .registry import get_verifier, register_verifier, route, verifier_names
from .result import RewardResult
from .scorer import RewardScorer, build_scorer

__all__ = ["RewardResult", "RewardScorer", "build_scorer", "get_verifier", "register_verifier",
           "route", "verifier_names"]
