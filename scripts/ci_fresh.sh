#!/usr/bin/env bash
# Run CI (.ci/run) as a new machine would, before saying any issue is resolved:
#
#   scripts/ci_fresh.sh [REF]        (REF: what to clone, default HEAD; commit first)
#
# - a fresh `git clone` of this repository's REF into a new temporary folder;
# - every cache empty: XDG_CACHE_HOME, the project's own caches (the vLLM environment,
#   MM_GPG_CACHE, DeepSpeed's TORCH_EXTENSIONS_DIR), Hugging Face's, Triton's and matplotlib's point
#   into an empty temporary folder, and pip's cache is off (PIP_NO_CACHE_DIR);
# - the machine's own configuration stays as a new machine has it: HOME and pip's config files
#   (find-links, extra indexes, constraints) are not touched;
# - CI=true and no standard input, as CI runs it.
#
# Prints the total time and each step's time (the "[ci] step ..." lines .ci/run writes), then exits
# with .ci/run's status. The log stays in the temporary folder (printed at the end); the clone and
# its caches are deleted (KEEP=1 keeps them).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF="${1:-HEAD}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mm-gpg-ci-fresh.XXXXXX")"
CACHE="$WORK/cache"
mkdir -p "$CACHE"

git clone -q --no-local "$ROOT" "$WORK/clone" || { echo "[ci_fresh] clone failed" >&2; exit 1; }
git -C "$WORK/clone" checkout -q "$(git -C "$ROOT" rev-parse "$REF")" || exit 1
echo "[ci_fresh] $(git -C "$WORK/clone" log -1 --format='%h %s') in $WORK/clone; caches under $CACHE"

started=$SECONDS
(
    cd "$WORK/clone"
    # A new machine has none of these: each cache the project or its libraries read starts empty.
    env -u MM_GPG_VLLM_ENV -u TORCH_EXTENSIONS_DIR -u HF_HOME -u HF_DATASETS_CACHE \
        CI=true \
        XDG_CACHE_HOME="$CACHE/xdg" \
        MM_GPG_CACHE="$CACHE/mm-gpg" \
        HF_HOME="$CACHE/huggingface" \
        TRITON_CACHE_DIR="$CACHE/triton" \
        MPLCONFIGDIR="$CACHE/matplotlib" \
        PIP_NO_CACHE_DIR=1 \
        PYTEST_ADDOPTS="${PYTEST_ADDOPTS:---durations=25}" \
        bash .ci/run </dev/null
) 2>&1 | tee "$WORK/ci.log"
status=${PIPESTATUS[0]}
total=$((SECONDS - started))

# The clone and its caches (two virtual environments, about 10 GB) go; the log stays.
[[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK/clone" "$CACHE"
echo
echo "[ci_fresh] ===== summary ($WORK/ci.log) ====="
grep -E '^\[ci\] step' "$WORK/ci.log" || true
printf '[ci_fresh] total %d min %02d s; .ci/run exited %d\n' $((total / 60)) $((total % 60)) "$status"
exit "$status"
