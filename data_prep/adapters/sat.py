"""SAT, Spatial Aptitude Training (`array/SAT`): the training set of VisualThinker-R1-Zero's
SAT -> CV-Bench recipe.

Hub schema (flat files `SAT_train.parquet`, `SAT_val.parquet`, `SAT_test.parquet`,
`SAT_static.parquet`): `image_bytes` (a list of encoded images: raw bytes in the parquet, an
Image list where the card declares one), `question` (str), `answers` (list of str, the options),
`question_type` (str), `correct_answer` (str, the text of the right option). No id column: ids
are `sat-<split>-<row>`. A local copy is best given as the file itself
(`path: /data/SAT/SAT_train.parquet`), since the folder's file names put the split after `SAT_`.

`Sample.answer` is the gold *letter* and `choices` the options, so the multiple-choice verifier
accepts the letter, `(B)` or the option's text (VisualThinker's reward compares the text).
Options:
- `max_images` (default 1): records with more images are left out, as VisualThinker's data
  preparation leaves out every multi-image question; None keeps them all. The count is read
  while images are checked, so with `check_images=False` every record is kept.
- `shuffle_choices` (default True): the options are put in an order drawn from the record's id
  (the same every run), as VisualThinker shuffles them, so that the gold's position carries no
  signal; False keeps the source's order.
"""
from __future__ import annotations

import hashlib
import random

from ..schema import Sample
from .base import Ctx, SourceDef, bad, define_source, get_str, get_str_list, image_ref, letter, record_id

NAME = "sat"


def _check_options(options: dict) -> dict:
    limit = options["max_images"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"data source {NAME!r}: max_images must be a positive integer or None, got {limit!r}")
    if not isinstance(options["shuffle_choices"], bool):
        raise ValueError(f"data source {NAME!r}: shuffle_choices must be true or false, "
                         f"got {options['shuffle_choices']!r}")
    return options


def _choice_order(rid: str, n: int) -> list[int]:
    """A permutation of range(n) fixed by the record id (sha256, so it does not vary per run)."""
    order = list(range(n))
    random.Random(int.from_bytes(hashlib.sha256(f"sat|{rid}".encode()).digest()[:8], "big")).shuffle(order)
    return order


def convert(rec: dict, ctx: Ctx) -> Sample | None:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    question = get_str(rec, "question", ctx, rid)
    options = get_str_list(rec, "answers", ctx, rid)
    if len(options) < 2:
        raise bad(ctx, rid, "answers", f"expected at least 2 options, got {len(options)}")
    gold_text = get_str(rec, "correct_answer", ctx, rid)
    stripped = [o.strip() for o in options]
    if gold_text.strip() not in stripped:
        raise bad(ctx, rid, "correct_answer", f"expected one of the options {options!r}, got {gold_text!r}")
    raw_images = rec.get("image_bytes")
    if ctx.images_loaded:
        if not isinstance(raw_images, (list, tuple)) or not raw_images:
            raise bad(ctx, rid, "image_bytes", "expected a non-empty list of images")
        limit = ctx.options["max_images"]
        # Decided while the records are checked (the scan); a table's later re-reads of a kept
        # record (check_images=False) must not drop it.
        if ctx.check_images and limit is not None and len(raw_images) > limit:
            return None  # left out on purpose: more images than the recipe trains on
        images = [image_ref(value, f"image_bytes[{i}]", ctx, rid) for i, value in enumerate(raw_images)]
    else:
        images = []
    order = _choice_order(rid, len(options)) if ctx.options["shuffle_choices"] else list(range(len(options)))
    choices = [options[i] for i in order]
    gold = [stripped[i] for i in order].index(gold_text.strip())
    question_type = get_str(rec, "question_type", ctx, rid, optional=True)
    meta = {"answer_text": gold_text, "metric": "multiple_choice"}
    if question_type:
        meta["question_type"] = question_type
    return Sample(id=rid, images=images, question=question.strip(), answer=letter(gold),
                  answer_type="multiple_choice", choices=choices, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="array/SAT", split="train", image_columns=("image_bytes",),
    options={"max_images": 1, "shuffle_choices": True}, check_options=_check_options, doc=__doc__,
    required_columns=(("question",), ("answers",), ("correct_answer",), ("image_bytes",))))
