"""Hostile input files for `mm-gpg score` and its alias `mm-gpg eval score` (issue 16): invalid
UTF-8, a lone surrogate escape and 100k-deep nesting are one error line naming the line, exit
status 2 (or, with `--on-bad-line skip`, skipped lines with a warning each); nothing scored is
lost; the output gets the usual permissions."""
from __future__ import annotations

import json
import os
import stat

import pytest

from eval.cli import main as eval_main
from eval.score import main as score

GOOD = json.dumps({"response": "<answer>9</answer>", "answer": "9", "answer_type": "integer"}).encode()
BAD_LINES = {
    "utf8": (b'{"response": "caf\xe9", "answer": "9", "answer_type": "integer"}', "not valid UTF-8"),
    "surrogate": (b'{"response": "x", "answer": "9", "answer_type": "integer", "meta": {"note": "\\ud800"}}',
                  "field 'meta.note': holds a lone surrogate"),
    "nesting": (b'{"response": "x", "answer": "9", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                "nested deeper than"),
}


def _write(tmp_path, *lines: bytes):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
@pytest.mark.parametrize("command", ["score", "eval score"])
def test_a_bad_line_is_one_error_naming_it(tmp_path, capsys, kind, command):
    bad, message = BAD_LINES[kind]
    src, dst = _write(tmp_path, GOOD, bad, GOOD), tmp_path / "out.jsonl"
    args = [src, "-o", str(dst), "--workers", "0"]
    rc = score(args) if command == "score" else eval_main(["score", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err[-500:]  # bad input: exit status 2
    assert err.startswith(f"mm-gpg {command}: error: {src}: ")
    assert "line 2" in err and message in err, err
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mm-gpg")]


@pytest.mark.parametrize("command", ["score", "eval score"])
def test_skip_leaves_bad_lines_out_with_a_warning_each(tmp_path, capsys, command):
    lines = [GOOD, BAD_LINES["utf8"][0], GOOD, BAD_LINES["surrogate"][0], BAD_LINES["nesting"][0],
             b'{"response": "x"}', GOOD]
    src, dst = _write(tmp_path, *lines), tmp_path / "out.jsonl"
    args = [src, "-o", str(dst), "--workers", "0", "--on-bad-line", "skip", "--bootstrap", "10"]
    rc = score(args) if command == "score" else eval_main(["score", *args])
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert [w.split("skipped line ")[1].split(":")[0] for w in warnings] == ["2", "4", "5", "6"], err
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(r["score"] == 1.0 for r in rows)


def test_the_output_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        src, dst = _write(tmp_path, GOOD), tmp_path / "out.jsonl"
        assert score([src, "-o", str(dst), "--workers", "0"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o644
