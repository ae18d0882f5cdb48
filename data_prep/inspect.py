"""`mm-gpg data inspect SOURCE`: print a few samples of a data source and write a contact sheet.

    mm-gpg data inspect geometry3k --path data/geometry3k --n 16 --out sheet.png
    mm-gpg data inspect mathverse --option versions='["Vision Only"]'
    mm-gpg data inspect synthetic --option tasks='["count_shapes"]'

People would rather look than read: the sheet shows each sample's image(s), question and gold.
`main(argv)` returns 0 on success; on a user error (data_prep.errors) it prints one line to stderr
and returns 2; any other error is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import inspect as _pyinspect
import itertools
import json
import sys
import textwrap
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import USER_ERRORS, UserError, report_user_error
from .registry import get_source
from .schema import Sample, load_image

PROG = "mm-gpg data inspect"
TILE_W, THUMB_H, TEXT_LINES, LINE_H, PAD = 300, 180, 8, 15, 6


class _UsageError(UserError):
    """A bad command line (an option, its value)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message + exit
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Print samples of a data source and write a contact sheet PNG.")
    p.add_argument("source", help="registered source name (geometry3k, mathvista, synthetic, ...)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--out", default=None, help="contact sheet path (default <source>_sheet.png)")
    p.add_argument("--no-sheet", action="store_true", help="print only, write no contact sheet")
    p.add_argument("--path", default=None, help="hub id, local file or local folder")
    p.add_argument("--split", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--image-dir", default=None, help="where relative image paths are looked for after the data file's folder")
    p.add_argument("--on-bad-record", choices=("error", "skip"), default=None)
    p.add_argument("--streaming", action="store_true", help="read the source as a stream")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a source-specific option; VALUE is read as JSON when it parses, else as a string")
    return p


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise _UsageError(f"--option expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _accepts(fn, name: str) -> bool:
    try:
        params = _pyinspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def load_samples(args) -> tuple[list[Sample], Any]:
    fn = get_source(args.source)
    kwargs: dict[str, Any] = {}
    for key in ("path", "split", "config", "image_dir", "on_bad_record"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    if args.streaming:
        kwargs["streaming"] = True
    kwargs.update(dict(_parse_option(o) for o in args.option))
    for key in kwargs:
        if not _accepts(fn, key):
            raise _UsageError(f"source {args.source!r} takes no option {key!r}")
    if _accepts(fn, "limit"):
        kwargs["limit"] = args.n
    source = fn(**kwargs)
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        samples = [source[i] for i in range(min(args.n, len(source)))]
    else:
        samples = list(itertools.islice(iter(source), args.n))
    return samples, source


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", " / ")
    return text if len(text) <= width else text[:width - 3] + "..."


def _decode(sample: Sample) -> tuple[list[Image.Image], list[str]]:
    images, errors = [], []
    for k, ref in enumerate(sample.images):
        try:
            images.append(load_image(ref, where=f"{sample.task} record {sample.id!r} image {k}"))
        except ValueError as exc:
            errors.append(str(exc))
    return images, errors


def describe(i: int, sample: Sample, images: list[Image.Image], errors: list[str]) -> str:
    sizes = ", ".join(f"{im.width}x{im.height}" for im in images) or "none"
    lines = [f"[{i}] {sample.task} id={sample.id}  type={sample.answer_type}  images={len(sample.images)} ({sizes})",
             f"    Q: {_short(sample.question, 300)}"]
    if sample.choices:
        lines.append("    choices: " + _short("; ".join(f"{chr(65 + k)}. {c}" for k, c in enumerate(sample.choices)), 300))
    lines.append(f"    gold: {_short(sample.answer, 120)}")
    meta = {k: v for k, v in sample.meta.items() if v not in (None, "", [], {})}
    if meta:
        lines.append("    meta: " + _short(", ".join(f"{k}={_short(v, 40)}" for k, v in meta.items()), 300))
    lines.extend(f"    image error: {e}" for e in errors)
    return "\n".join(lines)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def contact_sheet(samples: list[Sample], decoded: list[list[Image.Image]], columns: int = 4) -> Image.Image:
    """One tile per sample: its image(s) side by side, then id, question and gold."""
    columns = max(1, min(columns, len(samples)))
    rows = (len(samples) + columns - 1) // columns
    tile_h = THUMB_H + TEXT_LINES * LINE_H + 3 * PAD
    sheet = Image.new("RGB", (columns * TILE_W, max(1, rows) * tile_h), (255, 255, 255))
    draw, font = ImageDraw.Draw(sheet), _font()
    chars = (TILE_W - 2 * PAD) // 6
    for n, (sample, images) in enumerate(zip(samples, decoded)):
        x0, y0 = (n % columns) * TILE_W, (n // columns) * tile_h
        draw.rectangle((x0, y0, x0 + TILE_W - 1, y0 + tile_h - 1), outline=(200, 200, 200))
        shown = images[:3]
        if shown:
            slot = (TILE_W - 2 * PAD) // len(shown)
            for k, image in enumerate(shown):
                scale = min((slot - 4) / image.width, THUMB_H / image.height)
                size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
                thumb = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
                sheet.paste(thumb, (x0 + PAD + k * slot + (slot - thumb.width) // 2, y0 + PAD + (THUMB_H - thumb.height) // 2))
        else:
            draw.text((x0 + PAD, y0 + PAD + THUMB_H // 2), "(no image)", fill=(150, 150, 150), font=font)
        lines = [f"{sample.task} {sample.id}"[:chars]]
        lines += textwrap.wrap("Q: " + sample.question.replace("\n", " "), chars)[:TEXT_LINES - 3]
        if sample.choices:
            lines.append(("choices: " + " ".join(f"{chr(65 + k)}.{c}" for k, c in enumerate(sample.choices)))[:chars])
        lines.append(f"gold: {_short(sample.answer, chars - 6)}  [{sample.answer_type}]"[:chars])
        y = y0 + THUMB_H + 2 * PAD
        for k, line in enumerate(lines[:TEXT_LINES]):
            color = (170, 20, 20) if line.startswith("gold:") else (0, 0, 0)
            draw.text((x0 + PAD, y + k * LINE_H), line, fill=color, font=font)
    return sheet


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.n < 1:
            raise _UsageError(f"--n must be at least 1, got {args.n}")
        samples, source = load_samples(args)
        if not samples:
            from .adapters.base import skipped_summary
            raise ValueError(f"source {args.source!r} yielded no samples{skipped_summary(source)}")
        decoded = []
        for i, sample in enumerate(samples):
            images, errors = _decode(sample)
            decoded.append(images)
            print(describe(i, sample, images, errors))
        skipped = getattr(source, "skipped", 0)
        if skipped:
            print(f"skipped {skipped} malformed record(s); first: {getattr(source, 'bad_records', ['?'])[0]}")
        if not args.no_sheet:
            out = args.out or f"{args.source}_sheet.png"
            contact_sheet(samples, decoded).save(out)
            print(f"contact sheet: {out} ({len(samples)} samples)")
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:  # one line; anything else is a bug and keeps its traceback
        return report_user_error(PROG, exc)


if __name__ == "__main__":
    sys.exit(main())
