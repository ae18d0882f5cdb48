"""Dataset adapters and synthetic tasks, all producing `Sample`s (imports nothing else of ours)."""
from .schema import ANSWER_TYPES, BadRecord, Sample, load_image

__all__ = ["ANSWER_TYPES", "BadRecord", "Sample", "load_image"]
