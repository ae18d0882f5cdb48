"""`mm-gpg score`: score a JSONL file of model outputs with the verifiers' rules.

    mm-gpg score INPUT.jsonl [-o OUT.jsonl] [--benchmark NAME] [--verifier NAME|auto]
                 [--mode official|lenient] [--on-bad-line error|skip]
                 [--timeout S] [--workers N] [--bootstrap N] [--seed S]

`mm-gpg eval score` is the same command. Each input line is one JSON object holding the model's
`response` (a string) and the problem:
- with `--benchmark NAME`: the benchmark's raw record, with the field names of its hub copy, read by
  that benchmark's adapter (`data_prep.adapters.record_to_sample`, the code that reads it for
  training and evaluation);
- without: a Sample in our own schema: `answer` (required), `answer_type` (default
  `multiple_choice` when there are `choices`, else `text`), `choices`, `task`, `meta`, `id`,
  `question`; other fields are kept in the output and not read.

`--verifier` names the rule; the default, `auto`, routes each sample by its task, then its answer
type (a benchmark's samples get the benchmark's official rule). `--mode official` (the default)
scores as the benchmark's own code does, so numbers compare with published ones. The scoring is
`rewards.score_samples`: worker processes, each call under the `--timeout` limit.

Each output line is the input line plus `score` (0..1), `components`, `verifier`, `extraction` (the
rule that found the answer), `parse_failure` and `timeout` (and `error` when the verifier raised).
The input's own fields are never overwritten, `score` excepted: a field whose name the input
already uses (MathVista's own `extraction`, the GPT step's answer) is written as
`scoring_<name>`. The output (default: INPUT with `.jsonl` replaced by `.scored.jsonl`) is written
atomically. A summary (accuracy with a bootstrap interval, and for a benchmark a table per category
of the `cross_modal` suite) goes to stdout.

A malformed line (invalid UTF-8 or JSON, nesting deeper than 64 levels, a lone surrogate escape, a
missing or wrong field) stops the run before anything is scored, with a one-line error naming the
line and field and exit status 2; with `--on-bad-line skip` it is left out with a warning.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import deque
from collections.abc import Iterator

from data_prep.errors import USER_ERRORS, DataError, debug_enabled, error_line
from data_prep.files import atomic_write
from data_prep.schema import ANSWER_TYPES, BadRecord, Sample

from .metrics import N_BOOT, summarize
from .report import _table, category_rows, ci_text, pct

PROG = "mm-gpg score"
MODES = ("official", "lenient")
ON_BAD_LINE = ("error", "skip")
MAX_DEPTH = 64
"""Deepest JSON nesting an input line may have (benchmark records nest two or three levels)."""


class BadLine(DataError):
    """An input line that cannot be scored; the message names the line and the field."""

    def __init__(self, line: int, field: str, message: str):
        self.line, self.field = line, field
        super().__init__(f"line {line}: field {field!r}: {message}")


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("input", metavar="INPUT.jsonl", help="one JSON object a line: `response` plus the problem")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", help="output JSONL (default: INPUT with .jsonl -> .scored.jsonl)")
    p.add_argument("--benchmark", metavar="NAME",
                   help="lines are NAME's raw records (a data source adapter: vqav2, mathvista, ...); "
                        "default: lines are Samples in our own schema")
    p.add_argument("--verifier", default="auto", metavar="NAME|auto",
                   help="a registered verifier, or 'auto' (default): each sample routed by task, then answer type")
    p.add_argument("--mode", choices=MODES, default="official", help="the verifiers' mode (default: official)")
    p.add_argument("--on-bad-line", choices=ON_BAD_LINE, default="error",
                   help="a malformed line: stop with an error naming it (default), or skip it with a warning")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds per verifier call (default 5)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="scoring processes (0: in this process, no time limit)")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, metavar="N", help="bootstrap resamples for the interval")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")
    return p


# ---------------------------------------------------------------------------------------------
# Reading the input: one JSON object a line, hardened against hostile files
# ---------------------------------------------------------------------------------------------

def _surrogate_path(value, path: str = "") -> str | None:
    """The field path of the first string (key or value) holding a lone surrogate (JSON allows
    the escape "\\ud800", UTF-8 cannot write it), or None. Iterative: depth is bounded first."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "<record>"
        elif isinstance(item, dict):
            for key, sub in item.items():
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where}.<key>" if where else "<key>"
                stack.append((sub, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
    return None


def _depth(value) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((sub, level + 1) for sub in (item.values() if isinstance(item, dict) else item))
    return depth


def parse_line(raw: bytes, line_no: int) -> dict | None:
    """One JSONL line -> its object (None for a blank line); BadLine for invalid UTF-8, invalid
    JSON, nesting deeper than MAX_DEPTH, a lone surrogate, or a value that is no JSON object."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(line_no, "<utf-8>", f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(line_no, "<json>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadLine(line_no, "<json>", f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(record, dict):
        raise BadLine(line_no, "<record>", f"expected a JSON object, got {type(record).__name__}")
    if _depth(record) > MAX_DEPTH:
        raise BadLine(line_no, "<json>", f"nested deeper than {MAX_DEPTH} levels")
    bad = _surrogate_path(record)
    if bad is not None:
        raise BadLine(line_no, bad, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                                    "which UTF-8 cannot encode")
    return record


def sample_from_line(record: dict, line_no: int) -> Sample:
    """A line in our own schema -> its Sample; BadLine naming the field otherwise."""
    def field(name: str, types: tuple, what: str, default=None):
        value = record.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, types):
            raise BadLine(line_no, name, f"expected {what}, got {type(value).__name__}")
        return value

    if record.get("answer") is None:
        raise BadLine(line_no, "answer", "missing (a line in our schema needs the gold `answer`; "
                                         "raw benchmark records need --benchmark NAME)")
    choices = field("choices", (list,), "a list of option texts")
    answer_type = field("answer_type", (str,), "a string", "multiple_choice" if choices else "text")
    if answer_type not in ANSWER_TYPES:
        raise BadLine(line_no, "answer_type", f"expected one of {list(ANSWER_TYPES)}, got {answer_type!r}")
    return Sample(id=str(field("id", (str, int), "a string or integer id", line_no)),
                  question=field("question", (str,), "a string", ""), answer=record["answer"],
                  answer_type=answer_type, choices=choices, task=field("task", (str,), "a string", ""),
                  meta=dict(field("meta", (dict,), "an object", {})))


def read_lines(path: str, benchmark: str | None, split: str | None = None, on_bad_line: str = "error",
               skipped: list | None = None) -> Iterator[tuple[int, dict, str, Sample]]:
    """Yield `(line number, the line's object, response, Sample)` for every non-blank line of the
    file at `path`, the Sample made by `benchmark`'s adapter (None: the line is in our schema).
    A bad line raises BadLine naming it, or with on_bad_line="skip" is left out and its error
    appended to `skipped`."""
    from data_prep.adapters import record_to_sample
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                record = parse_line(raw, line_no)
                if record is None:
                    continue
                response = record.get("response")
                if not isinstance(response, str):
                    raise BadLine(line_no, "response", "missing" if response is None else
                                  f"expected a string, got {type(response).__name__}")
                if benchmark is None:
                    sample = sample_from_line(record, line_no)
                else:
                    try:
                        sample = record_to_sample(benchmark, record, index=line_no - 1, split=split)
                    except BadRecord as exc:
                        raise DataError(f"line {line_no}: {exc}") from None
            except DataError as exc:
                if on_bad_line != "skip":
                    raise
                if skipped is not None:
                    skipped.append(exc)
                continue
            yield line_no, record, response, sample


# ---------------------------------------------------------------------------------------------
# Writing the output
# ---------------------------------------------------------------------------------------------

def result_fields(result) -> dict:
    """What an output line adds for one RewardResult of the single "score" component."""
    info = result.info
    fields = {"score": result.score,
              "components": {k: v for k, v in result.components.items() if k != "score"},
              "verifier": info.get("verifiers", {}).get("score"), "extraction": info.get("extraction"),
              "parse_failure": info["parse_failure"], "timeout": info["timeout"]}
    if info.get("error"):
        fields["error"] = info["error"].get("score")
    return fields


def scored_record(record: dict, fields: dict) -> dict:
    """`record` plus the score `fields`, none of the record's own fields overwritten but `score`:
    a field whose name the record already uses goes to `scoring_<name>` (prefixed again while
    that name is taken too)."""
    out = dict(record)
    for key, value in fields.items():
        name = key
        while name != "score" and name in record:
            name = f"scoring_{name}"
        out[name] = value
    return out


def default_output(path: str) -> str:
    """`preds.jsonl` -> `preds.scored.jsonl` (any other name: `.scored.jsonl` appended)."""
    stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
    return stem + ".scored.jsonl"


def _suite_entry(benchmark: str):
    """The benchmark's entry in the cross_modal suite (its split and categories), or None."""
    from .suite import load_suite
    try:
        suite = load_suite("cross_modal")
    except Exception:
        return None
    return next((b for b in suite.benchmarks if b.source == benchmark), None)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def _check_args(args) -> None:
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout: expected a finite number of seconds > 0, got {args.timeout!r}")
    if args.workers < 0:
        raise ValueError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap: expected an integer >= 1, got {args.bootstrap}")
    from rewards.scorer import verifier_spec
    verifier_spec(args.verifier, args.mode)  # an unknown verifier fails here too
    if args.benchmark is not None:
        from data_prep.adapters import adapter_def
        adapter_def(args.benchmark)  # an unknown name fails here, before any line is read
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"INPUT: no such file {args.input!r}")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    try:
        return _run(args, prog)
    except USER_ERRORS as exc:
        if debug_enabled():
            raise
        where = f"{args.input}: " if isinstance(exc, DataError) else ""
        print(f"{prog}: error: {where}{error_line(exc)}", file=sys.stderr)
        return 2


def _run(args, prog: str) -> int:
    from rewards import score_samples
    from .core import categories_of
    _check_args(args)
    entry = _suite_entry(args.benchmark) if args.benchmark else None
    split, keys = (entry.split, list(entry.categories)) if entry is not None else (None, [])
    skipped: list[DataError] = []
    # every line is checked before anything is scored or written
    for _ in read_lines(args.input, args.benchmark, split, args.on_bad_line, skipped):
        pass
    for exc in skipped:
        print(f"{prog}: warning: {args.input}: skipped {exc}", file=sys.stderr)
    output = args.output or default_output(args.input)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    pending: deque = deque()  # (line, Sample) of the lines handed to the scorer, not yet written

    def pairs():
        for _, record, response, sample in read_lines(args.input, args.benchmark, split, "skip"):
            pending.append((record, sample))  # the same lines as above, bad ones left out
            yield response, sample

    summary_rows = []
    with atomic_write(output) as out:
        for result in score_samples(pairs(), verifier=args.verifier, mode=args.mode, timeout_s=args.timeout,
                                    num_workers=args.workers):
            record, sample = pending.popleft()
            fields = result_fields(result)
            out.write(json.dumps(scored_record(record, fields), ensure_ascii=False) + "\n")
            summary_rows.append({"score": fields["score"], "parse_failure": fields["parse_failure"],
                                 "timeout": fields["timeout"], "error": "error" in fields,
                                 "categories": categories_of(sample, keys)})
    name = args.benchmark or os.path.basename(args.input)
    print(summary_text(name, args.mode, summary_rows, keys, n_boot=args.bootstrap, seed=args.seed), end="")
    print(f"{prog}: scored {len(summary_rows)} lines with {args.verifier} ({args.mode})"
          + (f", skipped {len(skipped)} bad lines" if skipped else "") + f" -> {output}", file=sys.stderr)
    return 0


def summary_text(name: str, mode: str, rows: list[dict], keys: list[str], *, n_boot: int, seed: int) -> str:
    """Accuracy with its bootstrap interval and the failure counts, then a table per category."""
    records = [{"score": float(r["score"]), "best": float(r["score"]), "responses": [""],
                "parse_failures": int(r["parse_failure"]), "timeouts": int(r["timeout"]),
                "verifier_errors": int(r["error"]), "truncated": 0, "format": None,
                "categories": r["categories"], "error": None} for r in rows]
    s = summarize(records, categories=keys, k=1, n_boot=n_boot, seed=seed, name=name)
    lines = [f"{name} ({mode} rule): accuracy {pct(s['accuracy'])} {ci_text(s['ci95'])} over {s['n']} "
             f"predictions; parse failures {s['parse_failures']}, timeouts {s['timeouts']}, "
             f"verifier errors {s['verifier_errors']}"]
    for key, values in s["categories"].items():
        if values:
            header, table_rows = category_rows({"k": 1, "categories": s["categories"]}, key)
            lines.append("")
            lines.extend("  " + line for line in _table(header, table_rows, markdown=False))
    return "\n".join(lines) + "\n"
