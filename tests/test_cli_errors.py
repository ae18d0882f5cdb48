"""The command lines tell user errors from bugs (data_prep.errors): a user error is one line and
exit status 2; any other exception keeps its traceback (exit status 1), a bare KeyError or OSError
from inside the code included; MM_GPG_DEBUG shows a user error's traceback too.

The bugs are put in by replacing one subcommand of a real `mm-gpg` process with a function that
fails the way a bug does (a lookup of a key that is not there, a write to a full disk), so that
what is checked is the command line's own handling, end to end."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from data_prep.errors import USER_ERRORS, DataError, UserError, error_line
from data_prep.registry import SOURCES, UnknownName


def _mm_gpg(args: list[str], *, replace: str | None = None, debug: bool = False) -> tuple[int, str]:
    """Run `mm-gpg ARGS` in a fresh Python; `replace` is the body of a function put in place of
    mm_gpg.cli.view_command (the `view` subcommand). Returns (exit status, stderr)."""
    program = "import sys\nimport mm_gpg.cli as cli\n"
    if replace is not None:
        program += f"def broken(argv):\n    {replace}\ncli.view_command = broken\n"
    program += f"sys.exit(cli.main({args!r}))\n"
    env = {k: v for k, v in os.environ.items() if k != "MM_GPG_DEBUG"}
    if debug:
        env["MM_GPG_DEBUG"] = "1"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120)
    return done.returncode, done.stderr


@pytest.mark.parametrize("bug, error", [
    ('return {"step": 1}["reward/mean"]', "KeyError: 'reward/mean'"),
    ('open("/dev/full", "w").write("x" * 65536)', "OSError: [Errno 28] No space left on device"),
])
def test_an_internal_error_keeps_its_traceback(bug, error):
    if "/dev/full" in bug and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    code, err = _mm_gpg(["view", "somewhere"], replace=bug)
    assert code == 1, err
    assert err.startswith("Traceback (most recent call last):") and "in broken" in err, err
    assert err.rstrip().splitlines()[-1] == error, err
    assert "mm-gpg: error:" not in err


def test_a_user_error_is_one_line_and_its_traceback_is_behind_mm_gpg_debug():
    code, err = _mm_gpg(["train", "--check", "algorithm.name=gpgg"])
    assert code == 2, err
    assert err.splitlines() == ["mm-gpg: error: config key 'algorithm.name': unknown algorithm 'gpgg' "
                                "(did you mean 'gpg'?), supported: ['dr_grpo', 'gpg', 'grpo', 'reinforce']"]
    code, err = _mm_gpg(["train", "--check", "algorithm.name=gpgg"], debug=True)
    assert code == 1 and "Traceback" in err and "ConfigError: config key 'algorithm.name'" in err, err


def test_a_user_error_raised_by_a_subcommand_and_a_missing_named_file_are_one_line():
    code, err = _mm_gpg(["view", "x"], replace="from data_prep.errors import DataError; "
                                               "raise DataError('run.json: line 3:\\n expected a record')")
    assert (code, err) == (2, "mm-gpg: error: run.json: line 3: expected a record\n")
    code, err = _mm_gpg(["eval", "compare", "/nonexistent/a.json", "/nonexistent/b.json"])
    assert (code, err) == (2, "mm-gpg eval compare: error: no such report: /nonexistent/a.json\n")
    code, err = _mm_gpg(["eval", "compare", "/nonexistent/a.json", "/nonexistent/b.json"], debug=True)
    assert code == 1 and err.startswith("Traceback") and "no such report: /nonexistent/a.json" in err, err


def test_what_counts_as_a_user_error():
    with pytest.raises(UnknownName) as caught:
        SOURCES.get("synthetik")
    assert isinstance(caught.value, USER_ERRORS) and isinstance(caught.value, KeyError)
    # str() of a KeyError is its repr ("'unknown ...'"); the one line has no quotes around it.
    assert error_line(caught.value).startswith("unknown data source 'synthetik' (did you mean 'synthetic'?)")
    assert issubclass(DataError, UserError) and issubclass(UserError, ValueError)
    for bug in (KeyError("x"), OSError(28, "No space left on device"), RuntimeError("x"), TypeError("x")):
        assert not isinstance(bug, USER_ERRORS), bug
    for user in (FileNotFoundError(2, "No such file", "a.yaml"), PermissionError(13, "denied", "out"),
                 NotADirectoryError(20, "Not a directory", "x/y"), IsADirectoryError(21, "Is a directory", "d")):
        assert isinstance(user, USER_ERRORS), user
    assert error_line(ValueError("a\n  b\tc")) == "a b c"
