"""The value a verifier returns, and how plain floats are lifted into it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RewardResult:
    """A reward with its named parts.

    For a single verifier `score` is in [0, 1]; for a `RewardScorer` it is the weighted sum of
    the non-None components. Every entry of `components` is logged by the trainer; `info` holds
    diagnostics such as `{"extraction": "answer_tag", "parse_failure": False, "timeout": False}`.
    """

    score: float
    components: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def as_result(value, name: str) -> RewardResult | None:
    """Lift a verifier's return value (float, bool, RewardResult or None) to a RewardResult.

    Raises TypeError for anything else, and ValueError for a NaN or infinite score, naming the
    verifier, so that a broken user module fails loudly instead of poisoning the advantages.
    """
    if value is None:
        return None
    if isinstance(value, RewardResult):
        result = value
    elif isinstance(value, (bool, int, float)):
        result = RewardResult(float(value), {name: float(value)}, {})
    elif isinstance(value, (str, bytes)):  # float("1.0") would pass; the contract is a number
        raise TypeError(f"verifier {name!r} returned {type(value).__name__} {value!r}; expected "
                        f"float, RewardResult or None")
    else:
        # numpy / torch scalars
        try:
            number = float(value)
        except Exception:
            raise TypeError(f"verifier {name!r} returned {type(value).__name__}; expected "
                            f"float, RewardResult or None") from None
        result = RewardResult(number, {name: number}, {})
    score = float(result.score)
    if not math.isfinite(score):
        raise ValueError(f"verifier {name!r} returned a non-finite score {score!r}")
    result.score = score
    return result
