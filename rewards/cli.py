"""`mm-gpg score`: score a JSONL file of model outputs with the verifiers' rules.

    mm-gpg score --verifier vqa|relaxed|mathvista|mmmu|scienceqa|math|...|auto \\
                 --input in.jsonl --output out.jsonl [--mode official|lenient]

Each input line holds a `response` and the benchmark record's own fields (see
`rewards.records`). Each output line is the input record plus `score` (0..1), `components`,
`verifier`, `extraction` (the rule that found the answer), `parse_failure` and `timeout` (and
`error` when the verifier raised). The record's own fields are never overwritten, `score`
excepted: a score field whose name the record already uses (MathVista's own `extraction`, the
GPT step's answer) is written as `scoring_<name>` instead. The default mode is `official`, so
numbers compare with published ones. A malformed line stops the run with a one-line error
naming the line number and field; the output is written to a temporary file and renamed at
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
    return p


def read_jsonl(path: str):
    """Yield (line_no, record) for every non-blank line of a JSONL file; RecordError naming the
    line when it is not valid JSON or not a JSON object."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(line_no, "<json>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise RecordError(line_no, "<record>", f"expected a JSON object, got {type(record).__name__}")
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


def _read(path: str, verifier: str):
    """Yield (line_no, record, response, sample) for every non-blank line; RecordError on a bad one."""
    for line_no, record in read_jsonl(path):
        response, sample = record_to_sample(record, line_no, verifier)
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
    try:  # validate every line before any scoring
        n_lines = sum(1 for _ in _read(args.input, name))
    except RecordError as exc:
        print(f"mm-gpg score: {args.input}: {exc}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mm-gpg score: {args.input}: {exc}", file=sys.stderr)
        return 1

    from .scorer import build_scorer
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mm-gpg-score-", suffix=".jsonl.tmp", dir=out_dir)
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

            for item in _read(args.input, name):
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
          f"errors {totals['errors']} -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
