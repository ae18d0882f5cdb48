"""User errors versus bugs, for every command line of the project.

A user error is input a user can fix: a config key, a file, a record, a suite, a name. The code
raises one on purpose, with a message naming the file, record or key and what was expected, and
the command lines print it as one line, `mm-gpg: error: ...`, with exit status 2. They are the
exception types in `USER_ERRORS`: `UserError` and its subclasses (the project's own error classes
are ValueErrors, as this one is), a ValueError raised by a check, and FileNotFoundError,
NotADirectoryError, IsADirectoryError or PermissionError for a path the user named.

Anything else is a bug and keeps its traceback (exit status 1): in particular a bare KeyError
(a lookup the code got wrong; an unknown name a user typed is `data_prep.registry.UnknownName`)
and any other OSError (a full disk, a failing device: no message of ours says what to fix).

MM_GPG_DEBUG: set it (to anything but "" or "0") to have the command lines re-raise user errors
too, so that their traceback shows where in the code the check fired.

It lives in data_prep, the bottom layer, so that every package can raise these.
"""
from __future__ import annotations

import os
import sys


class UserError(ValueError):
    """Bad input a user can fix; printed as one line by the command lines (exit status 2)."""


class DataError(UserError):
    """A data file or record that is not what was expected (the message names it)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError)
"""What the command lines print as one line with exit status 2; everything else keeps its traceback."""


def debug_enabled() -> bool:
    """Whether MM_GPG_DEBUG asks for user errors' tracebacks too."""
    return os.environ.get("MM_GPG_DEBUG", "") not in ("", "0")


def error_line(exc: BaseException) -> str:
    """The error's message on one line (white space folded)."""
    return " ".join(str(exc).split())


def report_user_error(prog: str, exc: BaseException) -> int:
    """Print a user error as the one line `PROG: error: MESSAGE` on stderr and return exit status
    2; with MM_GPG_DEBUG set, re-raise it instead, so that its traceback shows."""
    if debug_enabled():
        raise exc
    print(f"{prog}: error: {error_line(exc) or type(exc).__name__}", file=sys.stderr)
    return 2
