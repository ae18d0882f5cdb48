"""GPG diagnostic plots from a run folder's `metrics.jsonl` (`mm-gpg plot RUN_DIR [RUN_DIR ...]`).

One PNG per question a user asks of an RL run: is the reward rising (and which component)? is
held-out accuracy? how many groups carry signal (valid fraction at the first draw and in the
final batch), how hard does GPG resample (alpha, draws per step)? are answers getting longer or
cut at the token limit? is the policy collapsing (entropy)? are updates sane (gradient norm)?
Several runs go on the same axes, one line each, for a comparison. See docs/observability.md."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .metrics import read_records

PLOTS_DIR = "plots"

# (file name, title, metric keys: one panel each). "reward components" is filled from the runs.
FIGURES: list[tuple[str, str, list[str]]] = [
    ("reward.png", "reward (mean over every sampled completion) and its components", ["reward/mean"]),
    ("heldout_accuracy.png", "held-out accuracy", ["heldout/accuracy"]),
    ("valid_groups.png", "valid groups (rewards not all equal)",
     ["groups/valid_fraction_first_draw", "groups/valid_fraction"]),
    ("alpha_draws.png", "GPG correction alpha and prompt draws per step", ["alpha", "groups/draws"]),
    ("response.png", "response length (tokens) and truncation", ["response/length", "response/truncated_fraction"]),
    ("entropy.png", "policy entropy (nats per token)", ["entropy"]),
    ("grad_norm.png", "gradient norm (before clipping)", ["grad_norm"]),
]
NOT_COMPONENTS = ("reward/mean", "reward/std", "reward/responses", "reward/worker_restarts")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is {run_dir} a training run folder?)")
    return read_records(path)


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return [p[0] for p in points], [float(p[1]) for p in points]


def reward_components(runs: dict[str, list[dict]]) -> list[str]:
    return sorted({k for records in runs.values() for r in records for k in r
                   if k.startswith("reward/") and k not in NOT_COMPONENTS and k.count("/") == 1})


def write_plots(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """The PNGs of FIGURES for one run (in RUN_DIR/plots by default) or several runs on the same
    axes (in `out_dir`); returns the files written. A figure none of the runs has data for is
    skipped (e.g. held-out accuracy of a run without evaluation)."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run_dirs = [Path(d) for d in run_dirs]
    names = [d.resolve().name for d in run_dirs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: label by the parent too
        names = [f"{d.resolve().parent.name}/{d.resolve().name}" for d in run_dirs]
    runs = {name: read_metrics(d) for name, d in zip(names, run_dirs)}
    out = Path(out_dir) if out_dir is not None else run_dirs[0] / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    figures = [(f, t, keys + reward_components(runs) if f == "reward.png" else keys) for f, t, keys in FIGURES]
    written = []
    for filename, title, keys in figures:
        keys = [k for k in keys if any(series(records, k)[0] for records in runs.values())]
        if not keys:
            continue
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.4 * len(keys) + 0.6), sharex=True, squeeze=False)
        for ax, key in zip(axes[:, 0], keys):
            for name, records in runs.items():
                steps, values = series(records, key)
                if steps:
                    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(runs) > 1:
            axes[0, 0].legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mm-gpg plot", description="GPG diagnostic plots (PNG) of training runs")
    parser.add_argument("runs", nargs="+", help="run folders (several: one line each, on the same axes)")
    parser.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots for one run, ./plots for several)")
    args = parser.parse_args(argv)
    out = args.out or (None if len(args.runs) == 1 else PLOTS_DIR)
    for path in write_plots(args.runs, out):
        print(path)
    return 0
