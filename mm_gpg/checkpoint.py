"""Resumable checkpoints: everything a run needs to continue exactly as if never stopped.

A checkpoint is one folder, `<output_dir>/checkpoints/step-NNNNNNNN/`:

    deepspeed/            the DeepSpeed engine state: parameters, optimizer (per-rank partitions
                          under ZeRO), and the learner's client state (LR schedule, counters)
    rng/rank-NNNNN.pt     every random state of each rank: Python, NumPy, torch (and CUDA)
    hf/                   the model config and processor files, so `export_hf` needs nothing else
    trainer_state.json    step, data position (the mixture's state), draw counters, the
                          non-finite streak, how many metrics records the step had, and the
                          LoRA set-up (`lora`: null without adapters)
    manifest.json         every other file's size and SHA-256; written last

It is written under a temporary name (`.tmp-step-NNNNNNNN`) and renamed into place only when
every rank has finished writing, so a run killed mid-save leaves a `.tmp-*` folder that the next
save clears away and `resume: auto` never picks. The newest `keep` checkpoints are kept.

A disk that fills, a copy cut short or a stray edit can still damage a renamed checkpoint, so
resuming verifies the manifest first (`verify_checkpoint`): `resume: auto` skips a damaged
checkpoint with a warning naming the file and what is wrong and takes the newest intact one; an
explicit checkpoint path that fails verification is an error naming the file. Loading a damaged
file would otherwise fail deep inside torch or DeepSpeed with a message naming no file.

All ranks write into the same folder, so a multi-node run needs `output_dir` on a filesystem
every node sees (the usual shared storage).

With LoRA (`model.lora.r > 0`, see `mm_gpg.lora`) the engine state holds the adapter beside the
frozen base weights, so a checkpoint resumes and exports with nothing else.

`mm-gpg export CHECKPOINT OUT` (see `export_main`) writes any checkpoint in Hugging Face format,
for `from_pretrained` or vLLM, on one CPU process; a LoRA checkpoint as the merged model plus its
adapter in peft's format under `OUT/adapter/`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.files import write_text_atomic

from .distributed import Dist

PREFIX = "step-"
TMP_PREFIX = ".tmp-step-"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
ENGINE_TAG = "deepspeed"
FORMAT_VERSION = 1


class NonFiniteError(FloatingPointError, ValueError):
    """A run stopped because of non-finite values (loss, gradient norm or weights).

    A ValueError too, so that the CLI reports it as one clear line instead of a traceback."""


class CheckpointError(ValueError):
    """A checkpoint that fails verification (missing, truncated or altered files); a ValueError,
    so that the CLI reports it as one line naming the file."""


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_step(path: Path) -> int | None:
    name = Path(path).name
    if not name.startswith(PREFIX) or not name[len(PREFIX):].isdigit():
        return None
    return int(name[len(PREFIX):])


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The whole checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike) -> Path:
    """Record every file under `folder` (size, SHA-256) in its manifest; call it last."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    out = folder / MANIFEST_FILE
    write_text_atomic(out, json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True) + "\n")
    return out


def verify_checkpoint(folder: str | os.PathLike) -> None:
    """Raise CheckpointError naming the first file of `folder` that is missing, of the wrong size
    or of other contents than its manifest records (or the manifest itself, when unreadable)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (the save did not finish, or the checkpoint predates "
                              f"manifests); cannot verify {folder}")
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        entries = [(str(rel), int(entry["size"]), str(entry["sha256"])) for rel, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})") from None
    if not any(rel == STATE_FILE for rel, _, _ in entries):
        raise CheckpointError(f"{manifest_path}: lists no {STATE_FILE}")
    for rel, size, sha in entries:
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise CheckpointError(f"{manifest_path}: file name {rel!r} leaves the checkpoint folder")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the manifest lists it)")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path}: {actual} bytes, the manifest says {size} (truncated or replaced)")
        try:
            if _sha256(path) != sha:
                raise CheckpointError(f"{path}: contents differ from the manifest's SHA-256 (damaged)")
        except OSError as exc:
            raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None


def _warn(text: str) -> None:
    print(f"mm-gpg: warning: {text}", file=sys.stderr, flush=True)


def resolve_resume(resume: str | None, root: str | os.PathLike, warn=_warn) -> Path | None:
    """`train.resume` -> the verified checkpoint folder to load, or None to start fresh.

    auto: the newest checkpoint that passes `verify_checkpoint`; each damaged newer one is
    skipped with `warn(text)`. When every checkpoint is damaged this is an error rather than a
    fresh start, which would throw the run's history away. An explicit folder (or a checkpoints
    folder, meaning its newest) must verify: CheckpointError names the file."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(root)
        problems = []
        for path in reversed(found):
            try:
                verify_checkpoint(path)
            except CheckpointError as exc:
                problems.append(str(exc))
                warn(f"resume: auto: skipping damaged checkpoint {path.name}: {exc}")
                continue
            if problems:
                warn(f"resume: auto: resuming from {path.name}, the newest intact checkpoint")
            return path
        if problems:
            raise CheckpointError(f"resume: auto: no intact checkpoint under {str(root)!r} ({'; '.join(problems)}); "
                                  f"set train.resume to null to start over")
        return None
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).is_file():
        if path.is_dir() and complete_checkpoints(path):  # the checkpoints folder itself
            path = complete_checkpoints(path)[-1]
        else:
            raise FileNotFoundError(f"train.resume: {str(path)!r} is not a complete checkpoint (no {STATE_FILE}); "
                                    f"complete ones under {str(root)!r}: "
                                    f"{[p.name for p in complete_checkpoints(root)] or 'none'}")
    try:
        verify_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"train.resume: checkpoint {str(path)!r} is damaged: {exc}") from None
    return path


