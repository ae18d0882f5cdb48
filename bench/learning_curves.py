"""GPG against GRPO and REINFORCE on the synthetic suite: held-out accuracy over training.

    python bench/learning_curves.py --quick     # a smoke run of a few minutes (no LR grid)
    python bench/learning_curves.py             # the full comparison (hours on 2 CPU cores)
    python bench/learning_curves.py --steps 60 --grid 1e-4,2e-4,4e-4 --seeds 0,1,2

Every run is `mm-gpg train` (the product's own CLI, in its own process) on a config derived from
`--config` (default configs/tiny_synthetic.yaml, read when the bench runs: its data, rewards,
rollout and schedule settings are reused), with these differences, identical for every method:
- one fixed warm-started starting checkpoint (`bench/_common.prepare_checkpoint`) instead of a
  per-run warm-start, so that runs differ only in algorithm, learning rate and seed;
- `algorithm.name` = gpg | grpo | reinforce (REINFORCE = GPG with alpha = 1 and no resampling);
- the same steps, prompts per step and group size for every method (equal steps and equal
  sampled groups per draw; GPG's resampling may draw extra groups: the table reports the
  completions each method actually sampled);
- held-out accuracy on the config's held-out set, computed as the config says (greedy, or the
  mean over `eval.samples` sampled answers), before training and every `--eval-every` steps.

Learning rate: each method gets its own, the best of `--grid` (GPG's alpha scales its effective
step, so one shared rate would not be fair). The grid is run with the first seed only and scored
by the mean *training* accuracy (`reward/accuracy`) over the last quarter of the steps, so the
held-out set is never used to choose it; the chosen rate is then run with every seed.

Writes, under `--out` (default runs/bench/learning_curves): one folder per run (metrics.jsonl,
summary.json), `learning_curves.png` (held-out accuracy mean ± std over seeds per method; GPG's
valid-group fraction and alpha over steps), `learning_curves.md` (the table) and
`learning_curves.json`. Finished runs are reused, so an interrupted comparison continues.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (DEFAULT_CONFIG, REPO, isolate_torch_extensions, machine_state,  # noqa: E402
                           prepare_checkpoint)

METHODS = ("gpg", "grpo", "reinforce")


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training step records, held-out records) from a run's metrics.jsonl."""
    train, heldout = [], []
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return train, heldout
    for line in path.read_text().splitlines():
        record = json.loads(line)
        (heldout if "heldout/accuracy" in record else train).append(record)
    return train, heldout


