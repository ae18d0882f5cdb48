"""Where the project keeps its caches: one root for every cache it owns.

`cache_dir()` is `$MM_GPG_CACHE`, else `$XDG_CACHE_HOME/mm-gpg`, else `~/.cache/mm-gpg` (the same
rule as `.ci/paths.sh`), so a fresh-machine run (`scripts/ci_fresh.sh`) empties all of them by
pointing one variable elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The project's cache root (not created)."""
    if os.environ.get("MM_GPG_CACHE"):
        return Path(os.environ["MM_GPG_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "mm-gpg"
