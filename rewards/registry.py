"""Verifier registry, per-sample routing and loading of user reward functions.

A verifier is a plain function `fn(response: str, sample: Sample) -> float | RewardResult | None`
(None: "not applicable to this sample"). Benchmark-rule verifiers also take a keyword `mode`
(`"lenient"`, the training default, or `"official"`, the eval suite's). Register one with
`@register_verifier("name")`; a config names it, or `route` picks it from the sample.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Callable

from data_prep.registry import Registry, did_you_mean
from data_prep.schema import Sample

Verifier = Callable[..., object]
MODES = ("lenient", "official")

VERIFIERS: Registry[Verifier] = Registry("verifier", builtins=("rewards.verifiers",))
get_verifier = VERIFIERS.get
verifier_names = VERIFIERS.names


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: register `fn` under `name` (its signature checked first). Registering another
    function under a taken name is an error; re-registering the same one (a reload) is not."""
    register = VERIFIERS.register(name)

    def decorator(fn: Verifier) -> Verifier:
        _check_signature(fn, f"verifier {name!r}")
        return register(fn)
    return decorator


def accepts_mode(fn: Verifier) -> bool:
    try:
        return "mode" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------

# Benchmarks whose official rule differs from the generic verifier of their answer type
# (lookups are cached: after changing TASK_ROUTES or TYPE_ROUTES call `_route.cache_clear()`).
# Keys are task names lower-cased with non-alphanumerics removed; a task matches a key when it
# starts with it (`mathvista_testmini` -> `mathvista`).
TASK_ROUTES = {
    "vqav2": "vqa",
    "vqa": "vqa",
    "chartqa": "relaxed",
    "mathvista": "mathvista",
    "mmmu": "mmmu",
    "scienceqa": "scienceqa",
}
TYPE_ROUTES = {
    "multiple_choice": "multiple_choice",
    "integer": "numeric",
    "float": "numeric",
    "math": "math",
    "text": "exact_match",
    "vqa": "vqa",
    "list": "list",
    "count": "count",
}


def route(sample: Sample) -> str:
    """The verifier name for `sample`: its task's benchmark rule if it has one, else the generic
    verifier of its `answer_type` (see TYPE_ROUTES)."""
    name = _route(str(sample.task or ""), sample.answer_type)
    if name is None:
        raise ValueError(f"sample {sample.id!r}: no verifier for answer_type "
                         f"{sample.answer_type!r}{did_you_mean(sample.answer_type, TYPE_ROUTES)}")
    return name


@functools.lru_cache(maxsize=1024)
def _route(task: str, answer_type: str) -> str | None:
    task = re.sub(r"[^a-z0-9]", "", task.lower())
    if task:
        for key in sorted(TASK_ROUTES, key=len, reverse=True):
            if task.startswith(key):
                return TASK_ROUTES[key]
    return TYPE_ROUTES.get(answer_type)


# ---------------------------------------------------------------------------------------------
# User functions: "path/to/file.py:fn" or "package.module:fn"
# ---------------------------------------------------------------------------------------------

def _check_signature(fn, what: str) -> None:
    if not callable(fn):
        raise ValueError(f"{what} is not callable (got {type(fn).__name__})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call decide
    try:
        sig.bind("response", "sample")
    except TypeError:
        raise ValueError(f"{what} has signature {fn.__name__}{sig}; a verifier must accept "
                         f"(response: str, sample: Sample)") from None


def load_callable(ref: str) -> Verifier:
    """Load `path/to/file.py:fn` or `package.module:fn`; ValueError with a clear reason if the
    file, module or function is missing or the function's signature cannot take
    `(response, sample)`."""
    if not isinstance(ref, str) or ref.count(":") < 1:
        raise ValueError(f"reward fn {ref!r}: expected 'path/to/file.py:function' or "
                         f"'package.module:function'")
    target, _, fn_name = ref.rpartition(":")
    if not target or not fn_name.isidentifier():
        raise ValueError(f"reward fn {ref!r}: expected 'path/to/file.py:function' or "
                         f"'package.module:function'")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = os.path.abspath(os.path.expanduser(target))
        if not os.path.isfile(path):
            raise ValueError(f"reward fn {ref!r}: file {target!r} does not exist")
        module_name = "_mm_gpg_user_reward_" + re.sub(r"\W", "_", path)
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"reward fn {ref!r}: cannot import {target!r} as a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise ValueError(f"reward fn {ref!r}: importing {target!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ValueError(f"reward fn {ref!r}: module {target!r} not found ({exc})") from exc
        except Exception as exc:
            raise ValueError(f"reward fn {ref!r}: importing {target!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if fn is None:
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ValueError(f"reward fn {ref!r}: {target!r} has no function {fn_name!r}"
                         f"{did_you_mean(fn_name, public)}")
    _check_signature(fn, f"reward fn {ref!r}")
    return fn
