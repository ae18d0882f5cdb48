"""The scoring worker process: loads the verifiers once, then scores chunks until told to stop.

It is started as a plain `python -c` subprocess (not multiprocessing's spawn, which re-runs the
caller's `__main__` and so breaks scripts without a main guard), on one end of a socket pair
wrapped as a `multiprocessing.connection.Connection` (the parent's end is `pool.WorkerPool`).
The first message is the caller's `sys.path`, the second `(specs, timeout_s)` (specs as
`specs.resolve_specs` makes them); the worker answers `("ready", None)` once its verifiers are
loaded and warm, or `("error", message)`.

Protocol on its pipe: the parent sends `(chunk_id, tasks)` where each task is
`(response, sample, spec_indices)`, and the worker answers `(chunk_id, outcomes)` with one list
of `(spec_index, outcome)` per task. Before each verifier call the worker writes its position and
start time into `progress` (shared memory: [position, start time]), so that the parent can tell
which call overran and kill the process; no signals are needed in the parent.
"""
from __future__ import annotations

import signal
import time
import traceback

from data_prep.schema import Sample

from .registry import accepts_mode, get_verifier, load_callable, route
from .result import as_result

# verifiers that may reach math-verify (the worker warms it up before accepting work)
MATH_USERS = {"math"}

# outcome statuses
OK, NOT_APPLICABLE, ERROR, TIMEOUT = "ok", "none", "error", "timeout"


class SpecRunner:
    """Calls the verifier one resolved spec names, for one (response, sample)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.kind = spec["kind"]
        self.mode = spec.get("mode")
        if self.kind == "fn":
            self.fn = load_callable(spec["ref"])
        elif self.kind == "name":
            self.fn = spec.get("callable") or get_verifier(spec["name"])
        else:
            self.fn = None

    def resolve(self, sample: Sample):
        """`(verifier name, function)` for this sample."""
        if self.kind == "route":
            name = route(sample)
            return name, get_verifier(name)
        return self.spec.get("name") or self.spec["component"], self.fn

    def __call__(self, name: str, fn, response: str, sample: Sample):
        if self.mode is not None and accepts_mode(fn):
            value = fn(response, sample, mode=self.mode)
        else:
            value = fn(response, sample)
        return as_result(value, name)


def run_one(runner: SpecRunner, response: str, sample: Sample) -> tuple:
    """`(status, verifier_name, score, components, info)` for one call; never raises."""
    name = runner.spec.get("name")
    try:
        name, fn = runner.resolve(sample)
        res = runner(name, fn, response, sample)
    except Exception as exc:  # a broken verifier must not take the training step down
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return (ERROR, name, None, {},
                {"error": f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"})
    if res is None:
        return (NOT_APPLICABLE, name, None, {}, {})
    low, high = runner.spec.get("range") or (0.0, 1.0)
    if not low <= res.score <= high:  # the contract: a float in [0, 1] unless the spec widens it
        return (ERROR, name, None, {},
                {"error": f"ValueError: verifier {name!r} returned {res.score!r}, outside [{low:g}, {high:g}] "
                          f"(a reward spec may declare a wider 'range': [low, high])"})
    return (OK, name, res.score, res.components, res.info)


BOOTSTRAP = ("import sys; from rewards._worker import entry; entry(int(sys.argv[1]), int(sys.argv[2]))")


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a worker stuck in a call is never orphaned."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def entry(conn_fd: int, progress_fd: int) -> None:
    """Subprocess entry point: wrap the inherited descriptors, read the set-up message, run."""
    import mmap
    import sys
    from multiprocessing.connection import Connection

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    conn = Connection(conn_fd)
    progress = memoryview(mmap.mmap(progress_fd, 16)).cast("d")
    try:
        sys_path = conn.recv()
        for entry_path in reversed(sys_path):
            if entry_path not in sys.path:
                sys.path.insert(0, entry_path)
        specs, timeout_s = conn.recv()  # may import the caller's modules: after sys.path
    except (EOFError, OSError):
        return
    except Exception as exc:
        conn.send(("error", f"cannot load the reward specs: {type(exc).__name__}: {exc}"))
        return
    main(conn, progress, specs, timeout_s)


def main(conn, progress, specs: list[dict], timeout_s: float) -> None:
    try:
        from .verifiers import math as math_verifier
        math_verifier.INTERNAL_TIMEOUT_S = max(1, int(timeout_s / 3)) if timeout_s >= 1.5 else None
        runners = [SpecRunner(spec) for spec in specs]
        if any(spec["kind"] == "route" or spec.get("name") in MATH_USERS for spec in specs):
            math_verifier.warm_up()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        chunk_id, tasks = message
        out = []
        position = 0
        for response, sample, spec_indices in tasks:
            row = []
            for j in spec_indices:
                progress[1] = time.monotonic()
                progress[0] = position
                row.append((j, run_one(runners[j], response, sample)))
                position += 1
            out.append(row)
        progress[1] = 0.0
        conn.send((chunk_id, out))
