"""Reward specs: what a user writes (`{"name": ..., "weight": ...}`) checked and turned into what
the scoring workers run. Unknown keys, verifier names and modes are refused with the nearest
valid one."""
from __future__ import annotations

import math
import pickle

from data_prep.registry import did_you_mean

from .registry import MODES, accepts_mode, get_verifier, load_callable, verifier_names

SPEC_KEYS = ("name", "fn", "weight", "mode", "component", "range")


def builtin_names() -> set[str]:
    """The verifiers this package defines (a worker has them once it imports `rewards`)."""
    from .registry import VERIFIERS
    return {n for n, fn in VERIFIERS.items() if getattr(fn, "__module__", "").startswith("rewards.")}


def _component_name(name: str) -> str:
    return "format" if name.startswith("format_") else name


def resolve_specs(specs: list[dict]) -> list[dict]:
    """Validate reward specs and turn them into what the workers run.

    Each spec is `{"name": "accuracy"|<verifier>, "weight": w, "mode": m}` or
    `{"fn": "file.py:fn"|"pkg.mod:fn", "weight": w}`, optionally with `"component"` (the logged
    name; default: "accuracy", "format" for `format_*` verifiers, else the verifier's or
    function's name), and `"range": [low, high]` (the scores it may return; default [0, 1]: a
    score outside it counts as an error and scores 0). Unknown keys, names and modes raise
    ValueError naming the nearest valid one.
    """
    if isinstance(specs, dict):
        specs = [specs]
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ValueError("rewards: expected a non-empty list of reward specs, e.g. "
                         "[{'name': 'accuracy', 'weight': 1.0}]")
    resolved, seen = [], {}
    for i, spec in enumerate(specs):
        where = f"rewards[{i}]"
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: expected a mapping like {{'name': 'accuracy', 'weight': 1.0}}, "
                             f"got {spec!r}")
        for key in spec:
            if key not in SPEC_KEYS:
                raise ValueError(f"{where}: unknown key {key!r}{did_you_mean(key, SPEC_KEYS)}; "
                                 f"valid keys: {list(SPEC_KEYS)}")
        if ("name" in spec) == ("fn" in spec):
            raise ValueError(f"{where}: give exactly one of 'name' (a registered verifier or "
                             f"'accuracy') and 'fn' ('path/to/file.py:fn' or 'package.module:fn')")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"{where}: key 'weight': expected a finite number, got {weight!r}")
        mode = spec.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"{where}: key 'mode': unknown mode {mode!r}{did_you_mean(mode, MODES)}; "
                             f"valid: {list(MODES)}")
        bounds = spec.get("range", (0.0, 1.0))
        if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) for b in bounds)
                or not bounds[0] < bounds[1]):
            raise ValueError(f"{where}: key 'range': expected [low, high], two finite numbers with low < high "
                             f"(the scores the reward may return; default [0, 1]), got {bounds!r}")
        out = {"weight": float(weight), "mode": mode, "range": (float(bounds[0]), float(bounds[1]))}
        if "name" in spec:
            name = spec["name"]
            if name == "accuracy":
                out.update(kind="route", name=None, component="accuracy")
            else:
                names = verifier_names()
                if name not in names:
                    raise ValueError(f"{where}: key 'name': unknown verifier {name!r}"
                                     f"{did_you_mean(name, names + ['accuracy'])}; valid: "
                                     f"{['accuracy'] + names}")
                fn = get_verifier(name)
                if mode is not None and not accepts_mode(fn):
                    raise ValueError(f"{where}: verifier {name!r} has no modes; drop key 'mode' "
                                     f"(verifiers with modes: "
                                     f"{[n for n in names if accepts_mode(get_verifier(n))]})")
                try:  # let a verifier registered only in this process reach the workers
                    pickle.dumps(fn)
                    callable_ = fn
                except Exception:
                    callable_ = None
                out.update(kind="name", name=name, component=_component_name(name),
                           callable=callable_)
        else:
            ref = spec["fn"]
            fn = load_callable(ref)
            if mode is not None and not accepts_mode(fn):
                raise ValueError(f"{where}: reward fn {ref!r} takes no 'mode' argument; drop key 'mode'")
            out.update(kind="fn", ref=ref, name=getattr(fn, "__name__", ref.rpartition(":")[2]),
                       component=ref.rpartition(":")[2])
        component = spec.get("component", out["component"])
        if not isinstance(component, str) or not component:
            raise ValueError(f"{where}: key 'component': expected a non-empty string")
        if component in seen:
            raise ValueError(f"{where}: component {component!r} is already produced by "
                             f"rewards[{seen[component]}]; set a distinct 'component' name")
        seen[component] = i
        out["component"] = component
        resolved.append(out)
    return resolved


def prepare_for_workers(specs: list[dict]) -> None:
    """Make resolved `specs` ready to send to worker processes: a built-in verifier travels by
    name; one the caller registered travels as its function, which must be importable by the
    workers (ValueError naming the way out otherwise)."""
    builtins = builtin_names()
    for spec in specs:
        if spec["kind"] != "name" or spec["name"] in builtins:
            spec["callable"] = None  # the workers have the built-ins
            continue
        fn = get_verifier(spec["name"])
        if getattr(fn, "__module__", None) == "__main__" or spec.get("callable") is None:
            where = ("is defined in __main__, which the scoring workers cannot import"
                     if getattr(fn, "__module__", None) == "__main__" else
                     "cannot be sent to the scoring workers (not a module-level function)")
            raise ValueError(
                f"verifier {spec['name']!r} {where}; move it to a file and name it with "
                f"{{'fn': 'path/to/file.py:{getattr(fn, '__name__', 'fn')}'}} "
                f"(or use num_workers=0)")