def run_config(base_config: str, checkpoint: str, method: str, lr: float, seed: int, args, out_dir: Path) -> Path:
    """Write the derived YAML config of one run; returns its path."""
    import yaml

    from mm_gpg.config import load_config, to_dict

    overrides = [f"model.path={checkpoint}", "model.init_tiny=false", "warmstart.steps=0",
                 f"algorithm.name={method}", f"train.lr={lr}", f"train.seed={seed}",
                 f"eval.every={args.eval_every}", "eval.before_training=true", "train.checkpoint_every=0",
                 f"output_dir={out_dir}", "progress=false"]
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    if args.prompts:
        overrides += [f"train.prompts_per_step={args.prompts}", f"train.micro_batch_groups={args.prompts}"]
    if args.group:
        overrides.append(f"rollout.group_size={args.group}")
    if args.warmup_steps is not None:
        overrides.append(f"train.warmup_steps={args.warmup_steps}")
    if method == "gpg" and args.gpg_min_valid_fraction is not None:
        overrides.append(f"algorithm.min_valid_fraction={args.gpg_min_valid_fraction}")
    config = load_config(base_config, overrides)
    if args.heldout_per_task:
        for entry in config.data.heldout:
            entry.setdefault("options", {})["size"] = args.heldout_per_task
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.yaml"
    path.write_text(f"# written by bench/learning_curves.py from {base_config}\n"
                    + yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


def run_one(base_config, checkpoint, method, lr, seed, args, root: Path, log) -> Path:
    out_dir = root / f"{method}_lr{lr:g}_s{seed}"
    if (out_dir / "summary.json").exists() and not args.rerun:
        return out_dir
    if out_dir.exists():
        for name in ("metrics.jsonl", "summary.json"):
            (out_dir / name).unlink(missing_ok=True)
    config_path = run_config(base_config, checkpoint, method, lr, seed, args, out_dir)
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    before = machine_state()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mm_gpg.cli", "train", "--config", str(config_path)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (out_dir / "train.log").write_text(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"{out_dir.name} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    (out_dir / "bench_run.json").write_text(json.dumps({"load_before": before, "load_after": machine_state(),
                                                        "wall_s": round(time.perf_counter() - started, 1)}))
    log(f"{out_dir.name}: done in {time.perf_counter() - started:.0f} s (load {before['load_1m']})")
    return out_dir


def score_for_grid(run_dir: Path) -> float:
    """Mean training accuracy over the last quarter of the steps (never the held-out set)."""
    train, _ = read_metrics(run_dir)
    tail = train[-max(1, len(train) // 4):]
    values = [r.get("reward/accuracy") for r in tail if r.get("reward/accuracy") is not None]
    return sum(values) / len(values) if values else float("-inf")


def mean_std(values: list[float]) -> tuple[float, float]:
    import statistics
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curves(run_dirs: list[Path], key: str, heldout: bool) -> tuple[list[int], list[float], list[float]]:
    """Steps and mean/std over runs of `key` (held-out records or training records)."""
    per_run = []
    for d in run_dirs:
        train, held = read_metrics(d)
        records = held if heldout else train
        per_run.append({r["step"]: r.get(key) for r in records})
    steps = sorted(set.intersection(*[set(p) for p in per_run])) if per_run else []
    means, stds = [], []
    for s in steps:
        m, sd = mean_std([p[s] for p in per_run])
        means.append(m)
        stds.append(sd)
    return steps, means, stds


def eval_label(config) -> str:
    """How the run's held-out accuracy is computed (greedy, or the mean over sampled answers)."""
    e = config.eval
    if getattr(e, "temperature", 0.0) and getattr(e, "samples", 1) > 1:
        return f"mean of {e.samples} samples at temperature {e.temperature:g}"
    if getattr(e, "temperature", 0.0):
        return f"one sample at temperature {e.temperature:g}"
    return "greedy"


def plot(results: dict, path: Path, title: str, accuracy_label: str = "greedy") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"gpg": "tab:red", "grpo": "tab:blue", "reinforce": "tab:green"}
    styles = {"gpg": ("o", "-"), "grpo": ("s", "-"), "reinforce": ("^", ":")}  # overlapping lines stay visible
    for method, info in results.items():
        steps, mean, std = curves(info["dirs"], "heldout/accuracy", heldout=True)
        if not steps:
            continue
        lo = [m - s for m, s in zip(mean, std)]
        hi = [m + s for m, s in zip(mean, std)]
        marker, line = styles.get(method, ("o", "-"))
        ax.plot(steps, mean, marker=marker, linestyle=line, color=colors.get(method), label=f"{method} (lr {info['lr']:g})")
        ax.fill_between(steps, lo, hi, color=colors.get(method), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"held-out accuracy ({accuracy_label})")
    ax.set_title("held-out accuracy, mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    if "gpg" in results:
        dirs = results["gpg"]["dirs"]
        for key, style, label in (("groups/valid_fraction_first_draw", "-", "valid-group fraction (first draw)"),
                                  ("groups/valid_fraction", "--", "valid-group fraction (batch)")):
            steps, mean, _ = curves(dirs, key, heldout=False)
            ax2.plot(steps, mean, style, color="tab:purple", label=label)
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("fraction of groups")
        ax2.set_xlabel("training step")
        right = ax2.twinx()
        steps, mean, _ = curves(dirs, "alpha", heldout=False)
        right.plot(steps, mean, color="tab:orange", label="alpha")
        right.set_ylabel("alpha")
        lines = ax2.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        labels = ax2.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
        ax2.legend(lines, labels, loc="lower right")
        ax2.set_title("GPG: valid groups and alpha (mean over seeds)")
        ax2.grid(alpha=0.3)
    import textwrap
    fig.suptitle("\n".join(textwrap.wrap(title, 170)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict, grid_scores: dict, settings: str) -> str:
    lines = [settings, "",
             "| method | lr (best of grid) | held-out acc. before | held-out acc. final (mean ± std) | "
             "best held-out (mean) | train acc., last quarter | completions sampled / run | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, info in results.items():
        finals, befores, peaks, train_tail, sampled = [], [], [], [], []
        for d in info["dirs"]:
            train, held = read_metrics(d)
            if held:
                befores.append(held[0]["heldout/accuracy"])
                finals.append(held[-1]["heldout/accuracy"])
                peaks.append(max(h["heldout/accuracy"] for h in held))
            train_tail.append(score_for_grid(d))
            group = info["group"]
            sampled.append(sum(r.get("groups/draws", 1) for r in train) * info["prompts"] * group)
        f_mean, f_std = mean_std(finals)
        b_mean, _ = mean_std(befores)
        grid = ", ".join(f"{lr:g}: {score:.3f}" for lr, score in sorted(grid_scores.get(method, {}).items()))
        lines.append(f"| {method} | **{info['lr']:g}** (grid {grid}) | {b_mean:.3f} | **{f_mean:.3f} ± {f_std:.3f}** | "
                     f"{mean_std(peaks)[0]:.3f} | {mean_std(train_tail)[0]:.3f} | {mean_std(sampled)[0]:.0f} | "
                     f"{len(info['dirs'])} |")
    if "gpg" in results:
        lines += ["", "GPG over time (mean over seeds): valid-group fraction of the first draw / of the trained "
                  "batch, alpha, draws per step.", "",
                  "| steps | valid fraction, first draw | valid fraction, batch | alpha | draws/step |",
                  "|---|---:|---:|---:|---:|"]
        dirs = results["gpg"]["dirs"]
        per_run = [read_metrics(d)[0] for d in dirs]
        n = min(len(r) for r in per_run)
        chunk = max(1, n // 5)
        for start in range(0, n, chunk):
            window = [rec for r in per_run for rec in r[start:start + chunk]]

            def avg(key):
                vals = [w.get(key) for w in window if w.get(key) is not None]
                return sum(vals) / len(vals) if vals else float("nan")
            lines.append(f"| {start + 1}-{min(n, start + chunk)} | {avg('groups/valid_fraction_first_draw'):.3f} | "
                         f"{avg('groups/valid_fraction'):.3f} | {avg('alpha'):.3f} | {avg('groups/draws'):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 12 steps, B=8, eval every 4 steps on 20 problems per task, no LR grid")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--grid", default=None,
                   help="comma list of learning rates (default: full 5e-5,1e-4,2e-4,4e-4; quick: the config's lr)")
    p.add_argument("--steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the config's)")
    p.add_argument("--group", type=int, default=None, help="G (default: the config's)")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="default: the config's eval.every (quick: 4)")
    p.add_argument("--heldout-per-task", type=int, default=None, help="held-out problems per task (default: config's)")
    p.add_argument("--gpg-min-valid-fraction", type=float, default=None,
                   help="GPG's resampling threshold (default: the config's; 0 turns resampling off)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS; 0: default)")
    p.add_argument("--checkpoint", default=None, help="starting model dir (default: built and cached)")
    p.add_argument("--checkpoint-root", default=str(REPO / "runs" / "bench"))
    p.add_argument("--out", default=None, help="default runs/bench/learning_curves[_quick]")
    p.add_argument("--rerun", action="store_true", help="rerun finished runs instead of reusing them")
    args = p.parse_args(argv)
    isolate_torch_extensions()

    from bench._common import load_bench_config
    base = load_bench_config(args.config)
    if args.quick:
        args.steps = args.steps or 12
        args.prompts = args.prompts or 8
        args.eval_every = args.eval_every or 4
        args.heldout_per_task = args.heldout_per_task or 20
    if args.eval_every is None:
        args.eval_every = base.eval.every or max(1, (args.steps or base.train.steps) // 5)
    grid = ([float(x) for x in args.grid.split(",")] if args.grid
            else [base.train.lr] if args.quick else [5e-5, 1e-4, 2e-4, 4e-4])
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.out or REPO / "runs" / "bench" / ("learning_curves_quick" if args.quick else "learning_curves"))
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or str(prepare_checkpoint(args.checkpoint_root, args.config))
    checkpoint = str(Path(checkpoint).resolve())
    steps = args.steps or base.train.steps
    prompts = args.prompts or base.train.prompts_per_step
    group = args.group or base.rollout.group_size

    def log(text):
        print(text, flush=True)

    log(f"checkpoint {checkpoint}; methods {methods}; seeds {seeds}; lr grid {grid}; {steps} steps x {prompts} "
        f"prompts x G={group}; eval every {args.eval_every}; {machine_state()}")
    started = time.perf_counter()

    def go(job):
        method, lr, seed = job
        return job, run_one(args.config, checkpoint, method, lr, seed, args, root, log)

    # Phase 1: the LR grid, first seed only, scored on training accuracy.
    grid_scores: dict[str, dict[float, float]] = {m: {} for m in methods}
    jobs = [(m, lr, seeds[0]) for m in methods for lr in grid]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (method, lr, _), run_dir in pool.map(go, jobs):
            grid_scores[method][lr] = score_for_grid(run_dir)
    best = {m: max(grid_scores[m], key=grid_scores[m].get) for m in methods}
    log(f"grid (train accuracy, last quarter): {grid_scores}; chosen {best}")
    # Phase 2: the chosen rate with every seed.
    jobs = [(m, best[m], s) for m in methods for s in seeds]
    results = {m: {"lr": best[m], "dirs": [], "prompts": prompts, "group": group} for m in methods}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (method, _, _), run_dir in pool.map(go, jobs):
            results[method]["dirs"].append(run_dir)
    from mm_gpg.config import load_config
    accuracy_label = eval_label(load_config(results[methods[0]]["dirs"][0] / "config.yaml"))
    settings = (f"{steps} steps x {prompts} prompts x G={group} per method and seed, seeds {seeds}, held-out "
                f"accuracy ({accuracy_label}) every {args.eval_every} steps on the config's held-out set"
                f"{f' ({args.heldout_per_task} per task)' if args.heldout_per_task else ''}; one warm-started "
                f"starting checkpoint for all runs; config {Path(args.config).name}; lr chosen per method by "
                f"training accuracy over the last quarter, first seed.")
    md = table(results, grid_scores, settings)
    (root / "learning_curves.md").write_text(md)
    plot(results, root / "learning_curves.png", settings, accuracy_label)
    (root / "learning_curves.json").write_text(json.dumps(
        {"settings": settings, "grid_scores": {m: {str(k): v for k, v in g.items()} for m, g in grid_scores.items()},
         "best_lr": best, "runs": {m: [str(d) for d in r["dirs"]] for m, r in results.items()},
         "wall_s": round(time.perf_counter() - started, 1), "machine": machine_state()}, indent=1))
    print("\n" + md)
    print(f"plot: {root / 'learning_curves.png'}\ntable: {root / 'learning_curves.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
