"""The one record type every data source is turned into.

`Sample` is the contract between the dataset adapters, the prompt builder, the verifiers and the
eval suite (see DESIGN.md, "The contracts between parts"). Images stay lazy: an entry of
`images` is a PIL image, a path, or raw bytes, and is decoded only by `load_image`.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Union

from PIL import Image

ImageRef = Union["Image.Image", str, os.PathLike, bytes]

ANSWER_TYPES = ("multiple_choice", "integer", "float", "math", "text", "vqa", "list", "count")


class BadRecord(ValueError):
    """A source record that cannot become a Sample; the message names source, record and field."""

    def __init__(self, source: str, record_id: Any, field_name: str, expected: str):
        self.source, self.record_id, self.field_name = source, record_id, field_name
        super().__init__(f"{source}: record {record_id!r}: field {field_name!r}: {expected}")


@dataclass
class Sample:
    """One image(s) + question problem with a checkable gold answer."""

    id: str
    """Unique within its source; train/held-out splits are made by id."""
    images: list = field(default_factory=list)
    """PIL images, paths or encoded bytes, decoded lazily by `load_image`."""
    question: str = ""
    """The question text as the source gives it (may hold `<image N>` markers)."""
    answer: Any = None
    """The gold answer as the source gives it (a letter, option text, number, list of labels...)."""
    answer_type: str = "text"
    """One of ANSWER_TYPES; routes the sample to its verifier."""
    choices: list | None = None
    """Option texts for multiple choice, in order (A, B, ...), else None."""
    task: str = ""
    """The source or synthetic task name (e.g. `count_shapes`, `mathvista`)."""
    meta: dict = field(default_factory=dict)
    """Free-form extras: category, precision, unit, hint, difficulty, all gold labels..."""

    def __post_init__(self):
        if self.answer_type not in ANSWER_TYPES:
            raise BadRecord(self.task or "sample", self.id, "answer_type",
                            f"expected one of {list(ANSWER_TYPES)}, got {self.answer_type!r}")


def load_image(ref: ImageRef, *, where: str = "image") -> Image.Image:
    """Decode one image reference to an RGB PIL image.

    Raises ValueError naming `where` (e.g. "geometry3k record 17 field images[0]") when the file is
    missing, unreadable or empty, so that a bad image never surfaces as a stack trace deep in a
    processor.
    """
    try:
        if isinstance(ref, Image.Image):
            image = ref
        elif isinstance(ref, (bytes, bytearray)):
            image = Image.open(io.BytesIO(ref))
        elif isinstance(ref, dict) and ("bytes" in ref or "path" in ref):
            # The hub's `Image` feature stores {"bytes": ..., "path": ...}.
            return load_image(ref.get("bytes") or ref.get("path"), where=where)
        else:
            image = Image.open(os.fspath(ref))
        image.load()
    except Exception as exc:  # PIL raises several unrelated types for bad files
        raise ValueError(f"{where}: cannot read image: {exc}") from None
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{where}: image has zero size")
    return image.convert("RGB")
