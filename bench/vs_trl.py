"""Per-step speed and memory of mm-gpg's trainer against TRL's GRPOTrainer, on the same work.

    python bench/vs_trl.py                       # 10 steps x 5 paired repeats, B=8 x G=8, 24 tokens
    python bench/vs_trl.py --steps 20 --repeats 7 --prompts 16 --group 8 --max-new-tokens 32

Same work on both sides: one fixed warm-started tiny Qwen2-VL checkpoint (a `save_pretrained`
directory with its processor, see `bench/_common.prepare_checkpoint`), the same synthetic
prompts with their images in the same order (the project's own mixture, drawn once here and
handed to TRL as a dataset with `shuffle_dataset=False`), the same reward (the project's
`rewards` scorer: accuracy + 0.1 x format, same worker pool), the same B prompts x G samples,
max new tokens, temperature (top_k=0, top_p=1), learning rate, warm-up, AdamW betas, grad clip,
steps, fp32, and the same frozen parts (language model trained; vision tower and projector
frozen). Both sample with the same blocked tokens (TRL: `generation_kwargs.suppress_tokens`).

TRL is configured for GPG's gradient with alpha = 1: `loss_type="bnpo"` (token mean over the
batch), `scale_rewards="none"`, `beta=0` (no reference model), `num_iterations=1` (no
old-policy pass), `use_vllm=False`, one optimizer step per generation batch
(`per_device_train_batch_size = B*G`, no accumulation), no gradient checkpointing. Ours runs
`algorithm.name=reinforce` by default: the registry's "GPG with alpha = 1 and no resampling",
i.e. exactly that gradient (`--ours-algorithm gpg` adds alpha and resampling).

Each side runs in its own process; repeats alternate the order (ours first, then TRL first, ...).
Step time is the wall-clock interval between consecutive step ends inside the training loop
(generation, rewards, forward/backward, optimizer, logging: everything), the first step of each
run dropped as warm-up. Reported: median step time of each side and the ratio ours/TRL, peak
RSS of each child process (`ru_maxrss`; the reward worker pool is the same on both sides and not
counted), completion tokens/s, and the mean reward over the last steps. The load average is
printed beside every run: the build machines are shared, so read timings with it.

Results: a JSON and a Markdown table under `--out` (default runs/bench/vs_trl).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (DEFAULT_CONFIG, REPO, fmt, isolate_torch_extensions, machine_state,  # noqa: E402
                           median, peak_rss_mb, prepare_checkpoint, spread)


# ---------------------------------------------------------------- the shared work description

def work_overrides(spec: dict) -> list[str]:
    """The config overrides that make our trainer do `spec`'s work."""
    return [f"model.path={spec['checkpoint']}", "model.init_tiny=false", "warmstart.steps=0",
            f"train.steps={spec['steps']}", f"train.prompts_per_step={spec['prompts']}",
            f"train.micro_batch_groups={spec['prompts']}", f"rollout.group_size={spec['group']}",
            f"rollout.max_new_tokens={spec['max_new_tokens']}", f"rollout.temperature={spec['temperature']}",
            "rollout.top_k=0", "rollout.top_p=1.0", f"train.lr={spec['lr']}",
            f"train.warmup_steps={spec['warmup_steps']}", f"train.seed={spec['seed']}",
            "train.weight_decay=0.0", "train.grad_clip=1.0", "train.checkpoint_every=0",
            "eval.before_training=false", "eval.every=0", "progress=false",
            f"reward_workers={spec['reward_workers']}"]


def draw_samples(spec: dict) -> list:
    """The prompts our trainer draws, in its order: steps x B from the config's training mixture."""
    from bench._common import load_bench_config
    from data_prep.mixture import build_mixture

    config = load_bench_config(spec["config"], work_overrides(spec))
    mixture = build_mixture(config.data.train, seed=config.train.seed)
    return mixture.draw(spec["steps"] * spec["prompts"]), config


# ---------------------------------------------------------------- child: ours

_LOOP_PROFILER = None
"""Set by `--profile`: a cProfile.Profile enabled around each side's training loop."""


