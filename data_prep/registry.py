"""Registry of data sources: a name -> a function `(**options) -> Iterable[Sample]`.

Adapters register themselves on import; `load_source` imports the built-in ones lazily so that a
config can name any registered source without the caller importing a specific adapter.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Iterable

from .schema import Sample

SourceFn = Callable[..., Iterable[Sample]]
_SOURCES: dict[str, SourceFn] = {}
# Modules that register the built-in sources; imported on first lookup.
_BUILTIN_MODULES = ("data_prep.synthetic", "data_prep.adapters")


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    def decorator(fn: SourceFn) -> SourceFn:
        if name in _SOURCES and _SOURCES[name] is not fn:
            raise ValueError(f"data source {name!r} is registered twice")
        _SOURCES[name] = fn
        return fn
    return decorator


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not an absent optional module
                raise


def source_names() -> list[str]:
    _import_builtins()
    return sorted(_SOURCES)


def get_source(name: str) -> SourceFn:
    _import_builtins()
    if name not in _SOURCES:
        near = difflib.get_close_matches(name, _SOURCES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise KeyError(f"unknown data source {name!r}{hint}, supported: {sorted(_SOURCES)}")
    return _SOURCES[name]


def load_source(name: str, **options) -> Iterable[Sample]:
    return get_source(name)(**options)
