"""What a run folder says about itself: the resolved config (`config.yaml`, loadable with
`mm-gpg train --config`), and `run.json`: per start of the run (the first and every resume) the
command line, the package versions, the git commit of the code and the step it started from.

Written by rank 0 before training starts, through the one atomic write (mm_gpg.checkpoint), so
that a run killed at any moment leaves either the old or the new file, never half of one."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .config import Config, to_dict

PACKAGES = ("mm-gpg", "torch", "transformers", "deepspeed", "accelerate", "qwen-vl-utils", "vllm", "pillow",
            "math-verify", "wandb")
"""The packages whose versions decide what a run computes (None when not installed)."""


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: str | os.PathLike | None = None) -> dict:
    """The commit of the code that runs and whether its work tree has uncommitted edits
    ({"commit": None} outside a git checkout, e.g. an installed wheel)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if not commit:
            return {"commit": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def config_yaml(config: Config) -> str:
    return ("# the resolved config of this run: mm-gpg train --config THIS_FILE reruns it\n"
            + yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))


def write_run_files(config: Config, argv: list[str], start_step: int = 0) -> None:
    """config.yaml (the resolved config) and run.json (one entry per start of this run)."""
    from data_prep.files import write_text_atomic
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", config_yaml(config))
    info_path = out / "run.json"
    starts = []
    if start_step and info_path.exists():  # a resume keeps the history of earlier starts
        try:
            starts = list(json.loads(info_path.read_text(encoding="utf-8"))["starts"])
        except (OSError, ValueError, KeyError, TypeError):
            starts = []
    starts.append({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "command": ["mm-gpg", *argv], "cwd": os.getcwd(), "start_step": start_step,
                   "git": git_state(), "versions": package_versions(), "host": platform.node()})
    write_text_atomic(info_path, json.dumps({"starts": starts}, indent=1) + "\n")
