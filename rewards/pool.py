"""The scoring worker pool: persistent worker processes, each call under a hard time limit.

The limit is enforced from the calling thread (any thread): a worker whose current call overruns
is killed and replaced, the call counts as a timeout, and the rest of its work is redone
elsewhere. Samples travel to the workers without their images. The workers themselves are
`_worker`; what they return is combined into results by `compose`.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait

from data_prep.schema import Sample

from . import _worker

STARTUP_TIMEOUT_S = 600.0  # generous: a loaded 2-core machine can take minutes to import sympy
CHUNKS_PER_WORKER = 2


def _is_pixels(value) -> bool:
    return isinstance(value, (bytes, bytearray)) or type(value).__module__.startswith("PIL.")


def strip_images(sample: Sample) -> Sample:
    """A copy of `sample` without images, nor image-like `meta` values (raw bytes, PIL images):
    what the workers need; pixels stay home."""
    heavy = [k for k, v in sample.meta.items() if _is_pixels(v)] if sample.meta else []
    if not sample.images and not heavy:
        return sample
    meta = {k: v for k, v in sample.meta.items() if k not in heavy} if heavy else sample.meta
    return dataclasses.replace(sample, images=[], meta=meta)


class _Worker:
    """One worker subprocess, its connection and its shared progress cell."""

    def __init__(self, specs: list[dict], timeout_s: float):
        parent_sock, child_sock = socket.socketpair()
        self._memfd = _shared_cell()
        self.progress = memoryview(mmap.mmap(self._memfd, 16)).cast("d")
        child_fd = child_sock.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _worker.BOOTSTRAP, str(child_fd), str(self._memfd)],
            pass_fds=(child_fd, self._memfd), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p)})
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send([p for p in sys.path if isinstance(p, str)])  # before anything to unpickle
        self.conn.send((specs, timeout_s))
        self.ready = False
        self.started = time.monotonic()
        self.chunk = None       # (chunk_id, tasks) while busy
        self.sent_at = 0.0

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        except Exception:
            pass
        self.close_handles()

    def close_handles(self) -> None:
        for close in (self.conn.close, lambda: os.close(self._memfd)):
            try:
                close()
            except Exception:
                pass


def _package_root() -> str:
    """The directory holding the `rewards` package, so the worker can import it."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shared_cell() -> int:
    """A 16-byte shared-memory file descriptor (two doubles: call position, call start time)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("rewards-progress")
    else:
        fd, path = tempfile.mkstemp(prefix="rewards-progress-")
        os.unlink(path)
    os.ftruncate(fd, 16)
    return fd


def _stop(workers: list) -> None:
    for w in workers:
        if not w.ready or w.chunk is not None:  # starting up or mid-call: nothing to wait for
            w.kill()
            continue
        try:
            w.conn.send(None)
        except Exception:
            pass
    deadline = time.monotonic() + 2.0
    for w in workers:
        try:
            w.process.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if w.alive():
            w.kill()
        else:
            w.close_handles()
    workers.clear()


class WorkerPool:
    """`num_workers` worker processes running resolved `specs`; `run` scores a batch on them.

    `restarts` counts workers killed and replaced (overruns, crashes). After a worker fails to
    start the pool is closed and `run` raises RuntimeError."""

    def __init__(self, specs: list[dict], timeout_s: float, num_workers: int):
        self.specs, self.timeout_s, self.num_workers = specs, timeout_s, num_workers
        self.restarts = 0
        self.closed = False
        self._chunk_ids = 0
        self.workers: list[_Worker] = [self._spawn() for _ in range(num_workers)]
        self._finalizer = weakref.finalize(self, _stop, self.workers)

    # -- pool management ----------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        return _Worker(self.specs, self.timeout_s)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = self._spawn()
        self.restarts += 1

    def _on_ready_message(self, worker: _Worker) -> None:
        """Read a starting worker's first answer: ready, or why it failed (then the pool closes)."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            code = worker.process.wait()
            self.close()
            raise RuntimeError(f"rewards worker exited during start-up (exit code {code}); "
                               f"see its message on stderr above") from None
        if kind == "ready":
            worker.ready = True
        else:
            self.close()
            raise RuntimeError(f"rewards worker failed to start: {payload}")

    def wait_ready(self) -> None:
        """Block until every worker has loaded its verifiers (score() waits only for one)."""
        while any(not w.ready for w in self.workers):
            self._wait_for_starting(all_of_them=True)

    def _wait_for_starting(self, all_of_them: bool = False) -> None:
        starting = [w for w in self.workers if not w.ready]
        if not starting:
            return
        oldest = min(w.started for w in starting)
        left = oldest + STARTUP_TIMEOUT_S - time.monotonic()
        if left <= 0:
            self.close()
            raise RuntimeError(f"rewards workers did not start within {STARTUP_TIMEOUT_S:.0f} s")
        ready = wait([w.conn for w in starting], timeout=min(left, 1.0))
        for w in starting:
            if w.conn in ready:
                self._on_ready_message(w)

    def run(self, responses: list[str], samples: list[Sample]) -> list[dict]:
        """Every spec on every (response, sample): one `{spec index: outcome}` per response
        (outcomes as `_worker.run_one` makes them; an overrun is `_worker.TIMEOUT`)."""
        if self.closed:
            raise RuntimeError("the rewards worker pool is closed")
        all_specs = tuple(range(len(self.specs)))
        stripped: dict[int, Sample] = {}
        tasks = []
        for i, (r, s) in enumerate(zip(responses, samples)):
            light = stripped.get(id(s))
            if light is None:
                light = stripped[id(s)] = strip_images(s)
            tasks.append((i, r, light, all_specs))
        outcomes: list[dict] = [dict() for _ in tasks]
        if tasks:
            self._run(tasks, outcomes)
        return outcomes

    def _run(self, tasks: list, outcomes: list[dict]) -> None:
        n_chunks = min(len(tasks), max(1, self.num_workers * CHUNKS_PER_WORKER))
        size = -(-len(tasks) // n_chunks)
        queue = deque(tasks[k:k + size] for k in range(0, len(tasks), size))
        for w in list(self.workers):
            if w.chunk is not None:  # left busy by an interrupted call: its answer is stale
                w.chunk = None
                self._replace(w)
        while True:
            for w in self.workers:
                if w.ready and w.chunk is None and queue:
                    chunk = queue.popleft()
                    self._chunk_ids += 1
                    w.chunk = (self._chunk_ids, chunk)
                    w.sent_at = time.monotonic()
                    w.progress[1] = 0.0
                    try:
                        w.conn.send((self._chunk_ids, [(r, s, js) for _, r, s, js in chunk]))
                    except (BrokenPipeError, ConnectionError, OSError):
                        queue.appendleft(chunk)
                        w.chunk = None
                        self._replace(w)
                    except Exception as exc:  # e.g. an unpicklable object in a sample's meta
                        w.chunk = None
                        raise ValueError(f"score: a sample in responses {chunk[0][0]}..{chunk[-1][0]} "
                                         f"cannot be sent to the scoring workers: "
                                         f"{type(exc).__name__}: {exc}") from exc
            busy = [w for w in self.workers if w.chunk is not None]
            if not busy and not queue:
                return
            if not busy:  # work left, nobody ready: wait for a (re)started worker
                self._wait_for_starting()
                continue
            now = time.monotonic()
            deadline = min(self._call_started(w) + self.timeout_s for w in busy)
            objects = [w.conn for w in busy] + [w.conn for w in self.workers if not w.ready]
            ready = wait(objects, timeout=max(0.0, deadline - now) + 0.001)
            for w in list(self.workers):
                if w.chunk is not None and w.conn in ready:
                    try:
                        chunk_id, rows = w.conn.recv()
                    except (EOFError, OSError):
                        self._fail(w, queue, outcomes, crashed=True)
                        continue
                    for (i, *_), row in zip(w.chunk[1], rows):
                        for j, outcome in row:
                            outcomes[i][j] = outcome
                    w.chunk = None
                elif not w.ready and w.conn in ready:
                    self._on_ready_message(w)
            now = time.monotonic()
            for w in list(self.workers):
                if w.chunk is not None and now - self._call_started(w) > self.timeout_s:
                    self._fail(w, queue, outcomes, crashed=False)

    @staticmethod
    def _call_started(w: _Worker) -> float:
        started = w.progress[1]
        return started if started > 0 else w.sent_at

    def _fail(self, w: _Worker, queue: deque, outcomes: list[dict], crashed: bool) -> None:
        """Kill `w`; mark the call it was in as timed out (or crashed); requeue the rest."""
        _, chunk = w.chunk
        position = int(w.progress[0]) if w.progress[1] > 0 else 0
        w.chunk = None
        self._replace(w)
        requeue = []
        pos = 0
        for i, r, s, js in chunk:
            left = []
            for j in js:
                if pos == position and j not in outcomes[i]:
                    outcomes[i][j] = ((_worker.TIMEOUT, None, None, {}, {}) if not crashed else
                                      (_worker.ERROR, None, None, {}, {"error": "worker process died"}))
                elif j not in outcomes[i]:
                    left.append(j)
                pos += 1
            if left:
                requeue.append((i, r, s, tuple(left)))
        if requeue:
            queue.appendleft(requeue)

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        self.closed = True
        _stop(self.workers)


