"""The project's one way to write a file so that no reader ever sees it half-written.

`atomic_write(path)` yields a file in the destination's folder; on a clean exit the data is
flushed, fsynced and renamed over `path` (one rename: readers see the old file or the new one);
on an error the temporary file is removed and `path` is untouched. The file gets the mode a plain
`open` would (0666 less the umask) rather than mkstemp's private 0600. It lives in data_prep, the
bottom layer, so that every package (rewards, eval, the trainer) can use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing (text in UTF-8, or bytes) and rename it
    to `path` when the block ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, binary=True) as f:
        f.write(data)


def write_json_atomic(path: str | os.PathLike, data, **dumps_options) -> None:
    """`data` as JSON (indent 1, UTF-8 kept) plus a final newline; `dumps_options` override."""
    write_text_atomic(path, json.dumps(data, **{"indent": 1, "ensure_ascii": False, **dumps_options}) + "\n")
