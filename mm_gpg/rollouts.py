"""Rollouts on disk: what the policy actually answered, next to the image it saw.

Every `logging.rollouts_every` steps (and at step 1) each sampled group becomes one JSON line of
`rollouts.jsonl`: the prompt, the question, the gold, a reference to the image's thumbnail, every
completion with its reward, reward components, advantage and finish reason, the group's validity,
the draw it came from, whether it entered the batch, and the step's alpha. Held-out evaluations
write one line per problem (`"kind": "eval"`). The file is a MetricsLogger file: appended and
flushed line by line, positioned in every checkpoint and cut back on resume exactly like
`metrics.jsonl`, so a resumed run's rollouts equal the uninterrupted run's.

Thumbnails are written once per image under `images/` by rank 0 (every rank's travel with its
records: other machines' disks are not the run folder), named by a hash of their PNG bytes, so
that an image drawn again is one file."""
from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path

from data_prep.files import write_bytes_atomic

from .metrics import MetricsLogger

ROLLOUTS_FILE = "rollouts.jsonl"
IMAGES_DIR = "images"


def rollout_step(step: int, every: int) -> bool:
    """Whether `step` writes its rollouts: every `every` steps and always the first (0: never)."""
    return every > 0 and (step == 1 or step % every == 0)


def parse_failure(result) -> bool:
    """Whether the accuracy verifier could not read an answer from the response (its details say
    so); such responses score 0 like wrong ones, and a viewer shows them apart."""
    details = ((getattr(result, "info", None) or {}).get("details") or {}).get("accuracy") or {}
    return bool(details.get("parse_failure")) if isinstance(details, dict) else False


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def thumbnail(image, thumbs: dict, max_px: int) -> str:
    """`image` (a PIL image) as a PNG thumbnail, put in `thumbs` (path -> bytes) for rank 0 to
    write (`write_thumbnails`: other ranks' disks may not be the run folder's); returns its path
    relative to the run folder."""
    img = image.convert("RGB")
    img.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    rel = f"{IMAGES_DIR}/{hashlib.sha1(data).hexdigest()[:16]}.png"
    thumbs[rel] = data
    return rel


def write_thumbnails(thumbs: dict, out_dir: Path) -> None:
    """Write the thumbnails the run folder does not have yet (named by content: never rewritten)."""
    for rel, data in thumbs.items():
        path = out_dir / rel
        if not path.exists():
            write_bytes_atomic(path, data)  # a kill leaves no half-written image under its final name


def sample_fields(prompt, thumbs: dict, max_px: int) -> dict:
    """What a record says about the problem: ids, the question, the gold, the image thumbnails."""
    s = prompt.sample
    return {"sample_id": str(s.id), "task": s.task, "question": s.question, "answer": _jsonable(s.answer),
            "answer_type": s.answer_type, "choices": _jsonable(s.choices), "prompt": prompt.text,
            "images": [thumbnail(im, thumbs, max_px) for im in prompt.images]}


def _jsonable(value):
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def group_record(group, advantages: list[float], *, in_batch: bool, index: int, thumbs: dict,
                 max_px: int) -> dict:
    """One training group as a JSON-ready record (without step and alpha, added by the caller)."""
    completions = []
    for i, c in enumerate(group.completions):
        completions.append({"text": c.text, "reward": _finite(float(group.rewards[i])),
                            "components": {n: _finite(v[i]) for n, v in group.components.items()},
                            "advantage": _finite(float(advantages[i])), "tokens": len(c.token_ids),
                            "finish_reason": c.finish_reason,
                            "parse_failure": bool(group.parse_failures[i]) if group.parse_failures else False})
    return {"kind": "train", "group": index, "draw": group.draw, "valid": group.valid, "in_batch": in_batch,
            **sample_fields(group.prompt, thumbs, max_px), "completions": completions}


def eval_record(prompt, completions, results, *, index: int, thumbs: dict, max_px: int) -> dict:
    """One held-out problem's answers (`results`: the scorer's RewardResults) as a record."""
    answers = [{"text": c.text, "reward": _finite(float(r.score)),
                "components": {n: _finite(v) for n, v in r.components.items()}, "tokens": len(c.token_ids),
                "finish_reason": c.finish_reason, "parse_failure": parse_failure(r)}
               for c, r in zip(completions, results)]
    return {"kind": "eval", "index": index, **sample_fields(prompt, thumbs, max_px), "completions": answers}


class RolloutLog(MetricsLogger):
    """`rollouts.jsonl`: a MetricsLogger file (same append, position and cut-back), no TensorBoard."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool):
        super().__init__(output_dir, enabled, tensorboard=False, filename=ROLLOUTS_FILE)