def _profiled(loop):
    """Run `loop()` under `_LOOP_PROFILER` when profiling."""
    if _LOOP_PROFILER is None:
        return loop()
    _LOOP_PROFILER.enable()
    try:
        return loop()
    finally:
        _LOOP_PROFILER.disable()


def run_ours(spec: dict) -> dict:
    from bench._common import load_bench_config
    from mm_gpg.distributed import configure_environment

    overrides = work_overrides(spec) + [f"algorithm.name={spec['ours_algorithm']}",
                                        f"output_dir={spec['workdir']}/ours"]
    if spec["ours_algorithm"] == "gpg":
        overrides.append(f"algorithm.min_valid_fraction={spec['gpg_min_valid_fraction']}")
    config = load_bench_config(spec["config"], overrides)
    configure_environment()
    import torch

    from mm_gpg.distributed import init_distributed
    from mm_gpg.learner import Learner
    from mm_gpg.metrics import MetricsLogger
    from mm_gpg.policy import load_policy
    from mm_gpg.rollout import build_engine
    from mm_gpg.trainer import Trainer
    from rewards import build_scorer

    setup_start = time.perf_counter()
    torch.manual_seed(config.train.seed)
    dist = init_distributed(timeout_s=config.train.collective_timeout_s)
    policy = load_policy(config.model.path, config.model.dtype)
    t, m = config.train, config.model
    learner = Learner(policy, lr=t.lr, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
                      grad_clip=t.grad_clip, zero_stage=t.zero_stage, bf16=t.bf16,
                      micro_batch_groups=t.micro_batch_groups, local_groups=t.prompts_per_step,
                      group_size=config.rollout.group_size, train_language_model=m.train_language_model,
                      train_projector=m.train_projector, train_vision_tower=m.train_vision_tower,
                      kl_coef=config.algorithm.kl_coef, world_size=1, temperature=config.rollout.temperature)
    engine = build_engine(config.rollout.engine, policy=policy, model_context=learner.generation_context,
                          max_prompts_per_call=config.rollout.max_prompts_per_call, **config.rollout.vllm)

    ends: list[float] = []
    cpu_ends: list[float] = []
    records: list[dict] = []

    class StepClock(MetricsLogger):
        """The trainer logs once per step, after the update: the log call is the step's end."""

        def log(self, step, metrics):
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())
            records.append(dict(metrics, step=step))
            super().log(step, metrics)

    logger = StepClock(config.output_dir, enabled=True, tensorboard=False)
    with build_scorer(config.rewards, timeout_s=config.reward_timeout_s,
                      num_workers=config.reward_workers) as scorer:
        trainer = Trainer(config, policy, engine, learner, scorer, dist, None, logger=logger)
        setup_s = time.perf_counter() - setup_start
        start, cpu_start = time.perf_counter(), time.process_time()
        _profiled(trainer.fit)
    step_times = [b - a for a, b in zip([start] + ends[:-1], ends)]
    cpu_times = [b - a for a, b in zip([cpu_start] + cpu_ends[:-1], cpu_ends)]
    n = spec["prompts"] * spec["group"]
    return {"step_times": step_times, "cpu_times": cpu_times,
            "tokens": [r["response/length"] * n * r.get("groups/draws", 1) for r in records],
            "rewards": [r["reward/mean"] for r in records],
            "accuracy": [r.get("reward/accuracy") for r in records],
            "internal_step_times": [r["time/step"] for r in records],
            "rollout_times": [r["time/rollout"] for r in records],
            "learner_times": [r["time/learner"] for r in records],
            "setup_s": setup_s, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- child: TRL

def run_trl(spec: dict) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from data_prep.prompts import build_messages, image_order
    from data_prep.vision import fit_image
    from mm_gpg.policy import blocked_token_mask, set_trainable
    from rewards import build_scorer

    setup_start = time.perf_counter()
    samples, config = draw_samples(spec)
    d = config.data
    torch.manual_seed(spec["seed"])
    model = AutoModelForImageTextToText.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(spec["checkpoint"])
    processor.tokenizer.padding_side = "left"
    # The same trainable parts as ours (config defaults: language model only).
    set_trainable(model, config.model.train_language_model, config.model.train_projector,
                  config.model.train_vision_tower)
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    blocked = blocked_token_mask(tokenizer, model.get_output_embeddings().weight.shape[0], eos)
    patch = getattr(processor.image_processor, "patch_size", 14)

    rows = {"prompt": [], "images": [], "sample_index": []}
    for i, s in enumerate(samples):
        messages = build_messages(s, d.prompt_style, d.system_prompt)
        images = [fit_image(s.images[k], d.min_pixels, d.max_pixels, patch) for k in image_order(messages)]
        # TRL's format: image placeholders without payload ({"type": "image"}), images in a column.
        rows["prompt"].append([{"role": m["role"], "content": [
            {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
            for p in m["content"]]} for m in messages])
        rows["images"].append(images)
        rows["sample_index"].append(i)
    dataset = Dataset.from_dict(rows)

    tokens_per_step: list[int] = []
    rewards_per_step: list[float] = []
    accuracy_per_step: list[float] = []
    ends: list[float] = []
    starts: list[float] = []
    cpu_ends: list[float] = []
    cpu_starts: list[float] = []

    scorer = build_scorer(config.rewards, timeout_s=config.reward_timeout_s, num_workers=config.reward_workers)

    def reward(prompts, completions, completion_ids, sample_index, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        results = scorer.score(texts, [samples[i] for i in sample_index])
        scores = [r.score for r in results]
        tokens_per_step.append(sum(len(ids) for ids in completion_ids))
        rewards_per_step.append(sum(scores) / len(scores))
        acc = [r.components.get("accuracy") for r in results]
        acc = [a for a in acc if a is not None]
        accuracy_per_step.append(sum(acc) / len(acc) if acc else float("nan"))
        return scores

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())
            cpu_starts.append(time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())

    batch = spec["prompts"] * spec["group"]
    args = GRPOConfig(
        output_dir=str(Path(spec["workdir"]) / "trl"), report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=spec["seed"], use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_generations=spec["group"],
        steps_per_generation=1, max_steps=spec["steps"], max_completion_length=spec["max_new_tokens"],
        temperature=spec["temperature"], top_k=0, top_p=1.0, learning_rate=spec["lr"],
        lr_scheduler_type="constant_with_warmup", warmup_steps=spec["warmup_steps"], adam_beta1=0.9,
        adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        loss_type="bnpo", scale_rewards="none", beta=0.0, num_iterations=1, use_vllm=False,
        gradient_checkpointing=False, shuffle_dataset=False, remove_unused_columns=False,
        dataloader_num_workers=0, log_completions=False,
        generation_kwargs={"suppress_tokens": blocked.nonzero().flatten().tolist()},
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=processor, callbacks=[StepClock()])
    setup_s = time.perf_counter() - setup_start
    try:
        _profiled(trainer.train)
    finally:
        scorer.close()
    step_times = [b - a for a, b in zip(starts[:1] + ends[:-1], ends)]
    cpu_times = [b - a for a, b in zip(cpu_starts[:1] + cpu_ends[:-1], cpu_ends)]
    return {"step_times": step_times, "cpu_times": cpu_times, "tokens": tokens_per_step, "rewards": rewards_per_step,
            "accuracy": accuracy_per_step, "setup_s": setup_s, "threads": torch.get_num_threads(),
            "trl_version": trl.__version__}


def child_main(side: str, spec_path: str, out_path: str, profile: str | None = None) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        import torch
        torch.set_num_threads(spec["threads"])
    before = machine_state()
    run = run_ours if side == "ours" else run_trl
    if profile:
        # cProfile on CPU time (process_time) around the training loop only (not imports and
        # set-up): on a shared, oversubscribed machine wall-clock samples mostly measure waiting.
        import cProfile
        import io
        import pstats
        global _LOOP_PROFILER
        _LOOP_PROFILER = cProfile.Profile(time.process_time)
        result = run(spec)
        text = io.StringIO()
        stats = pstats.Stats(_LOOP_PROFILER, stream=text)
        stats.sort_stats("cumulative").print_stats(70)
        stats.sort_stats("tottime").print_stats(30)
        Path(profile).write_text(text.getvalue())
    else:
        result = run(spec)
    result.update(side=side, peak_rss_mb=peak_rss_mb(), load_before=before, load_after=machine_state())
    Path(out_path).write_text(json.dumps(result) + "\n")


# ---------------------------------------------------------------- parent

def summarize_run(run: dict, last: int) -> dict:
    times = run["step_times"][1:]  # the first step is warm-up (allocator, lazy inits)
    tokens = run["tokens"][1:len(run["step_times"])]
    cpu = run.get("cpu_times", [])[1:]
    return {"median_step_s": median(times), "median_cpu_s": median(cpu), "tokens_per_s": sum(tokens) / sum(times) if times else float("nan"),
            "peak_rss_mb": run["peak_rss_mb"], "reward_last": sum(run["rewards"][-last:]) / len(run["rewards"][-last:]),
            "load_1m": run["load_before"]["load_1m"]}


def markdown_table(summary: dict, spec: dict) -> str:
    o, t = summary["ours"], summary["trl"]
    lines = [
        f"B={spec['prompts']} prompts x G={spec['group']} samples, max_new_tokens={spec['max_new_tokens']}, "
        f"{spec['steps']} steps x {spec['repeats']} paired repeats (first step of each run dropped); "
        f"ours: `{spec['ours_algorithm']}`; TRL {summary['trl_version']} GRPOTrainer (bnpo, scale_rewards=none, "
        f"beta=0, num_iterations=1, no vLLM); load average {summary['load_range']}.",
        "",
        "| | median step, wall (s) | median step, CPU (s) | tokens/s (wall) | peak RSS (MiB) | mean reward, last steps |",
        "|---|---:|---:|---:|---:|---:|",
        f"| mm-gpg | {fmt(o['median_step_s'])} | {fmt(o['median_cpu_s'])} | {fmt(o['tokens_per_s'], 0)} | "
        f"{fmt(o['peak_rss_mb'], 0)} | {fmt(o['reward_last'])} |",
        f"| TRL GRPOTrainer | {fmt(t['median_step_s'])} | {fmt(t['median_cpu_s'])} | {fmt(t['tokens_per_s'], 0)} | "
        f"{fmt(t['peak_rss_mb'], 0)} | {fmt(t['reward_last'])} |",
        f"| **ours / TRL** | **{fmt(summary['ratio_step_time'], 2)}x** (paired {fmt(summary['ratio_paired'], 2)}x) "
        f"| **{fmt(summary['ratio_cpu'], 2)}x** (paired {fmt(summary['ratio_cpu_paired'], 2)}x) "
        f"| {fmt(summary['ratio_tokens_per_s'], 2)}x | {fmt(summary['ratio_rss'], 2)}x | |",
    ]
    return "\n".join(lines) + "\n"


def parent_main(args) -> int:
    isolate_torch_extensions()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or str(prepare_checkpoint(args.checkpoint_root, args.config,
                                                           warmstart_steps=args.warmstart_steps, seed=args.seed))
    workdir = Path(tempfile.mkdtemp(prefix="vs_trl.", dir=out))
    spec = {"checkpoint": str(Path(checkpoint).resolve()), "config": str(Path(args.config).resolve()),
            "steps": args.steps, "prompts": args.prompts, "group": args.group,
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "lr": args.lr,
            "warmup_steps": args.warmup_steps, "seed": args.seed, "reward_workers": args.reward_workers,
            "ours_algorithm": args.ours_algorithm, "gpg_min_valid_fraction": args.gpg_min_valid_fraction,
            "repeats": args.repeats, "threads": args.threads,
            "workdir": str(workdir)}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    sides = [s for s in ("ours", "trl") if s in args.sides]
    print(f"checkpoint {spec['checkpoint']}\n{json.dumps({k: v for k, v in spec.items() if k != 'workdir'})}",
          flush=True)
    runs: dict[str, list] = {s: [] for s in sides}
    for r in range(args.repeats):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            spec["workdir"] = str(workdir / f"r{r}")
            run_spec = workdir / f"spec_r{r}.json"
            run_spec.write_text(json.dumps(spec))
            result_path = workdir / f"r{r}_{side}.json"
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", side, "--spec", str(run_spec),
                                   "--result", str(result_path)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-6000:])
                raise SystemExit(f"{side} run {r} failed (exit {proc.returncode}); log above")
            (workdir / f"r{r}_{side}.log").write_text(proc.stdout)
            run = json.loads(result_path.read_text())
            runs[side].append(run)
            s = summarize_run(run, args.last)
            print(f"repeat {r} {side:>4}: median step {s['median_step_s']:.3f} s (CPU {s['median_cpu_s']:.3f} s), "
                  f"{s['tokens_per_s']:.0f} tok/s, "
                  f"peak RSS {s['peak_rss_mb']:.0f} MiB, reward(last {args.last}) {s['reward_last']:.3f}, "
                  f"load {run['load_before']['load_1m']}->{run['load_after']['load_1m']}, "
                  f"wall {time.perf_counter() - started:.0f} s", flush=True)
    summary: dict = {}
    for side in sides:
        per_run = [summarize_run(run, args.last) for run in runs[side]]
        summary[side] = {
            "median_step_s": median([p["median_step_s"] for p in per_run]),
            "median_step_spread_s": spread([p["median_step_s"] for p in per_run]),
            "median_cpu_s": median([p["median_cpu_s"] for p in per_run]),
            "tokens_per_s": median([p["tokens_per_s"] for p in per_run]),
            "peak_rss_mb": max(p["peak_rss_mb"] for p in per_run),
            "reward_last": median([p["reward_last"] for p in per_run]),
            "runs": per_run,
        }
    loads = [run["load_before"]["load_1m"] for side in sides for run in runs[side]]
    summary["load_range"] = f"{min(loads)}-{max(loads)} on {os.cpu_count()} CPUs"
    summary["trl_version"] = runs["trl"][0].get("trl_version") if "trl" in runs else None
    if len(sides) == 2:
        o, t = summary["ours"], summary["trl"]
        summary["ratio_step_time"] = o["median_step_s"] / t["median_step_s"]
        summary["ratio_paired"] = median([a["median_step_s"] / b["median_step_s"]
                                          for a, b in zip(o["runs"], t["runs"])])
        summary["ratio_cpu"] = o["median_cpu_s"] / t["median_cpu_s"]
        summary["ratio_cpu_paired"] = median([a["median_cpu_s"] / b["median_cpu_s"]
                                              for a, b in zip(o["runs"], t["runs"])])
        summary["ratio_tokens_per_s"] = o["tokens_per_s"] / t["tokens_per_s"]
        summary["ratio_rss"] = o["peak_rss_mb"] / t["peak_rss_mb"]
        table = markdown_table(summary, spec)
        print("\n" + table)
        (out / "vs_trl.md").write_text(table)
    (out / "vs_trl.json").write_text(json.dumps({"spec": spec, "summary": summary, "runs": runs}, indent=1))
    print(f"results: {out / 'vs_trl.json'}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="training steps per run (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="paired repeats, alternating order (default 5)")
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per step (default 8)")
    p.add_argument("--group", type=int, default=8, help="G: samples per prompt (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear LR warm-up (default 0: constant LR; ours counts warm-up from 1/W at the "
                        "first update, HF's scheduler from 0, so only 0 gives both sides the same LRs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward-workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads in both children (0: torch's default, one per core)")
    p.add_argument("--last", type=int, default=5, help="mean reward over this many last steps")
    p.add_argument("--ours-algorithm", default="reinforce", choices=["reinforce", "gpg"],
                   help="reinforce = GPG with alpha=1 and no resampling: exactly TRL's configured gradient")
    p.add_argument("--gpg-min-valid-fraction", type=float, default=0.0,
                   help="with --ours-algorithm gpg: resampling threshold (0 = same sampled work as TRL)")
    p.add_argument("--sides", default="ours,trl", help="comma list: ours,trl")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="data settings and warm-start come from here")
    p.add_argument("--checkpoint", default=None, help="use this model dir instead of building one")
    p.add_argument("--checkpoint-root", default=str(REPO / "runs" / "bench"))
    p.add_argument("--warmstart-steps", type=int, default=None, help="default: the config's warmstart.steps")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "vs_trl"))
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--profile", help="with --child: write a cProfile (CPU time) of the run to this file")
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, args.spec, args.result, args.profile)
        return 0
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
