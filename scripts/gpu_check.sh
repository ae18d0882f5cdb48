#!/usr/bin/env bash
# The GPU check: one command that proves the GPU path and measures it, on a CUDA machine with no
# network (docs/gpu.md says what runs and holds the figures).
#
#   scripts/gpu_wheels.sh                 # here, once: the missing packages as wheels in .whl/
#   scripts/gpu_check.sh OUT_DIR          # there: figures in OUT_DIR/gpu_check.{json,md}
#
# 1. Installs the wheels of .whl/ whose packages this Python lacks into a temporary folder and runs
#    from the source tree (PYTHONPATH), so nothing of the machine's own environment changes.
# 2. `pytest -m gpu`: the tests of tests/test_gpu_path.py on `cuda` in bf16 (a learner step, the hf
#    engine, held-out evaluation, the collectives under NCCL, a ZeRO-2 run killed and resumed).
# 3. `bench/gpu_step.py`: the Qwen2-VL-2B and Qwen2.5-VL-3B architectures at their real sizes,
#    B x G = 8 x 8, a 448x448 image each, 512 new tokens: rollout and learner tokens/s, learner
#    MFU, peak memory, with and without gradient checkpointing.
# Budget: about 7 minutes on one H100/H200 (each part has its own time limit below).
#
# Without a GPU it says so, runs the CPU-safe parts (the same tests on the CPU, the bench at tiny
# sizes) and exits 1: a check that found no GPU has not passed.
# PYTHON picks the interpreter (default: the checkout's .venv if present, else python3).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR}")"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
say() { echo "[gpu_check] $*" | tee -a "$OUT/gpu_check.log"; }
: > "$OUT/gpu_check.log"
started=$SECONDS
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# 1. Packages: only those this Python lacks, from .whl/, into a folder of their own.
if [[ -d "$ROOT/.whl" ]]; then
    mapfile -t NEEDED < <("$PY" - "$ROOT/.whl" <<'EOF'
import importlib.metadata as md, pathlib, re, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
EOF
)
    if (( ${#NEEDED[@]} )); then
        say "installing ${#NEEDED[@]} wheels from .whl/ into $WORK/site"
        "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --target "$WORK/site" "${NEEDED[@]}" \
            >>"$OUT/gpu_check.log" 2>&1 || { say "FAILED: installing the wheels (see $OUT/gpu_check.log)"; exit 2; }
    fi
fi
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MM_GPG_CACHE="$WORK/cache" PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
unset DS_ACCELERATOR  # mm_gpg picks it from the device

# The environment, and whether there is a GPU at all.
"$PY" - "$OUT/environment.json" <<'EOF' | tee -a "$OUT/gpu_check.log"
import importlib.metadata as md, json, platform, sys, torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "gpu_count": torch.cuda.device_count()}
for name in ("transformers", "deepspeed", "accelerate", "peft", "torchvision", "qwen-vl-utils", "math-verify",
             "datasets", "flash-attn"):
    try:
        env[name] = md.version(name)
    except md.PackageNotFoundError:
        env[name] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
EOF
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    GPU=1
    say "GPU found: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
    GPU=0
    say "NO GPU FOUND (torch.cuda.is_available() is False): running the CPU-safe parts only; this check has NOT passed"
fi

# 2. The GPU tests (on the CPU without a GPU: the same tests' CPU variants).
cd "$ROOT"
if (( GPU )); then MARK="gpu"; else MARK="not gpu"; fi
say "pytest -m '$MARK' tests/test_gpu_path.py"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m "$MARK" tests/test_gpu_path.py \
    --junitxml="$OUT/pytest_gpu.xml" 2>&1 | tee "$OUT/pytest_gpu.log" | tail -5
TESTS_RC=${PIPESTATUS[0]}
say "tests exited $TESTS_RC after $((SECONDS - started)) s"

# 3. The step benchmark at real sizes (tiny on the CPU).
if (( GPU )); then BENCH=(--out "$OUT/bench"); else BENCH=(--device cpu --tiny --out "$OUT/bench"); fi
say "bench/gpu_step.py ${BENCH[*]}"
timeout 300 "$PY" bench/gpu_step.py "${BENCH[@]}" > "$OUT/gpu_step.log" 2>&1
BENCH_RC=$?
tail -8 "$OUT/gpu_step.log"
say "bench exited $BENCH_RC after $((SECONDS - started)) s"

# 4. One summary, JSON and Markdown.
"$PY" - "$OUT" "$GPU" "$TESTS_RC" "$BENCH_RC" "$((SECONDS - started))" <<'EOF'
import json, pathlib, sys, time
import xml.etree.ElementTree as ET
out, gpu, tests_rc, bench_rc, seconds = pathlib.Path(sys.argv[1]), sys.argv[2] == "1", *map(int, sys.argv[3:])
summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "gpu_found": gpu, "seconds": seconds,
           "environment": json.loads((out / "environment.json").read_text()),
           "tests": {"exit_code": tests_rc, "cases": []}, "bench": {"exit_code": bench_rc}}
xml = out / "pytest_gpu.xml"
if xml.exists():
    for case in ET.parse(xml).iter("testcase"):
        status = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                status = tag
        summary["tests"]["cases"].append({"name": case.get("name"), "status": status,
                                          "seconds": float(case.get("time", 0))})
bench = out / "bench" / "gpu_step.json"
if bench.exists():
    summary["bench"].update(json.loads(bench.read_text()))
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
env = summary["environment"]
lines = [f"# GPU check, {summary['date']}", "",
         f"GPU: {env['gpu'] or 'none found'}; Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), "
         f"transformers {env['transformers']}, deepspeed {env['deepspeed']}; {seconds} s in all.", "",
         "| test | status | s |", "|---|---|---:|"]
lines += [f"| {c['name']} | {c['status']} | {c['seconds']:.1f} |" for c in summary["tests"]["cases"]]
md = out / "bench" / "gpu_step.md"
lines += ["", md.read_text() if md.exists() else f"bench: no results (exit code {bench_rc})"]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if (( ! GPU )); then
    say "NO GPU FOUND: the CPU-safe parts ran (tests exit $TESTS_RC, bench exit $BENCH_RC); exiting 1"
    exit 1
fi
if (( TESTS_RC || BENCH_RC )); then say "FAILED (tests exit $TESTS_RC, bench exit $BENCH_RC)"; exit 1; fi
say "passed in $((SECONDS - started)) s; figures in $OUT/gpu_check.md"
