"""The project's one registry type and its one "did you mean" helper, plus the data-source registry.

Every name a user can type (a data source, an algorithm, a rollout engine, a verifier, a suite, a
config key) is looked up through `Registry.get` or worded with `did_you_mean`, so an unknown name
always fails the same way: "unknown <kind> 'x' (did you mean 'y'?), supported: [...]". It lives
here, in the bottom layer, because data_prep imports nothing of ours and every other package may
import data_prep.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from .errors import UserError
from .schema import Sample

T = TypeVar("T")


def closest(name: object, options: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The option closest to `name` (difflib's similarity ratio at least `cutoff`), or None."""
    near = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return near[0] if near else None


def did_you_mean(name: object, options: Iterable[str], cutoff: float = 0.5) -> str:
    """' (did you mean 'y'?)' for the option closest to `name`, or '' when none is close."""
    near = closest(name, options, cutoff)
    return f" (did you mean {near!r}?)" if near is not None else ""


class UnknownName(KeyError, UserError):
    """A name no registry entry has (or an option no source takes). Both a KeyError (a failed
    lookup) and a user error (data_prep.errors: one line), so callers that guard either keep
    working; str() is the plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """name -> object, filled by `@registry.register(name)`.

    `builtins` are modules imported on the first lookup, whose import registers the built-in
    entries (so that naming one never depends on what the caller happened to import). A builtin
    module missing only because of an optional dependency listed in `optional` is skipped.
    Registering a second object under a taken name is an error; registering the same one again
    (a module reloaded) is not.
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins
        self._optional = optional
        self._loaded = not builtins

    def register(self, name: str) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj and _qualname(old) != _qualname(obj):
                raise ValueError(f"{self.kind} {name!r} is registered twice ({_qualname(old)} and {_qualname(obj)})")
            self._items[name] = obj
            return obj
        return decorator

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module and exc.name not in self._optional:
                    raise  # a real missing dependency, not an absent optional one

    def get(self, name: str) -> T:
        self._load_builtins()
        if not isinstance(name, str) or name not in self._items:
            raise UnknownName(f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}, "
                              f"supported: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_builtins()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# ---------------------------------------------------------------------------------------------
# Data sources: a name -> a function `(**options) -> Iterable[Sample]`. Adapters register
# themselves on import; the built-in ones are imported on the first lookup.

SourceFn = Callable[..., Iterable[Sample]]
SOURCES: Registry[SourceFn] = Registry("data source", builtins=("data_prep.synthetic", "data_prep.adapters"))
register_source = SOURCES.register
get_source = SOURCES.get
source_names = SOURCES.names


def load_source(name: str, **options) -> Iterable[Sample]:
    return get_source(name)(**options)
