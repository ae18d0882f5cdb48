"""Combining the outcomes of each reward spec on one response into its `RewardResult`."""
from __future__ import annotations

from . import _worker
from .result import RewardResult


def compose(specs: list[dict], row: dict) -> RewardResult:
    """One response's RewardResult from its outcomes (`row`: spec index -> `_worker.run_one`'s
    tuple): `score` is the weighted sum of the components that applied; a timeout or an error
    scores 0 for its component and is counted in `info`, a verifier that does not apply
    (returned None) is left out."""
    components: dict[str, float] = {}
    info: dict = {"timeouts": 0, "parse_failures": 0, "errors": 0, "verifiers": {}}
    total = 0.0
    for j, spec in enumerate(specs):
        comp = spec["component"]
        status, name, value, subs, details = row[j]
        info["verifiers"][comp] = name or spec.get("name")
        if status == _worker.TIMEOUT:
            info["timeouts"] += 1
            info.setdefault("failed", {})[comp] = "timeout"
            components[comp] = 0.0
        elif status == _worker.ERROR:
            info["errors"] += 1
            info.setdefault("error", {})[comp] = details.get("error")
            info.setdefault("failed", {})[comp] = "error"
            components[comp] = 0.0
        elif status == _worker.NOT_APPLICABLE:
            info.setdefault("not_applicable", []).append(comp)
            continue
        else:
            components[comp] = value
            total += spec["weight"] * value
            for key, sub in subs.items():
                if key not in (comp, name) and isinstance(sub, (int, float)):
                    components[f"{comp}/{key}"] = float(sub)
            if details.get("parse_failure"):
                info["parse_failures"] += 1
            if details.get("internal_timeout"):  # the verifier's own limit (math-verify's)
                info["timeouts"] += 1
                info.setdefault("failed", {})[comp] = "timeout"
            if "extraction" in details and "extraction" not in info:
                info["extraction"] = details["extraction"]
        if details:
            info.setdefault("details", {})[comp] = details
    info["timeout"] = info["timeouts"] > 0
    info["parse_failure"] = info["parse_failures"] > 0
    return RewardResult(total, components, info)
