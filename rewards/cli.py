"""`mm-gpg score`: score a JSONL file of model outputs with the verifiers' rules.

    mm-gpg score --verifier vqa|relaxed|mathvista|mmmu|scienceqa|math|...|auto \\
                 --input in.jsonl --output out.jsonl [--mode official|lenient]

Each input line holds a `response` and the benchmark record's own fields (see
`rewards.records`). Each output line is the input record plus `score` (0..1), `components`,
`verifier`, `extraction` (the rule that found the answer), `parse_failure` and `timeout` (and
`error` when the verifier raised). The record's own fields are never overwritten, `score`
excepted: a score field whose name the record already uses (MathVista's own `extraction`, the
GPT step's answer) is written as `scoring_<name>` instead. The default mode is `official`, so
numbers compare with published ones. A malformed line (invalid UTF-8 or JSON, nesting deeper
than 64 levels, a lone surrogate escape, a missing or wrong field) stops the run with a one-line
error naming the line number and field, or with `--on-bad-line skip` is left out with a
warning. The output is written to a temporary file (with the usual permissions) and renamed at
the end, so a partial file never looks complete.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

from .records import RecordError, record_to_sample
from .registry import MODES, accepts_mode, get_verifier, verifier_names

BATCH = 512


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm-gpg score", description=__doc__.split("\n\n")[0])
    p.add_argument("--verifier", required=True,
                   help="a registered verifier name, or 'auto' to route each line by its fields")
    p.add_argument("--input", required=True, help="input JSONL: response + benchmark fields")
    p.add_argument("--output", required=True, help="output JSONL (written atomically)")
    p.add_argument("--mode", choices=MODES, default="official",
                   help="benchmark rule mode (default: official)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per verifier call")
    p.add_argument("--workers", type=int, default=2, help="scoring processes (0: in-process)")
    p.add_argument("--on-bad-line", choices=ON_BAD_LINE, default="error",
                   help="a malformed line (invalid UTF-8 or JSON, too deeply nested, a lone surrogate, a "
                        "missing field): stop with an error naming it (default), or skip it with a warning")
    return p


MAX_DEPTH = 64
"""Deepest JSON nesting a scoring record may have (benchmark records nest two or three levels)."""

ON_BAD_LINE = ("error", "skip")


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
    """One JSONL line -> its record (None for a blank line); RecordError naming the line for
    invalid UTF-8, invalid JSON, nesting deeper than MAX_DEPTH, a lone surrogate, or a value that
    is not a JSON object."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(line_no, "<utf-8>", f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(line_no, "<json>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise RecordError(line_no, "<json>", f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(record, dict):
        raise RecordError(line_no, "<record>", f"expected a JSON object, got {type(record).__name__}")
    if _depth(record) > MAX_DEPTH:
        raise RecordError(line_no, "<json>", f"nested deeper than {MAX_DEPTH} levels")
    bad = _surrogate_path(record)
    if bad is not None:
        raise RecordError(line_no, bad, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                                        "which UTF-8 cannot encode")
    return record


def read_jsonl(path: str, on_bad_line: str = "error", skipped: list | None = None):
    """Yield (line_no, record) for every non-blank line of a JSONL file. A bad line (see
    `parse_line`) raises RecordError naming it, or with on_bad_line="skip" is left out and its
    RecordError appended to `skipped`."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                record = parse_line(raw, line_no)
            except RecordError as exc:
                if on_bad_line != "skip":
                    raise
                if skipped is not None:
                    skipped.append(exc)
                continue
            if record is not None:
                yield line_no, record


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


def _read(path: str, verifier: str, on_bad_line: str = "error", skipped: list | None = None):
    """Yield (line_no, record, response, sample) for every non-blank line; RecordError on a bad one
    (or, with on_bad_line="skip", the line left out and its error appended to `skipped`)."""
    for line_no, record in read_jsonl(path, on_bad_line, skipped):
        try:
            response, sample = record_to_sample(record, line_no, verifier)
        except RecordError as exc:
            if on_bad_line != "skip":
                raise
            if skipped is not None:
                skipped.append(exc)
            continue
        yield line_no, record, response, sample


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        print(f"mm-gpg score: --timeout: expected a finite number of seconds > 0, got {args.timeout!r}",
              file=sys.stderr)
        return 2
    if args.workers < 0:
        print(f"mm-gpg score: --workers: expected an integer >= 0, got {args.workers}", file=sys.stderr)
        return 2
    name = args.verifier
    if name != "auto":
        try:
            fn = get_verifier(name)
        except ValueError as exc:
            print(f"mm-gpg score: --verifier: {exc}; or 'auto'", file=sys.stderr)
            return 2
        spec = {"name": name, "component": "score"}
        if accepts_mode(fn):
            spec["mode"] = args.mode
    else:
        spec = {"name": "accuracy", "mode": args.mode, "component": "score"}
    if not os.path.isfile(args.input):
        print(f"mm-gpg score: --input: no such file {args.input!r}", file=sys.stderr)
        return 2
    skipped: list[RecordError] = []
    try:  # validate every line before any scoring
        n_lines = sum(1 for _ in _read(args.input, name, args.on_bad_line, skipped))
    except RecordError as exc:
        print(f"mm-gpg score: {args.input}: {exc}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mm-gpg score: {args.input}: {exc}", file=sys.stderr)
        return 1

    from .scorer import build_scorer
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    for exc in skipped:
        print(f"mm-gpg score: warning: {args.input}: skipped {exc}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(prefix=".mm-gpg-score-", suffix=".jsonl.tmp", dir=out_dir)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; the output gets the usual mode
    totals = {"score": 0.0, "parse_failures": 0, "timeouts": 0, "errors": 0}
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, \
                build_scorer([spec], timeout_s=args.timeout, num_workers=args.workers) as scorer:
            batch = []

            def flush():
                results = scorer.score([b[2] for b in batch], [b[3] for b in batch])
                for (_, record, _, _), res in zip(batch, results):
                    fields = dict(score=res.score,
                                  components={k: v for k, v in res.components.items() if k != "score"},
                                  verifier=res.info.get("verifiers", {}).get("score"),
                                  extraction=res.info.get("extraction"),
                                  parse_failure=res.info["parse_failure"], timeout=res.info["timeout"])
                    if res.info.get("error"):
                        fields["error"] = res.info["error"].get("score")
                    out.write(json.dumps(scored_record(record, fields), ensure_ascii=False) + "\n")
                    totals["score"] += res.score
                    totals["parse_failures"] += res.info["parse_failures"]
                    totals["timeouts"] += res.info["timeouts"]
                    totals["errors"] += res.info["errors"]
                batch.clear()

            for item in _read(args.input, name, args.on_bad_line):
                batch.append(item)
                if len(batch) >= BATCH:
                    flush()
            if batch:
                flush()
        os.replace(tmp, args.output)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, (RecordError, ValueError, RuntimeError)):
            print(f"mm-gpg score: {exc}", file=sys.stderr)
            return 1
        raise
    mean = totals["score"] / n_lines if n_lines else 0.0
    print(f"scored {n_lines} lines with {name} ({args.mode}): mean score {mean:.4f}, "
          f"parse failures {totals['parse_failures']}, timeouts {totals['timeouts']}, "
          f"errors {totals['errors']}" + (f", skipped lines {len(skipped)}" if skipped else "")
          + f" -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
