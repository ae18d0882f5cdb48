#!/usr/bin/env bash
# Fetch, here, the wheels the GPU check needs on a CUDA machine without network:
#
#   scripts/gpu_wheels.sh            -> .whl/ (ignored by git; carried to the GPU machine)
#
# That machine (docs/gpu.md) has Python 3.12, torch 2.11 + CUDA 13, transformers 5.17, accelerate,
# peft, pyarrow, pandas, pillow, pyyaml and pytest. Everything else the project imports comes from
# here: deepspeed, qwen-vl-utils, math-verify, datasets, tensorboard, matplotlib, omegaconf, torchvision (the build made
# for torch 2.11), and what they need. Versions are those of constraints-cpu.txt (one list of
# versions for the project), except torchvision, which must match the GPU machine's torch.
# DeepSpeed ships only a source archive: its pure-Python wheel is built here, with no ops compiled
# (they are JIT-built where needed) and CUDA named as its accelerator.
# scripts/gpu_check.sh installs these into a temporary folder there, skipping any package the
# machine already has. The total must stay under 64 MiB with the checkout; this script says.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.whl"
PIP=("${PIP:-$ROOT/.venv/bin/pip}")
[[ -x "${PIP[0]}" ]] || PIP=(python3 -m pip)
TORCHVISION_FOR_GPU="torchvision==0.26.0"   # the release built for torch 2.11

# Packages the GPU machine lacks (deepspeed is built below).
NAMES=(qwen-vl-utils math-verify latex2sympy2_extended antlr4-python3-runtime datasets dill multiprocess
       xxhash hjson ninja py-cpuinfo msgpack einops pydantic pydantic_core annotated-types typing-inspection
       psutil hypothesis sortedcontainers tensorboard tensorboard-data-server protobuf absl-py Markdown
       Werkzeug grpcio requests urllib3 idna charset-normalizer certifi matplotlib contourpy cycler fonttools
       kiwisolver pyparsing omegaconf)
pinned() {  # NAME -> NAME==VERSION from constraints-cpu.txt (names compared as pip does)
    local want
    want="$(echo "$1" | tr 'A-Z_.' 'a-z--')"
    while IFS= read -r line; do
        [[ "$line" == *"=="* ]] || continue
        if [[ "$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')" == "$want" ]]; then echo "$line"; return; fi
    done < "$ROOT/constraints-cpu.txt"
    echo "gpu_wheels: $1 is not pinned in constraints-cpu.txt" >&2; return 1
}
SPECS=("$TORCHVISION_FOR_GPU")
for name in "${NAMES[@]}"; do SPECS+=("$(pinned "$name")"); done

rm -rf "$OUT" && mkdir -p "$OUT"
echo "[gpu_wheels] downloading ${#SPECS[@]} wheels for CPython 3.12, manylinux x86_64"
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform linux_x86_64 -d "$OUT" "${SPECS[@]}" 2>&1 \
    | grep -v "^WARNING: Location" || true
for spec in "${SPECS[@]}"; do  # pip download can end well having skipped none; check each
    name="$(echo "${spec%%==*}" | tr 'A-Z-.' 'a-z__')"
    ls "$OUT" | tr 'A-Z-.' 'a-z__' | grep -q "^${name}_[0-9]" || { echo "[gpu_wheels] missing: $spec" >&2; exit 1; }
done

echo "[gpu_wheels] building DeepSpeed's pure-Python wheel ($(pinned deepspeed))"
build="$(mktemp -d)"
"${PIP[@]}" download -q --no-deps --no-binary :all: -d "$build" "$(pinned deepspeed)" 2>&1 | grep -v "^WARNING: Location" || true
DS_ACCELERATOR=cuda DS_BUILD_OPS=0 "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$OUT" "$build"/deepspeed-*.tar.gz \
    2>&1 | grep -v "^WARNING: Location" || true
rm -rf "$build"
ls "$OUT"/deepspeed-*.whl >/dev/null || { echo "[gpu_wheels] the DeepSpeed wheel was not built" >&2; exit 1; }

wheels_mib=$(du -sm "$OUT" | cut -f1)
tree_mib=$(( $(git -C "$ROOT" ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) / 1048576 ))
echo "[gpu_wheels] $(ls "$OUT" | wc -l) wheels, ${wheels_mib} MiB in .whl/; with the tracked tree (~${tree_mib} MiB): $((wheels_mib + tree_mib)) MiB of 64"
if (( wheels_mib + tree_mib > 64 )); then echo "[gpu_wheels] over the 64 MiB that may travel" >&2; exit 1; fi
