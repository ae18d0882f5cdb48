"""Shared helpers for the training benchmarks (`vs_trl.py`, `learning_curves.py`).

- `prepare_checkpoint`: one fixed, warm-started tiny Qwen2-VL (model + processor, saved with
  `save_pretrained`) that every side of a benchmark loads, built with the project's own code
  (`mm_gpg.tiny.build_tiny`, `mm_gpg.warmstart.run_warmstart`) and cached by its settings.
- `machine_state`: the load average and CPU count, printed beside every timing (the build
  machines are shared, so a timing without the load it was taken under means little).
- `peak_rss_mb`, `median`, `spread`: small measurement helpers.

`bench/` is a leaf: it may import every package of the project; nothing imports it.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "tiny_synthetic.yaml"


def machine_state() -> dict:
    """Load average (1, 5, 15 min), CPU count and a timestamp."""
    one, five, fifteen = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2 ** 20


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def spread(values) -> float:
    """Sample standard deviation (0 for fewer than two values)."""
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def isolate_torch_extensions() -> str:
    """Give the benchmark's processes their own JIT-extension cache (DeepSpeed builds its CPU
    communication op there on first use), unless TORCH_EXTENSIONS_DIR is already set.

    On a shared build machine another checkout's DeepSpeed rebuilding the same op in the shared
    cache holds its lock for minutes, which would stall a run (or, worse, land inside a timing)."""
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / "runs" / "bench" / "torch_extensions"))


def load_bench_config(config_path: str | os.PathLike = DEFAULT_CONFIG, overrides: list[str] = ()):
    from mm_gpg.config import load_config
    return load_config(str(config_path), list(overrides))


def prepare_checkpoint(root: str | os.PathLike, config_path: str | os.PathLike = DEFAULT_CONFIG,
                       warmstart_steps: int | None = None, seed: int = 0, log=print) -> Path:
    """The benchmark's fixed starting checkpoint, built once and reused.

    The embedded tiny Qwen2-VL is built under `root/tiny-qwen2vl`; it is then warm-started with
    the config's own warm-start settings (`warmstart_steps` overrides the step count; 0 skips
    it) on the config's training data, and cached under `root/warmstart-<hash>` exactly as
    `mm-gpg train` caches it. Returns a directory `from_pretrained` loads (model + processor)."""
    from mm_gpg.distributed import Dist, configure_environment
    from mm_gpg.tiny import build_tiny

    configure_environment()
    root = Path(root).resolve()
    tiny = root / "tiny-qwen2vl"
    if not (tiny / "config.json").exists():
        build_tiny(tiny, seed=seed)
        log(f"built the tiny Qwen2-VL at {tiny}")
    # The warm-start cache is keyed by the config's paths: write them relative to the repository
    # (when inside it) so that the key does not depend on the working directory.
    key_root = Path(os.path.relpath(root, REPO)) if root.is_relative_to(REPO) else root
    overrides = [f"model.path={key_root / 'tiny-qwen2vl'}", "model.init_tiny=false", f"output_dir={key_root}",
                 f"train.seed={seed}"]
    if warmstart_steps is not None:
        overrides.append(f"warmstart.steps={warmstart_steps}")
    config = load_bench_config(config_path, overrides)
    if not config.warmstart.steps:
        return tiny
    from mm_gpg.policy import load_policy
    from mm_gpg.checkpoint import save_hf
    from mm_gpg.warmstart import run_warmstart, warmstart_dir

    cached = warmstart_dir(config)
    cached = cached if cached.is_absolute() else REPO / cached
    if (cached / "config.json").exists():
        return cached
    started = time.perf_counter()
    policy = load_policy(str(tiny), config.model.dtype)
    run_warmstart(config, policy, Dist(0, 1), log=log)
    save_hf(policy.model, policy.processor, cached)
    (cached / "bench_provenance.json").write_text(json.dumps(
        {"config": str(config_path), "warmstart": vars(config.warmstart), "seed": seed,
         "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
    log(f"warm-started {config.warmstart.steps} steps in {time.perf_counter() - started:.0f} s: {cached}")
    return cached


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"
