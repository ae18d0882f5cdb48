"""Per-step metrics to a JSONL file and TensorBoard (rank 0 only).

The logger owns its file's history across a resume: a checkpoint stores `position()` (the step and
how many records the file held up to it), and the resumed run's `cut_back(position)` parses the
file, keeps exactly those records and drops the ones the stopped run wrote after the checkpoint.
It works on records, not byte offsets, so a file appended to or edited since still splits on
whole lines, and a history that is missing or unreadable is an error (HistoryError) unless the
run says it may continue without it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from data_prep.errors import DataError, UserError
from data_prep.files import write_text_atomic


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file the runs write (metrics, rollouts, predictions). A bad line
    is an error naming it, except the last: a run still writing (or killed mid-line) leaves one."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise DataError(f"{path}:{number}: not a JSON line") from None
    return records


class HistoryError(UserError):
    """The metrics history a resumed run would continue is missing or damaged (a user error: the
    CLI prints it as one line)."""


class MetricsLogger:
    def __init__(self, output_dir: str | os.PathLike, enabled: bool, tensorboard: bool = True,
                 filename: str = "metrics.jsonl", wandb_run=None):
        self.enabled = enabled
        self._wandb = wandb_run
        """A W&B run that gets every record's numbers too (mm_gpg.wandb_log), or None."""
        self.path = Path(output_dir) / filename
        self._file = None
        self._tb = None
        self._records = 0
        """Records in the file (this run's and, after `cut_back`, the resumed history)."""
        self._last_step, self._at_last_step = 0, 0
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def _count(self, step: int) -> None:
        self._records += 1
        if step != self._last_step:
            self._last_step, self._at_last_step = step, 0
        self._at_last_step += 1

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in metrics.items()}}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        self._count(step)
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))
                             and not isinstance(v, bool) and math.isfinite(v)}, step=step)

    def position(self, step: int) -> dict:
        """What a checkpoint of `step` records about the history: the records up to and including
        `step`, and how many of them belong to `step` itself (its training record, an evaluation)."""
        return {"step": step, "records": self._records,
                "at_step": self._at_last_step if self._last_step == step else 0}

    def reset(self) -> None:
        """Start the history over (a run that restarts from step 0)."""
        if not self.enabled:
            return
        self._file.close()
        self._file = open(self.path, "w", encoding="utf-8")
        self._records, self._last_step, self._at_last_step = 0, 0, 0

    def cut_back(self, position: dict, *, required: bool = True) -> str | None:
        """Keep the records a checkpoint at `position` had seen; drop later ones.

        Raises HistoryError naming the file (and line) when the history is missing, has an
        unreadable line, or holds fewer records than the checkpoint saw; with `required` False
        the run continues from what is readable and the returned text says what was dropped."""
        if not self.enabled:
            return None
        step, expected, at_step = int(position["step"]), int(position["records"]), int(position["at_step"])
        hint = "set train.resume_without_history: true to continue without it"
        problems, kept, seen_at_step = [], [], 0
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raw = None
            problems.append(f"{self.path}: unreadable ({exc.strerror or exc})")
        if raw is not None:
            lines = raw.split(b"\n")
            # The last piece is b"" when the file ends with a newline; otherwise a line cut by a
            # kill mid-write, after the checkpoint (every record up to it was flushed before the
            # checkpoint was written): dropped.
            lines.pop()
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line.decode("utf-8"))
                    record_step = record["step"]
                    if not isinstance(record, dict) or not isinstance(record_step, int):
                        raise TypeError("no integer step")
                except (ValueError, KeyError, TypeError) as exc:
                    problems.append(f"{self.path}:{number}: not a metrics record ({type(exc).__name__})")
                    break
                if record_step < step or (record_step == step and seen_at_step < at_step):
                    seen_at_step += record_step == step
                    kept.append(line)
            if not problems and len(kept) < expected:
                problems.append(f"{self.path}: {len(kept)} records up to step {step}, the checkpoint saw "
                                f"{expected} (the file was deleted, replaced or edited)")
        if problems and required:
            raise HistoryError(f"resume: metrics history damaged: {problems[0]}; {hint}")
        self._file.close()
        write_text_atomic(self.path, b"".join(line + b"\n" for line in kept).decode("utf-8"))
        self._file = open(self.path, "a", encoding="utf-8")
        self._records, self._last_step, self._at_last_step = len(kept), step, seen_at_step
        return f"{problems[0]}; continuing with the {len(kept)} readable records" if problems else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
