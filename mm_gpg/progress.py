"""Progress bars (tqdm, with rate and ETA) for the long phases: warm-start, training, held-out
and suite evaluation, `mm-gpg eval`, and dataset loading (the `datasets` library's own bars).

`enabled` is the run's `progress` setting (and rank 0 only); even then a bar is drawn only on a
terminal: in a log file or CI output its redraws would flood the log, which keeps its own
periodic lines instead."""
from __future__ import annotations

import os
import sys


def progress_bar(total: int | None, desc: str, enabled: bool, **kwargs):
    """A tqdm bar, or a disabled one (same methods, draws nothing) when not `enabled` or when
    stderr is not a terminal."""
    from tqdm import tqdm
    shown = enabled and sys.stderr.isatty()
    try:  # a terminal that reports no width (some pseudo-terminals) would get an empty bar
        sized = shown and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except OSError:
        sized = False
    return tqdm(total=total, desc=desc, disable=not shown, dynamic_ncols=sized, ncols=None if sized else 100,
                mininterval=0.5, file=sys.stderr, **kwargs)


def drawing(bar) -> bool:
    """Whether `bar` is shown (so that periodic log lines it replaces can be left out)."""
    return not getattr(bar, "disable", True)


def dataset_bars(enabled: bool) -> None:
    """The `datasets` library's own bars while it reads and converts a source's files (a large
    parquet or JSON-lines file takes a while), under the same rule as `progress_bar`: only when
    `enabled` and stderr is a terminal. Call before loading sources."""
    shown = enabled and sys.stderr.isatty()
    if not shown:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is imported
    if shown and os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS"):
        return  # the user turned them off
    if "datasets" in sys.modules or shown:
        import datasets
        datasets.enable_progress_bars() if shown else datasets.disable_progress_bars()