# ---------------------------------------------------------------- random states

def capture_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------- save / load

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def weights_finite(learner, dist: Dist) -> bool:
    """Whether every rank's weights (its partitions under ZeRO-3) are finite."""
    return dist.max([0.0 if learner.local_params_finite() else 1.0])[0] == 0.0


def save_checkpoint(root: str | os.PathLike, step: int, learner, trainer_state: dict, dist: Dist, *,
                    keep: int = 2, processor=None) -> Path:
    """Write checkpoint `step` atomically; every rank must call it. Returns the folder.

    Refuses (NonFiniteError, nothing written) when any weight is not finite."""
    root = Path(root)
    final, tmp = root / f"{PREFIX}{step:08d}", root / f"{TMP_PREFIX}{step:08d}"
    if not weights_finite(learner, dist):
        raise NonFiniteError(f"step {step}: the weights are not finite; refusing to write a checkpoint "
                             f"(the newest good one stays in place under {root})")
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    learner.engine.save_checkpoint(str(tmp), tag=ENGINE_TAG, client_state={"learner": learner.client_state()},
                                   save_latest=False)
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(capture_rng(), tmp / "rng" / f"rank-{dist.rank:05d}.pt")
    dist.barrier()
    if dist.is_main:
        hf = tmp / "hf"
        hf.mkdir()
        module = learner.module
        module.config.save_pretrained(hf)
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.save_pretrained(hf)
        if processor is not None:
            processor.save_pretrained(hf)
        lora = getattr(learner, "lora_spec", None)
        # lora_base: the model the adapter applies to, for the exported adapter's config.
        state = {"format": FORMAT_VERSION, "step": step, "world_size": dist.world_size,
                 "zero_stage": learner.zero_stage, "lora": lora,
                 "lora_base": getattr(module.config, "_name_or_path", None) if lora else None,
                 "saved_at": time.time(), **trainer_state}
        write_text_atomic(tmp / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")
        write_manifest(tmp)  # last: it vouches for every file above
        _fsync_dir(tmp)
        if final.exists():  # the same step again (a run resumed from an older checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if keep:
            for old in complete_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def read_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def load_checkpoint(path: str | os.PathLike, learner, dist: Dist) -> dict:
    """Load the engine and learner state on every rank; returns the trainer state with this
    rank's random states under "rng" (restore them with `restore_rng` right before training)."""
    path = Path(path)
    state = read_state(path)
    if state.get("world_size") != dist.world_size:
        raise ValueError(f"checkpoint {str(path)!r} was written by {state.get('world_size')} processes; resume it "
                         f"with the same number (this run has {dist.world_size}), or export it "
                         f"(mm-gpg export) and start a new run from the exported model")
    if state.get("zero_stage") != learner.zero_stage:
        raise ValueError(f"checkpoint {str(path)!r} was written with train.zero_stage={state.get('zero_stage')}; "
                         f"this run has {learner.zero_stage}")
    if state.get("lora") != getattr(learner, "lora_spec", None):
        raise ValueError(f"checkpoint {str(path)!r} was written with LoRA {_describe_lora(state.get('lora'))}; "
                         f"this run has {_describe_lora(getattr(learner, 'lora_spec', None))} (model.lora, "
                         f"model.train_projector, model.train_vision_tower must match to resume)")
    load_path, client = learner.engine.load_checkpoint(str(path), tag=ENGINE_TAG, load_optimizer_states=True,
                                                       load_lr_scheduler_states=False)
    if load_path is None:
        raise FileNotFoundError(f"checkpoint {str(path)!r}: DeepSpeed found no engine state under {ENGINE_TAG}/")
    learner.load_client_state(client["learner"])
    rng_file = path / "rng" / f"rank-{dist.rank:05d}.pt"
    # Python's and NumPy's generator states are not plain tensors, so weights_only cannot read
    # them. This is the run's own resume file, and DeepSpeed's load_checkpoint just above
    # unpickles the engine files of the same folder anyway: resume only from checkpoints you trust.
    state["rng"] = torch.load(rng_file, weights_only=False)
    return state


def _describe_lora(spec: dict | None) -> str:
    return "off" if not spec else ", ".join(f"{k}={v}" for k, v in sorted(spec.items()))


ADAPTER_DIR = "adapter"
"""Where `save_hf` puts a LoRA module's adapter (peft format) inside the model folder."""


def save_hf(module: torch.nn.Module, processor, out_dir: str | os.PathLike, dist: Dist | None = None,
            state_dict: dict | None = None) -> Path | None:
    """Rank 0 (any caller when `dist` is None) writes `module` (or `state_dict` into its
    architecture) and `processor` to `out_dir` in Hugging Face format, through a temporary folder
    renamed into place, so a half-written model is never taken for a whole one.

    A module with LoRA adapters (`mm_gpg.lora`) is written merged (loadable by transformers or
    vLLM alone), and its adapter in peft's format under `out_dir/adapter/`."""
    out = Path(out_dir)
    if dist is not None and not dist.is_main:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        from .lora import has_lora, merged_named_tensors, scaling, write_adapter
        if has_lora(module):
            state = module.state_dict() if state_dict is None else state_dict
            write_adapter(module, state, tmp / ADAPTER_DIR)
            state_dict = dict(merged_named_tensors(state.items(), scaling(module)))
        module.save_pretrained(tmp, state_dict=state_dict)
        processor.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------- HF export

def _engine_state_dict(path: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """The module's weights: whole in the model-states file up to ZeRO-2 (frozen ones included);
    under ZeRO-3 consolidated from every rank's partitions."""
    engine_dir = path / ENGINE_TAG
    if zero_stage < 3:
        model_states = engine_dir / "mp_rank_00_model_states.pt"
        return torch.load(model_states, map_location="cpu", weights_only=True)["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    return get_fp32_state_dict_from_zero_checkpoint(str(path), tag=ENGINE_TAG)


def export_hf(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write checkpoint `checkpoint` as a Hugging Face model folder (one process, CPU is fine).

    ZeRO-3 checkpoints are consolidated from their partitions."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path = Path(checkpoint)
    state = read_state(path)
    config = AutoConfig.from_pretrained(path / "hf")
    dtype = getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    if state.get("lora"):  # the same adapters as in training, so that the engine state fits
        from .lora import apply_lora
        apply_lora(model, state["lora"])
        model.config._name_or_path = state.get("lora_base") or ""  # the adapter's base model
    weights = _engine_state_dict(path, int(state["zero_stage"]))
    result = model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
                                   strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in result.missing_keys if k not in tied and not any(k.endswith(t) for t in tied)]
    if missing or result.unexpected_keys:
        raise ValueError(f"checkpoint {str(path)!r} does not match its model config: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    processor = AutoProcessor.from_pretrained(path / "hf")
    return save_hf(model, processor, out_dir)


def export_main(argv: list[str]) -> int:
    """`mm-gpg export CHECKPOINT OUT`: a checkpoint folder (or a run's checkpoints folder, for
    its newest) to a Hugging Face model folder. A LoRA checkpoint is written merged, with its
    adapter (peft format) in OUT/adapter/."""
    import argparse

    parser = argparse.ArgumentParser(prog="mm-gpg export", description=export_main.__doc__)
    parser.add_argument("checkpoint", help="checkpoints/step-NNNNNNNN, or a checkpoints folder (newest)")
    parser.add_argument("out", help="output folder (replaced atomically)")
    args = parser.parse_args(argv)
    from .distributed import configure_environment
    configure_environment()
    path = resolve_resume(args.checkpoint, args.checkpoint)
    if path is None:
        raise FileNotFoundError(f"{args.checkpoint!r}: no complete checkpoint there")
    started = time.perf_counter()
    out = export_hf(path, args.out)
    adapter = f" (merged; its LoRA adapter in {out / ADAPTER_DIR})" if read_state(path).get("lora") else ""
    print(f"exported {path} to {out}{adapter} in {time.perf_counter() - started:.1f} s")
    return 0
