"""`mm-gpg` command line: the one place that wires every package together.

    mm-gpg train --config configs/tiny_synthetic.yaml [key=value ...]
    mm-gpg init-tiny DIR [--family qwen2_vl|qwen2_5_vl|idefics3]
    mm-gpg score INPUT.jsonl [-o OUT.jsonl] [--benchmark NAME] [--verifier NAME|auto]
    mm-gpg data inspect SOURCE [--n 16] [--out sheet.png]
    mm-gpg export CHECKPOINT OUT
    mm-gpg plot RUN_DIR [RUN_DIR ...] [--out DIR]
    mm-gpg view RUN_DIR|EVAL_DIR [--out PAGE.html]
    mm-gpg config show [--config X.yaml | --suite NAME|FILE.yaml] [key=value ...]

Exit status 2 with one line `mm-gpg: error: ...` for a user error (data_prep.errors.USER_ERRORS);
any other exception is a bug and keeps its traceback (exit status 1). MM_GPG_DEBUG=1 in the
environment makes user errors show their traceback too.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

# Errors a user can cause (bad config, paths, records: data_prep.errors); anything else is a bug and
# keeps its traceback. MM_GPG_DEBUG=1 shows user errors' tracebacks too.
from data_prep.errors import USER_ERRORS, report_user_error


def train_command(args) -> int:
    from mm_gpg.config import load_config
    from mm_gpg.distributed import configure_environment

    config = load_config(args.config, args.overrides)
    if args.check:  # every setting is checked by load_config; nothing is loaded or written
        print(f"config OK: {args.config or 'defaults'}" + (f" with {len(args.overrides)} override(s)"
                                                            if args.overrides else ""))
        return 0
    configure_environment(config.model.device)
    from data_prep.registry import load_source
    from eval.in_training import HeldoutEvaluator, SuiteEvaluator, chain_evaluators
    from mm_gpg.distributed import init_distributed
    from mm_gpg.learner import Learner
    from mm_gpg.policy import load_policy
    from mm_gpg.rollout import build_engine
    from mm_gpg.tiny import build_tiny
    from mm_gpg.checkpoint import save_hf
    from mm_gpg.device import describe, resolve_attn_implementation, resolve_device, resolve_dtype
    from mm_gpg.progress import dataset_bars
    from mm_gpg.trainer import Trainer
    from mm_gpg.warmstart import run_warmstart, warmstart_dir
    from rewards import build_scorer
    import torch

    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    dist = init_distributed(timeout_s=config.train.collective_timeout_s, device=config.model.device)
    device = resolve_device(config.model.device)
    say = print if dist.is_main else (lambda *a, **k: None)
    dataset_bars(config.progress and dist.is_main)  # sources are read by the warm-start and the trainer
    if config.model.init_tiny and not Path(config.model.path).exists():
        if dist.is_main:
            build_tiny(config.model.path, seed=config.train.seed, family=config.model.tiny_family)
            say(f"built the embedded tiny {config.model.tiny_family} model at {config.model.path}")
        with dist.stage("set-up: tiny model"):
            dist.barrier()
    model_path = config.model.path
    if config.warmstart.steps:
        cached = warmstart_dir(config)
        if (cached / "config.json").exists():
            say(f"warm-start: reusing {cached}")
        else:
            policy = load_policy(model_path, config.model.dtype, config.model.attn_implementation, device=device)
            run_warmstart(config, policy, dist, log=say)
            with dist.stage("warm-start"):
                save_hf(policy.model, policy.processor, cached, dist)
                dist.barrier()
            say(f"warm-start: saved {cached}")
        model_path = str(cached)
    # Loaded on the CPU, in the dtype and with the attention kernel resolved for `device`, where
    # DeepSpeed puts it.
    dtype = resolve_dtype(config.model.dtype, device)
    attn = resolve_attn_implementation(config.model.attn_implementation, device, dtype)
    policy = load_policy(model_path, dtype, attn)
    t, m = config.train, config.model
    learner = Learner(policy, lr=t.lr, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
                      grad_clip=t.grad_clip, zero_stage=t.zero_stage, bf16=t.bf16,
                      micro_batch_groups=min(t.micro_batch_groups, t.prompts_per_step // dist.world_size),
                      local_groups=t.prompts_per_step // dist.world_size, group_size=config.rollout.group_size,
                      train_language_model=m.train_language_model, train_projector=m.train_projector,
                      train_vision_tower=m.train_vision_tower, kl_coef=config.algorithm.kl_coef,
                      world_size=dist.world_size, temperature=config.rollout.temperature,
                      gradient_checkpointing=t.gradient_checkpointing, deepspeed_config=t.deepspeed,
                      lora=m.lora)
    say(describe(learner.device, learner.module.dtype, learner.module.config._attn_implementation)
        + (", DeepSpeed bf16 mode" if learner.engine.bfloat16_enabled() else "")
        + (f", {dist.world_size} processes" if dist.world_size > 1 else ""))
    engine = build_engine(config.rollout.engine, policy=policy, model_context=learner.generation_context,
                          max_prompts_per_call=config.rollout.max_prompts_per_call, **config.rollout.vllm)
    heldout = [s for entry in config.data.heldout
               for s in load_source(entry["source"], **entry.get("options", {}))]
    with build_scorer(config.rewards, timeout_s=config.reward_timeout_s,
                      num_workers=config.reward_workers) as scorer, contextlib.ExitStack() as stack:
        d = config.data
        evaluator = HeldoutEvaluator(heldout, policy.processor, scorer, prompt_style=d.prompt_style,
                                     min_pixels=d.min_pixels, max_pixels=d.max_pixels,
                                     max_new_tokens=config.eval.max_new_tokens, dist=dist,
                                     system_prompt=d.system_prompt, temperature=config.eval.temperature,
                                     samples_per_problem=config.eval.samples, seed=config.train.seed,
                                     progress=config.progress)
        evaluator_mode = evaluator.description
        heldout_evaluator = evaluator
        if config.eval.suite:
            e = config.eval
            suite = stack.enter_context(SuiteEvaluator(
                e.suite, policy.processor, dist=dist, seed=config.train.seed, limit=e.suite_limit,
                data_root=e.suite_data_root, overrides=e.suite_overrides,
                reward_timeout_s=config.reward_timeout_s, reward_workers=config.reward_workers,
                output_dir=str(Path(config.output_dir) / "eval_suite"), log=say, progress=config.progress))
            evaluator = chain_evaluators(evaluator, suite)
        trainer = Trainer(config, policy, engine, learner, scorer, dist, evaluator,
                          eval_answers=lambda: heldout_evaluator.answers)
        if trainer.resumed_from is not None:
            say(f"resuming from step {trainer.state.step}")
        if dist.is_main:  # the run folder explains itself: config.yaml, run.json (docs/observability.md)
            from mm_gpg.runinfo import write_run_files
            write_run_files(config, ["train", *(["--config", args.config] if args.config else []), *args.overrides],
                            start_step=trainer.state.step)
        say(f"training {config.algorithm.name} for {t.steps} steps: {t.prompts_per_step} prompts x "
            f"{config.rollout.group_size} samples per step, {dist.world_size} process(es); "
            f"trainable parameters {learner.trainable}")
        # The final model is written inside `fit`, before the final evaluation, so that an
        # evaluation that fails cannot lose it.
        results = trainer.fit(final_dir=Path(config.output_dir) / "final")
    final = trainer.final_path
    wall = time.perf_counter() - started
    before = results["before"].get("heldout/accuracy")
    after = results["after"].get("heldout/accuracy")
    if dist.is_main:
        summary = {"heldout_accuracy_before": before, "heldout_accuracy_after": after,
                   "heldout_mode": evaluator_mode, "heldout_n": results["after"].get("heldout/n"),
                   "wall_time_s": round(wall, 1), "final_model": str(final),
                   "before": results["before"], "after": results["after"]}
        Path(config.output_dir, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if before is not None and after is not None:
            say(f"held-out accuracy ({evaluator_mode}) on {int(summary['heldout_n'])} problems: "
                f"before {before:.3f}  after {after:.3f}  ({100 * (after - before):+.1f} points)")
            for key in sorted(k for k in results["after"] if k.endswith("/accuracy") and k != "heldout/accuracy"):
                say(f"  {key}: {results['before'].get(key, float('nan')):.3f} -> {results['after'][key]:.3f}")
        from mm_gpg.plots import write_plots
        plots = write_plots([config.output_dir])
        say(f"wall time {wall:.0f} s; model saved to {final}; {len(plots)} plots in {Path(config.output_dir) / 'plots'}")
        if config.logging.rollouts_every:
            from mm_gpg.view import write_view
            say(f"rollouts: open {write_view(config.output_dir)} in a browser (mm-gpg view rewrites it)")
    return 0


def init_tiny_command(args) -> int:
    from mm_gpg.tiny import build_tiny
    path = build_tiny(args.dir, seed=args.seed, family=args.family)
    print(f"built the embedded tiny {args.family} model at {path}")
    return 0


def score_command(argv: list[str]) -> int:
    from eval.score import main
    return main(argv)


def export_command(argv: list[str]) -> int:
    from mm_gpg.checkpoint import export_main
    return export_main(argv)


def data_command(argv: list[str]) -> int:
    if not argv or argv[0] != "inspect":
        raise ValueError("usage: mm-gpg data inspect SOURCE [--n 16] [--out sheet.png]")
    from data_prep.inspect import main
    return main(argv[1:])


def plot_command(argv: list[str]) -> int:
    from mm_gpg.plots import main
    return main(argv)


def config_command(argv: list[str]) -> int:
    """`mm-gpg config show`: the resolved training config (or a suite) as YAML, each key with its
    docstring above it; the same merging and checks as `mm-gpg train` / `mm-gpg eval`."""
    p = argparse.ArgumentParser(prog="mm-gpg config", description="Print the resolved config (defaults <- "
                                "--config YAML <- key=value overrides) with each key's docstring.")
    p.add_argument("action", choices=["show"])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--config", help="YAML recipe (see configs/); default: the built-in defaults")
    which.add_argument("--suite", help="show an eval suite instead: a built-in name or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides, as for `mm-gpg train` (or `mm-gpg eval` with --suite)")
    args = p.parse_intermixed_args(argv)
    from mm_gpg.config import load_config, render_with_docs
    if args.suite:
        from eval.suite import load_suite
        resolved, source = load_suite(args.suite, args.overrides), f"suite {args.suite}"
    else:
        resolved, source = load_config(args.config, args.overrides), args.config or "the defaults"
    edits = f" <- {len(args.overrides)} override(s)" if args.overrides else ""
    print(f"# Resolved from {source}{edits}. Each key's docstring is the comment above it.")
    print(render_with_docs(resolved))
    return 0


def view_command(argv: list[str]) -> int:
    from mm_gpg.view import main
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mm-gpg", description="GPG reinforcement learning for VLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a policy (GPG or a baseline)")
    p_train.add_argument("--config", help="YAML recipe (see configs/)")
    p_train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4")
    p_train.add_argument("--check", action="store_true",
                         help="check every setting and exit (status 2 with a one-line error on the first bad one)")
    p_tiny = sub.add_parser("init-tiny", help="build an embedded tiny model (random weights, a real architecture)")
    p_tiny.add_argument("dir")
    p_tiny.add_argument("--seed", type=int, default=0)
    p_tiny.add_argument("--family", default="qwen2_vl",
                        help="architecture: qwen2_vl (default), qwen2_5_vl or idefics3 (see docs/models.md)")
    sub.add_parser("score", help="score a JSONL of responses (raw benchmark records or Samples) with the verifiers",
                   add_help=False)
    sub.add_parser("data", help="inspect a data source", add_help=False)
    sub.add_parser("export", help="write a training checkpoint in Hugging Face format (LoRA: merged, "
                   "plus its adapter in OUT/adapter/)", add_help=False)
    sub.add_parser("eval", help="run the eval suite", add_help=False)
    sub.add_parser("plot", help="GPG diagnostic plots (PNG) of one run or several", add_help=False)
    sub.add_parser("config", help="print the resolved config (or a suite) with each key's docstring", add_help=False)
    sub.add_parser("view", help="a static HTML page browsing a run's rollouts or an eval's predictions",
                   add_help=False)

    passthrough = {"score": score_command, "data": data_command, "export": export_command, "plot": plot_command,
                   "view": view_command, "config": config_command}
    try:
        if argv and argv[0] in passthrough:
            return passthrough[argv[0]](argv[1:])
        if argv and argv[0] == "eval":
            from eval.cli import main as eval_main
            return eval_main(argv[1:])
        args = parser.parse_args(argv)
        return {"train": train_command, "init-tiny": init_tiny_command}[args.command](args)
    except USER_ERRORS as exc:
        return report_user_error("mm-gpg", exc)


if __name__ == "__main__":
    sys.exit(main())
