"""Where tensors live and in what precision: one rule for the learner, the engines and the evaluators.

Every tensor they build goes to the policy's device (`module_device`): pixel values, grid sizes,
masks, advantages, sampled ids. Collectives run on the process group's device
(`collective_device`): NCCL only moves CUDA tensors, gloo only CPU ones.

`auto` settings pick the GPU and bf16 when a GPU is present (CPU and float32 otherwise), and SDPA
attention unless flash-attn is installed and usable.
"""
from __future__ import annotations

import importlib.util
import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""`model.device` / `--device`: also `cuda:N` for one process."""
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
ATTN_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")


def check_device(spec: str) -> str | None:
    """None when `spec` is a device setting this project accepts, else what was expected."""
    if spec in DEVICE_CHOICES or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto") -> torch.device:
    """auto: this process's GPU (`cuda:LOCAL_RANK`) when CUDA is available, else the CPU."""
    problem = check_device(spec)
    if problem:
        raise ValueError(f"device {spec!r}: {problem}")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda': no CUDA GPU is visible (use auto or cpu)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: no CUDA GPU is visible (use auto or cpu)")
    return torch.device(spec)


def resolve_dtype(spec: str, device: torch.device) -> str:
    """auto: bfloat16 on a GPU that has it (weights, activations and DeepSpeed's bf16 mode),
    float32 elsewhere (CPU bf16 matmuls are slow and the tiny default is tuned in float32)."""
    if spec not in DTYPE_CHOICES:
        raise ValueError(f"dtype {spec!r}: must be one of {', '.join(DTYPE_CHOICES)}")
    if spec != "auto":
        return spec
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(spec: str, device: torch.device, dtype: str,
                                flash_available: bool | None = None) -> str:
    """auto: flash_attention_2 when flash-attn is installed and the model runs on a GPU in a 16-bit
    dtype (its only supported case), else PyTorch's SDPA. Explicit values pass through."""
    if spec not in ATTN_CHOICES:
        raise ValueError(f"attn_implementation {spec!r}: must be one of {', '.join(ATTN_CHOICES)}")
    if spec != "auto":
        return spec
    if flash_available is None:
        flash_available = flash_attention_available()
    if flash_available and device.type == "cuda" and dtype in ("bfloat16", "float16"):
        return "flash_attention_2"
    return "sdpa"


def module_device(module) -> torch.device:
    """The device of a module's parameters (a wrapper that forwards attribute reads, such as the
    learner's ZeRO-3 generation view, works too). Under ZeRO-3 a partitioned parameter still sits
    on the rank's device."""
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def collective_device(backend: str) -> torch.device:
    """The device whose tensors `backend` reduces: CUDA for NCCL, the CPU for gloo (and for a
    mixed `cpu:gloo,cuda:nccl` group, whose CPU side is gloo)."""
    backend = backend.lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cuda")
    return torch.device("cpu")


def describe(device: torch.device, dtype: str | torch.dtype, attn: str | None = None) -> str:
    """One line saying where a command runs, e.g. `device: cuda:0 (NVIDIA H100 80GB HBM3), bfloat16, sdpa`."""
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    dtype = str(dtype).removeprefix("torch.")
    return f"device: {where}, {dtype}" + (f", attention {attn}" if attn else "")


def to_device(batch: dict, device: torch.device | str) -> dict:
    """`batch` with every tensor value moved to `device` (other values kept)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
