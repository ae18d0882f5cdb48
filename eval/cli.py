"""`mm-gpg eval`: run a suite, score outside predictions, compare two runs, list suites.

    mm-gpg eval --model PATH_OR_HUB_ID --suite synthetic|cross_modal|file.yaml [--output DIR]
                [--resume | --overwrite] [--limit N] [--seed S] [--data-root DIR]
                [--benchmarks a,b] [--max-new-tokens N] [--n K] [key=value ...]
    mm-gpg eval score ...    (the same command as `mm-gpg score`)
    mm-gpg eval compare A/report.json B/report.json [--output diff.md|diff.json]
    mm-gpg eval suites

Exit status: 0 when every benchmark ran, 1 when a benchmark failed (its source could not be
loaded, gave 0 samples, or skipped more than `max_skipped_fraction` of its records as malformed;
the others still ran and the report says which failed and why), 2 for a usage error
(data_prep.errors: any other exception is a bug and keeps its traceback).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from data_prep.errors import USER_ERRORS, UserError, report_user_error

from .metrics import N_BOOT


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm-gpg eval", description="Run an eval suite on a model.",
                                epilog="Other commands: 'mm-gpg eval score ...', 'mm-gpg eval compare A B', "
                                       "'mm-gpg eval suites'.")
    p.add_argument("--model", required=True, help="local checkpoint folder or hub id (owner/name)")
    p.add_argument("--suite", required=True, help="a built-in suite (synthetic, cross_modal) or a YAML file")
    p.add_argument("--output", help="output folder (default: runs/eval/<suite>-<model name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output, skipping scored samples")
    p.add_argument("--overwrite", action="store_true", help="discard what --output holds and start again")
    p.add_argument("--limit", type=int, help="at most N samples per benchmark")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling (n > 1) and the bootstrap (default 0)")
    p.add_argument("--benchmarks", help="comma-separated benchmark names to run (default: all of the suite)")
    p.add_argument("--data-root", help="folder holding local copies of the benchmarks, one sub-folder each")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="edit the suite, as `mm-gpg train` edits its config: defaults.sampling.max_new_tokens=64, "
                        "mathvista.options.path=/x, benchmarks[0].limit=5 (see `mm-gpg config show --suite NAME`)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="key=value",
                   help="the same as a positional key=value (kept for older command lines)")
    p.add_argument("--max-new-tokens", type=int, help="completion cap for every benchmark")
    p.add_argument("--batch-size", type=int, help="prompts per generate call for every benchmark")
    p.add_argument("--n", type=int, help="completions per prompt (n > 1: sampled, mean@n and pass@n)")
    p.add_argument("--temperature", type=float, help="sampling temperature when n > 1")
    p.add_argument("--engine", default="hf", help="rollout engine: hf (default) or vllm")
    p.add_argument("--engine-option", dest="engine_options", action="append", default=[], metavar="KEY=VALUE",
                   help="engine constructor option, e.g. gpu_memory_utilization=0.8 (vllm)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="auto: bfloat16 on a GPU that has it, float32 on the CPU")
    p.add_argument("--device", default="auto",
                   help="auto (the GPU when CUDA is present, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=2, help="verifier processes")
    p.add_argument("--timeout", type=float, default=5.0, help="hard time limit per verifier call, seconds")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, help="bootstrap resamples (default 1000)")
    p.add_argument("--cache-dir", help="datasets cache folder for the benchmark loaders")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (one is drawn only on a terminal; logs get a line per batch)")
    return p


def default_output(suite: str, model: str) -> str:
    model_name = Path(model.rstrip("/")).name or "model"
    suite_name = Path(suite).stem
    return str(Path("runs") / "eval" / re.sub(r"[^\w.-]+", "_", f"{suite_name}-{model_name}"))


def run_main(argv: list[str]) -> int:
    args = run_parser().parse_intermixed_args(argv)  # key=value overrides may come between options
    from .runner import run_suite
    from mm_gpg.config import parse_override

    from .suite import apply_run_options, load_suite
    if args.resume and args.overwrite:
        return report_user_error("mm-gpg eval", UserError("--resume and --overwrite exclude each other"))
    from mm_gpg.device import check_device
    if check_device(args.device):
        return report_user_error("mm-gpg eval", UserError(f"--device {args.device}: {check_device(args.device)}"))
    for flag in ("limit", "max_new_tokens", "batch_size", "n"):
        value, least = getattr(args, flag), 0 if flag == "limit" else 1
        if value is not None and value < least:
            return report_user_error("mm-gpg eval", UserError(f"--{flag.replace('_', '-')}: must be >= {least}, "
                                                              f"got {value}"))
    try:
        only = [s.strip() for s in args.benchmarks.split(",") if s.strip()] if args.benchmarks else None
        suite = load_suite(args.suite, [*args.sets, *args.overrides], data_root=args.data_root, only=only)
        apply_run_options(suite, limit=args.limit, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size, n=args.n, temperature=args.temperature)
        for b in suite.benchmarks:
            if b.sampling.n > 1 and b.sampling.greedy:
                raise ValueError(f"benchmark {b.name}: n={b.sampling.n} needs sampling (greedy: false)")
        engine_options = {}
        for item in args.engine_options:
            key, value = parse_override(item, example="gpu_memory_utilization=0.8")
            engine_options[key] = value
        output = args.output or default_output(args.suite, args.model)
        _, code = run_suite(suite, model=args.model, output_dir=output, seed=args.seed, resume=args.resume,
                            overwrite=args.overwrite, engine=args.engine, dtype=args.dtype, device=args.device,
                            workers=args.workers,
                            timeout_s=args.timeout, n_boot=args.bootstrap, cache_dir=args.cache_dir,
                            quiet=args.quiet, engine_options=engine_options, progress=args.progress)
    except USER_ERRORS as exc:
        return report_user_error("mm-gpg eval", exc)
    return code


def compare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mm-gpg eval compare",
                                description="Per-benchmark and per-category differences B - A, with "
                                            "bootstrap 95% intervals.")
    p.add_argument("a", help="report.json of run A")
    p.add_argument("b", help="report.json of run B")
    p.add_argument("--output", help="also write the comparison (.json, or Markdown otherwise)")
    p.add_argument("--bootstrap", type=int, default=N_BOOT)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from .compare import compare_reports, load_report, render_comparison
    from data_prep.files import write_json_atomic, write_text_atomic
    try:
        cmp = compare_reports(load_report(args.a), load_report(args.b), n_boot=args.bootstrap, seed=args.seed)
    except USER_ERRORS as exc:
        return report_user_error("mm-gpg eval compare", exc)
    print(render_comparison(cmp), end="")
    if args.output:
        if args.output.endswith(".json"):
            write_json_atomic(args.output, cmp)
        else:
            write_text_atomic(args.output, render_comparison(cmp, markdown=True))
    return 0


def suites_main(argv: list[str]) -> int:
    from .suite import load_suite, suite_names
    for name in suite_names():
        suite = load_suite(name)
        print(f"{name}: {suite.description}")
        for b in suite.benchmarks:
            print(f"  {b.name:<12} source {b.source}" + (f", split {b.split}" if b.split else "")
                  + (f", limit {b.limit}" if b.limit is not None else "")
                  + (f", subset {b.subset['size']}" if b.subset else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "score":
        from .score import main as score_main
        return score_main(argv[1:], prog="mm-gpg eval score")
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    if argv and argv[0] == "suites":
        return suites_main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
