from .base import Completion, RolloutEngine, SamplingParams, build_engine

__all__ = ["Completion", "RolloutEngine", "SamplingParams", "build_engine"]
