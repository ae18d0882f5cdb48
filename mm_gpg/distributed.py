"""Process-group set-up and the few collectives the trainer needs (sums over ranks).

One code path serves one process and N: `init_distributed()` joins the group a launcher
(`torchrun`, `deepspeed`) set up from its environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) or
makes a one-rank group, and every collective below is a no-op copy when there is one rank.
Backend: NCCL on GPUs, gloo on CPUs (`DS_ACCELERATOR=cpu`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from mm_gpg.paths import cache_dir

def configure_environment() -> None:
    """Pick DeepSpeed's accelerator and a project-owned cache for its JIT-built ops.

    Must run before `deepspeed` is imported."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so integer counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world_size > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over ranks (e.g. "did any rank see a non-finite value")."""
        t = torch.tensor(values, dtype=torch.float64)
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


def init_distributed() -> Dist:
    """Join the process group a launcher (torchrun / deepspeed) set up, or make a one-rank group."""
    configure_environment()
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return Dist(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size())
