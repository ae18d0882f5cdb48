"""Geometry3K as `hiyouga/geometry3k` publishes it.

Hub schema: `images` (list of Image), `problem` (str, starts with an `<image>` placeholder),
`answer` (str: the value, e.g. "3" or "2\\sqrt{3}"), `id` (int64), `choices` (list of str),
`ground_truth` (str). Default: an open `math` problem whose gold is the value, as EasyR1 trains
it; the four choices and the gold letter stay in `meta`. With `multiple_choice=True` the sample
is a `multiple_choice` one (choices shown, gold = letter).
"""
from __future__ import annotations

import re

from ..schema import Sample
from ._text import strip_bare_image_tokens
from .base import (Ctx, SourceDef, bad, define_source, get_str, get_str_list, image_ref, letter,
                   record_id)

NAME = "geometry3k"


def convert(rec: dict, ctx: Ctx) -> Sample:
    rid = record_id(rec, "id", ctx) if rec.get("id") is not None else ctx.default_id()
    raw_images = rec.get("images")
    if ctx.images_loaded:
        if not isinstance(raw_images, (list, tuple)) or not raw_images:
            raise bad(ctx, rid, "images", "expected a non-empty list of images")
        images = [image_ref(v, f"images[{i}]", ctx, rid) for i, v in enumerate(raw_images)]
    else:
        images = []
    question = strip_bare_image_tokens(get_str(rec, "problem", ctx, rid))
    answer = get_str(rec, "answer", ctx, rid).strip()
    choices = get_str_list(rec, "choices", ctx, rid, nonempty=False, optional=True) or []
    ground_truth = get_str(rec, "ground_truth", ctx, rid, optional=True)
    gold_letter = None
    if ground_truth and re.fullmatch(r"[A-Z]", ground_truth.strip()) and \
            ord(ground_truth.strip()) - ord("A") < len(choices):
        gold_letter = ground_truth.strip()
    elif answer in [c.strip() for c in choices]:
        gold_letter = letter([c.strip() for c in choices].index(answer))
    meta = {"choices": choices, "answer_letter": gold_letter, "ground_truth": ground_truth,
            "metric": "math"}
    if ctx.options["multiple_choice"]:
        if not choices or gold_letter is None:
            raise bad(ctx, rid, "choices", "expected choices containing the answer (multiple_choice=True)")
        return Sample(id=rid, images=images, question=question, answer=gold_letter,
                      answer_type="multiple_choice", choices=choices, task=NAME,
                      meta={**meta, "answer_text": answer, "metric": "multiple_choice"})
    return Sample(id=rid, images=images, question=question, answer=answer, answer_type="math",
                  choices=None, task=NAME, meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id="hiyouga/geometry3k", split="train",
    image_columns=("images",), options={"multiple_choice": False}, doc=__doc__,
    required_columns=(("problem",), ("answer",))))
