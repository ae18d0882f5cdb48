"""Process-group set-up and the few collectives the trainer needs (sums over ranks).

One code path serves one process and N: `init_distributed()` joins the group a launcher
(`torchrun`, `deepspeed`) set up from its environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) or
makes a one-rank group, and every collective below is a no-op copy when there is one rank.
Backend: NCCL on GPUs, gloo on CPUs (`DS_ACCELERATOR=cpu`).

Watchdog: a collective waits at most `timeout_s` (`train.collective_timeout_s`, the process
group's timeout) for the other ranks. The trainer runs each phase inside `Dist.stage(name)`; a
collective that fails or times out there is re-raised as `CollectiveError` naming the stage, so
that a rank left waiting by another (one that failed, exited, or runs a different number of
collectives) stops with a message saying where, instead of hanging without end. (NCCL's own
watchdog ends the process at the timeout; its error reaches Python, and so the stage's name,
only with TORCH_NCCL_BLOCKING_WAIT=1.)
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from mm_gpg.paths import cache_dir

def configure_environment(device: str = "auto") -> None:
    """Pick DeepSpeed's accelerator (that of `device`, `model.device`: auto is the GPU when one is
    present) and a project-owned cache for its JIT-built ops.

    Must run before `deepspeed` is imported."""
    from .device import resolve_device
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if resolve_device(device).type == "cuda" else "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEFAULT_COLLECTIVE_TIMEOUT_S = 1800.0
"""How long a collective waits for the other ranks before it fails (torch's own default)."""

# Words in the errors torch raises when a collective fails or times out (gloo raises a plain
# RuntimeError; newer builds and NCCL raise torch.distributed.DistError subclasses).
_COLLECTIVE_ERROR_WORDS = ("gloo", "nccl", "timed out", "connection closed", "connection reset",
                           "broken pipe", "collective")

_stages: list[str] = []
"""The stages this process is in, innermost last (one trainer per process)."""


class CollectiveError(RuntimeError):
    """A collective failed or timed out while this rank was in a named stage of the training loop."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


def current_stage() -> str | None:
    """The innermost stage this process is in (see `Dist.stage`), or None."""
    return _stages[-1] if _stages else None


def is_collective_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective's failure or timeout (as opposed to an error in this rank's
    own computation, which keeps its type and message)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    if not isinstance(exc, RuntimeError) or isinstance(exc, torch.OutOfMemoryError):
        return False
    text = str(exc).lower()
    return any(word in text for word in _COLLECTIVE_ERROR_WORDS)


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    """The process group's collective timeout (`train.collective_timeout_s`), for messages."""
    device: torch.device = torch.device("cpu")
    """Where the collectives' tensors are built: the backend's device (`collective_device`:
    the rank's GPU for NCCL, which reduces nothing else; the CPU for gloo)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def tensor(self, values: list[float]) -> torch.Tensor:
        """`values` as the float64 tensor a collective of this group reduces (on `device`)."""
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so integer counts stay exact)."""
        t = self.tensor(values)
        if self.world_size > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over ranks (e.g. "did any rank see a non-finite value")."""
        t = self.tensor(values)
        if self.world_size > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return t.tolist()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def stage(self, name: str, step: int | None = None) -> Iterator[None]:
        """Run a phase of the training loop under the name `name` (and its step): a collective that
        fails or times out inside it (after `timeout_s`) is re-raised as `CollectiveError` naming
        the stage, the rank and the limit. Stages nest; the innermost one is named. Errors that are
        not a collective's keep their type and message."""
        label = name if step is None else f"{name}, step {step}"
        _stages.append(label)
        try:
            yield
        except CollectiveError:
            raise  # named by an inner stage already
        except Exception as exc:
            if self.world_size == 1 or not is_collective_failure(exc):
                raise
            first = " ".join(str(exc).split())[:300]
            raise CollectiveError(
                f"rank {self.rank}/{self.world_size}: a collective in stage '{label}' failed or waited longer than "
                f"train.collective_timeout_s = {self.timeout_s:g} s for the other ranks: another rank failed, "
                f"exited or is stuck in a different stage (see its log). Cause: {first}", stage=label) from exc
        finally:
            _stages.pop()


def init_distributed(timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S, device: str = "auto") -> Dist:
    """Join the process group a launcher (torchrun / deepspeed) set up, or make a one-rank group.

    `timeout_s`: how long any collective of the group (DeepSpeed's included) waits for the other
    ranks before it fails (see `Dist.stage`). It applies when this call creates the group.
    `device` (`model.device`): NCCL on GPUs, gloo on the CPU; the returned `Dist` builds its
    collectives' tensors on the device of the group's backend, whoever created the group."""
    from .device import collective_device, resolve_device

    configure_environment(device)
    import deepspeed

    if timeout_s <= 0:
        raise ValueError(f"collective timeout must be > 0 seconds, got {timeout_s}")
    own_group = "RANK" not in os.environ
    if own_group:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    target = resolve_device(device)  # cuda: this rank's GPU, cuda:LOCAL_RANK
    on_gpu = target.type == "cuda"
    if on_gpu:  # before the group exists, so NCCL binds this rank's GPU
        torch.cuda.set_device(target)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False,
                                   timeout=datetime.timedelta(seconds=timeout_s))
    if own_group:
        # The rendezvous variables of a group of our own must not reach child processes: a child
        # would take them for a launcher's and try to listen on this process's port (EADDRINUSE).
        # LOCAL_RANK stays: DeepSpeed's engine reads it.
        for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    return Dist(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                timeout_s=float(timeout_s), device=collective_device(torch.distributed.get_backend()))
