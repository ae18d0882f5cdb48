"""Weighted composition of verifiers, scored in a persistent pool of worker processes.

`build_scorer(specs)` resolves a list of reward specs once; `scorer.score(responses, samples)`
returns one RewardResult per response. Each verifier call runs under a hard time limit enforced
from the calling thread (any thread): a worker whose current call overruns is killed and
replaced, the call scores 0 and counts as a timeout, and the rest of its work is redone
elsewhere. Samples travel to the workers without their images.
"""
from __future__ import annotations

import dataclasses
import math
import mmap
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait

from data_prep.registry import did_you_mean
from data_prep.schema import Sample

from . import _worker
from .registry import MODES, accepts_mode, get_verifier, load_callable, verifier_names
from .result import RewardResult

SPEC_KEYS = ("name", "fn", "weight", "mode", "component", "range")
STARTUP_TIMEOUT_S = 600.0  # generous: a loaded 2-core machine can take minutes to import sympy
CHUNKS_PER_WORKER = 2


def _builtin_names() -> set[str]:
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


class RewardScorer:
    """Scores batches of responses with a fixed list of weighted reward specs.

    Use as a context manager or call `close()`. `num_workers=0` scores in the calling process
    (no hard time limit: for debugging only). `stats` holds running totals.
    """

    def __init__(self, specs: list[dict], timeout_s: float = 5.0, num_workers: int = 2):
        if not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s: expected a finite positive number of seconds, got {timeout_s!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers: expected an integer >= 0, got {num_workers!r}")
        self.specs = resolve_specs(specs)
        self.components = [s["component"] for s in self.specs]
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.stats = {"responses": 0, "timeouts": 0, "parse_failures": 0, "errors": 0,
                      "worker_restarts": 0}
        if num_workers:
            builtins = _builtin_names()
            for spec in self.specs:
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
        self._workers: list[_Worker] = []
        self._runners = None
        self._closed = False
        self._chunk_ids = 0
        self._lock = threading.RLock()  # one score() at a time per scorer (any thread)
        if num_workers:
            self._workers = [self._spawn() for _ in range(num_workers)]
        else:
            self._runners = [_worker.SpecRunner(s) for s in self.specs]
        self._finalizer = weakref.finalize(self, _stop, self._workers)

    # -- pool management ----------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        return _Worker(self.specs, self.timeout_s)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()
        self.stats["worker_restarts"] += 1

    def _on_ready_message(self, worker: _Worker) -> None:
        kind, payload = worker.conn.recv()
        if kind == "ready":
            worker.ready = True
        else:
            self.close()
            raise RuntimeError(f"rewards worker failed to start: {payload}")

    def wait_ready(self) -> None:
        """Block until every worker has loaded its verifiers (score() waits only for one)."""
        while any(not w.ready for w in self._workers):
            self._wait_for_starting(all_of_them=True)

    def _wait_for_starting(self, all_of_them: bool = False) -> None:
        starting = [w for w in self._workers if not w.ready]
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
                try:
                    self._on_ready_message(w)
                except (EOFError, OSError):
                    code = w.process.wait()
                    self.close()
                    raise RuntimeError(f"rewards worker exited during start-up (exit code {code}); "
                                       f"see its message on stderr above") from None

    # -- scoring ------------------------------------------------------------------------------
    def score(self, responses: list[str], samples: list[Sample]) -> list[RewardResult]:
        """One RewardResult per response: `score` is the weighted sum of the non-None
        components; `info` counts timeouts, parse failures and errors for that response.
        Safe to call from any thread; concurrent calls on one scorer are serialised."""
        with self._lock:
            return self._score(responses, samples)

    def _score(self, responses, samples) -> list[RewardResult]:
        if self._closed:
            raise RuntimeError("RewardScorer.score called after close()")
        responses, samples = list(responses), list(samples)
        if len(responses) != len(samples):
            raise ValueError(f"score: {len(responses)} responses but {len(samples)} samples")
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise ValueError(f"score: responses[{i}] is {type(r).__name__}, expected str")
        n = len(responses)
        outcomes: list[dict] = [dict() for _ in range(n)]
        if n == 0:
            return []
        all_specs = tuple(range(len(self.specs)))
        if self._runners is not None:
            for i, (r, s) in enumerate(zip(responses, samples)):
                for j in all_specs:
                    outcomes[i][j] = _worker.run_one(self._runners[j], r, s)
        else:
            stripped: dict[int, Sample] = {}
            tasks = []
            for i, (r, s) in enumerate(zip(responses, samples)):
                light = stripped.get(id(s))
                if light is None:
                    light = stripped[id(s)] = strip_images(s)
                tasks.append((i, r, light, all_specs))
            self._run_pool(tasks, outcomes)
        return [self._compose(outcomes[i]) for i in range(n)]

    def _run_pool(self, tasks: list, outcomes: list[dict]) -> None:
        n_chunks = min(len(tasks), max(1, self.num_workers * CHUNKS_PER_WORKER))
        size = -(-len(tasks) // n_chunks)
        queue = deque(tasks[k:k + size] for k in range(0, len(tasks), size))
        for w in list(self._workers):
            if w.chunk is not None:  # left busy by an interrupted call: its answer is stale
                w.chunk = None
                self._replace(w)
        while True:
            for w in self._workers:
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
            busy = [w for w in self._workers if w.chunk is not None]
            if not busy and not queue:
                return
            if not busy:  # work left, nobody ready: wait for a (re)started worker
                self._wait_for_starting()
                continue
            now = time.monotonic()
            deadline = min(self._call_started(w) + self.timeout_s for w in busy)
            objects = [w.conn for w in busy] + [w.conn for w in self._workers if not w.ready]
            ready = wait(objects, timeout=max(0.0, deadline - now) + 0.001)
            for w in list(self._workers):
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
                    try:
                        self._on_ready_message(w)
                    except (EOFError, OSError):
                        code = w.process.wait()
                        self.close()
                        raise RuntimeError(f"a restarted rewards worker exited during start-up "
                                           f"(exit code {code})") from None
            now = time.monotonic()
            for w in list(self._workers):
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

    def _compose(self, row: dict) -> RewardResult:
        components: dict[str, float] = {}
        info: dict = {"timeouts": 0, "parse_failures": 0, "errors": 0, "verifiers": {}}
        total = 0.0
        for j, spec in enumerate(self.specs):
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
        self.stats["responses"] += 1
        for key in ("timeouts", "parse_failures", "errors"):
            self.stats[key] += info[key]
        return RewardResult(total, components, info)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                _stop(self._workers)

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_scorer(specs: list[dict], timeout_s: float = 5.0, num_workers: int = 2) -> RewardScorer:
    """A RewardScorer for `specs` (see `resolve_specs`); its workers start at once."""
    return RewardScorer(specs, timeout_s=timeout_s, num_workers=num_workers)
