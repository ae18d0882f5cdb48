"""`table`: your own data, from any parquet / JSON / JSON-lines / CSV table or image folder, read
through a column map.

The options name the table's columns; everything else (reading files, image look-up, bad-record
handling, streaming, held-out splits) is the loader every adapter shares (see `base`):

    load_source("table", path="data/train.jsonl", image_key="image", question_key="question",
                answer_key="answer", choices_key=None, answer_type="integer", image_dir="data/images")

- `image_key`: the column holding a record's image(s): one image, or a list of images (a
  multi-image record), or a list of column names, one image each. An image is a path (relative
  paths are looked for beside the data file, then under `image_dir`), encoded bytes, or the hub's
  `{"bytes", "path"}` dict; in a CSV a list may be written as a list literal (`["a.png", "b.png"]`).
  Default: the first of `image`, `images`, `file_name` the table has. `file_name` is the Hugging
  Face image-folder convention: a folder of images with a `metadata.jsonl` / `metadata.csv` that
  names each record's image in `file_name`, relative to itself.
- `question_key`, `answer_key`: the question text and the gold answer. A bare `<image>` in the
  question is dropped (the prompt builder places the images); `<image N>` markers place image N
  inside the text. A list-valued answer is a set of accepted answers (`meta["answers"]`; for
  `answer_type: list`, the items of the gold list).
- `choices_key`: the options of a multiple-choice question (a list, or in a CSV a list literal);
  a record whose cell is empty has none. The gold may be the option text, its letter (`B`,
  `(B)`), or its 0-based index as an integer; it is stored as the letter.
- `answer_type`: one of the schema's answer types (`ANSWER_TYPES`), the same for every record;
  any other value names a column that holds each record's answer type. Default:
  `multiple_choice` for a record with choices, else `text`.
- `id_key`: the id column; default the `id` column when the table has one, else
  `table-<split>-<row>`. Ids must be unique (held-out splits are made by id).
- `meta_keys`: columns copied into `Sample.meta` under their own names: `hint` and `unit` are shown
  in the prompt, `precision` / `rel_tol` / `ordered` are read by the verifiers.
- `task`: `Sample.task` (metrics are grouped by it). A task named after a benchmark
  (`chartqa_mine`) is scored by that benchmark's rule.

A column the map names but the table lacks is one error naming the file, the column and the
columns it has; a malformed record is a `BadRecord` naming its field (skipped and counted with
`on_bad_record: skip`).
"""
from __future__ import annotations

import json
import math

from ..registry import did_you_mean
from ..schema import ANSWER_TYPES, Sample
from ._text import MARKER, literal_list, strip_bare_image_tokens
from .base import Ctx, SourceDef, bad, define_source, get_str, image_ref, letter, record_id

NAME = "table"
AUTO_IMAGE_KEYS = ("image", "images", "file_name")
"""Image columns looked for, in this order, when `image_key` is not given."""
OPTIONS = {"image_key": None, "question_key": "question", "answer_key": "answer", "choices_key": None,
           "answer_type": None, "id_key": None, "meta_keys": [], "task": NAME}


def _check_name(options: dict, key: str, optional: bool) -> None:
    value = options[key]
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"table source: option {key} must be a column name (a non-empty string)"
                         f"{' or null' if optional else ''}, got {value!r}")


def check_options(options: dict) -> dict:
    """The column map's shape (names are strings, lists of names are lists); the columns
    themselves are checked against the data by `check_columns`."""
    options = dict(options)
    for key in ("question_key", "answer_key", "task"):
        _check_name(options, key, optional=False)
    for key in ("choices_key", "id_key", "answer_type"):
        _check_name(options, key, optional=True)
    image_key = options["image_key"]
    if isinstance(image_key, (list, tuple)):
        if not image_key or not all(isinstance(k, str) and k.strip() for k in image_key):
            raise ValueError(f"table source: option image_key must be a column name or a non-empty list "
                             f"of column names, got {image_key!r}")
        options["image_key"] = list(image_key)
    else:
        _check_name(options, "image_key", optional=True)
    meta_keys = options["meta_keys"]
    if isinstance(meta_keys, str) or not isinstance(meta_keys, (list, tuple)) \
            or not all(isinstance(k, str) and k.strip() for k in meta_keys):
        raise ValueError(f"table source: option meta_keys must be a list of column names, got {meta_keys!r}")
    options["meta_keys"] = list(meta_keys)
    return options


def _blank(value) -> bool:
    """An empty cell: null, white space, or the NaN a CSV reader puts in an empty numeric cell."""
    return value is None or (isinstance(value, str) and not value.strip()) \
        or (isinstance(value, float) and math.isnan(value))


def _image_columns(options: dict, columns) -> list[str] | None:
    """The image columns the map names (`image_key`, or the first of AUTO_IMAGE_KEYS present)."""
    key = options["image_key"]
    if key is None:
        found = next((k for k in AUTO_IMAGE_KEYS if k in columns), None)
        return None if found is None else [found]
    return list(key) if isinstance(key, list) else [key]


def check_columns(columns: list[str], options: dict) -> None:
    """One error for the first column the map names that the table lacks."""
    def missing(column: str, option: str) -> ValueError:
        return ValueError(f"missing column {column!r} (option {option}){did_you_mean(column, columns)}; "
                          f"the table has columns {sorted(columns)}")

    images = _image_columns(options, columns)
    if images is None:
        raise ValueError(f"no image column: none of {list(AUTO_IMAGE_KEYS)} is present; name it with "
                         f"option image_key; the table has columns {sorted(columns)}")
    for column in images:
        if column not in columns:
            raise missing(column, "image_key")
    for option in ("question_key", "answer_key", "choices_key", "id_key"):
        column = options[option]
        if column is not None and column not in columns:
            raise missing(column, option)
    for column in options["meta_keys"]:
        if column not in columns:
            raise missing(column, "meta_keys")
    answer_type = options["answer_type"]
    if answer_type is not None and answer_type not in ANSWER_TYPES and answer_type not in columns:
        raise ValueError(f"option answer_type {answer_type!r} is neither an answer type "
                         f"({', '.join(ANSWER_TYPES)}) nor a column"
                         f"{did_you_mean(answer_type, list(ANSWER_TYPES) + list(columns))}; "
                         f"the table has columns {sorted(columns)}")


def _images(rec: dict, ctx: Ctx, rid: str) -> list:
    columns = _image_columns(ctx.options, rec)
    if columns is None:  # a streamed table's columns are only known record by record
        raise bad(ctx, rid, "/".join(AUTO_IMAGE_KEYS), "expected an image column, the record has none")
    if len(columns) > 1:  # a list of columns: one image each
        return [image_ref(rec.get(c), c, ctx, rid) for c in columns]
    column = columns[0]
    value = rec.get(column)
    if isinstance(value, str) and value.lstrip().startswith("["):
        parsed = literal_list(value)  # a CSV cell holding a list of paths
        if parsed is None:
            raise bad(ctx, rid, column, f"expected an image path or a list of them, got {value[:80]!r}")
        value = parsed
    if isinstance(value, (list, tuple)):
        if not value:
            raise bad(ctx, rid, column, "expected at least one image, got an empty list")
        return [image_ref(v, f"{column}[{i}]", ctx, rid) for i, v in enumerate(value)]
    return [image_ref(value, column, ctx, rid)]


def _choices(rec: dict, ctx: Ctx, rid: str) -> list[str] | None:
    column = ctx.options["choices_key"]
    if column is None:
        return None
    value = rec.get(column)
    if _blank(value):
        return None
    if isinstance(value, str):
        parsed = literal_list(value)
        if parsed is None:
            raise bad(ctx, rid, column, f"expected a list of options (or a string holding one), got {value[:80]!r}")
        value = parsed
    if not isinstance(value, (list, tuple)):
        raise bad(ctx, rid, column, f"expected a list of options, got {type(value).__name__}")
    if not value:
        return None
    choices = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or not str(item).strip():
            raise bad(ctx, rid, f"{column}[{i}]", f"expected a non-empty option text, got {item!r}")
        choices.append(str(item).strip())
    if len(choices) < 2:
        raise bad(ctx, rid, column, f"expected at least 2 options, got {len(choices)}")
    if len(choices) > 26:
        raise bad(ctx, rid, column, f"expected at most 26 options (letters A-Z), got {len(choices)}")
    return choices


def _answer_type(rec: dict, ctx: Ctx, rid: str, has_choices: bool) -> str:
    given = ctx.options["answer_type"]
    if given is None:
        return "multiple_choice" if has_choices else "text"
    if given in ANSWER_TYPES:
        return given
    value = get_str(rec, given, ctx, rid).strip()  # a column of per-record answer types
    if value not in ANSWER_TYPES:
        raise bad(ctx, rid, given, f"expected one of {list(ANSWER_TYPES)}, got {value!r}"
                                   f"{did_you_mean(value, ANSWER_TYPES)}")
    return value


def _scalar_text(value, ctx: Ctx, rid: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad(ctx, rid, column, f"expected a string or number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        # a CSV column of whole numbers with an empty cell is read as floats: 3 would become "3.0"
        value = int(value)
    text = str(value).strip()
    if not text:
        raise bad(ctx, rid, column, "expected a non-empty answer, got an empty one")
    return text


def _choice_index(gold, choices: list[str], ctx: Ctx, rid: str, column: str) -> int:
    """The gold option: its exact text first, then its letter, then a 0-based integer index
    (the order the multiple-choice verifier reads a gold in)."""
    if isinstance(gold, int) and not isinstance(gold, bool):
        if 0 <= gold < len(choices):
            return gold
    elif isinstance(gold, str):
        text = gold.strip()
        if text in choices:
            return choices.index(text)
        bare = text.strip("().").strip()
        if len(bare) == 1 and bare.isalpha() and 0 <= ord(bare.upper()) - ord("A") < len(choices):
            return ord(bare.upper()) - ord("A")
    raise bad(ctx, rid, column, f"expected an option text, a letter A-{letter(len(choices) - 1)} or a "
                                f"0-based index of the {len(choices)} choices, got {gold!r}")


def _json_columns(features) -> tuple[str, ...]:
    """Columns `datasets` stored as JSON text: a JSON-lines column whose values mix types (numbers
    and strings, a path in one record and a list of paths in the next) has the `Json` feature, and
    the undecoded rows the loader reads hold each value as its JSON text."""
    if not features or not hasattr(features, "items"):
        return ()
    return tuple(c for c, f in features.items() if type(f).__name__ == "Json")


def _decoded(rec: dict, ctx: Ctx) -> dict:
    columns = [c for c in _json_columns(ctx.features) if isinstance(rec.get(c), str)]
    if not columns:
        return rec
    rec = dict(rec)
    for column in columns:
        try:
            rec[column] = json.loads(rec[column])
        except ValueError:  # not written by `datasets` then: keep the text as it is
            pass
    return rec


def convert(rec: dict, ctx: Ctx) -> Sample:
    options = ctx.options
    rec = _decoded(rec, ctx)
    id_key = options["id_key"] or ("id" if "id" in rec else None)
    rid = record_id(rec, id_key, ctx)
    question_key, answer_key = options["question_key"], options["answer_key"]
    question = strip_bare_image_tokens(get_str(rec, question_key, ctx, rid))
    if not question:
        raise bad(ctx, rid, question_key, "expected a question, got only an <image> placeholder")
    images = _images(rec, ctx, rid) if ctx.images_loaded else []
    if ctx.images_loaded:
        for m in MARKER.finditer(question):
            if not 1 <= int(m.group(1)) <= len(images):
                raise bad(ctx, rid, question_key, f"{m.group(0)!r} is referenced but the record has "
                                                  f"{len(images)} image(s)")
    choices = _choices(rec, ctx, rid)
    answer_type = _answer_type(rec, ctx, rid, choices is not None)
    meta: dict = {}
    gold = rec.get(answer_key)
    if _blank(gold):
        raise bad(ctx, rid, answer_key, "expected an answer, the field is missing or empty")
    if answer_type == "multiple_choice":
        if choices is None:
            raise bad(ctx, rid, options["choices_key"] or "choices",
                      "answer_type multiple_choice needs choices (option choices_key)")
        index = _choice_index(gold, choices, ctx, rid, answer_key)
        answer = letter(index)
        meta.update(answer_index=index, answer_text=choices[index])
    elif isinstance(gold, (list, tuple)):
        golds = [_scalar_text(g, ctx, rid, f"{answer_key}[{i}]") for i, g in enumerate(gold)]
        if not golds:
            raise bad(ctx, rid, answer_key, "expected at least one answer, got an empty list")
        if answer_type == "list":  # the gold list itself
            answer = ", ".join(golds)
        else:  # accepted answers
            answer = golds[0]
            meta["answers"] = golds
    else:
        answer = _scalar_text(gold, ctx, rid, answer_key)
    for column in options["meta_keys"]:
        if rec.get(column) is not None:
            meta[column] = rec[column]
    return Sample(id=rid, images=images, question=question, answer=answer, answer_type=answer_type,
                  choices=choices, task=options["task"], meta=meta)


load = define_source(SourceDef(
    name=NAME, convert=convert, hub_id=None, split="train", options=OPTIONS, check_options=check_options,
    check_columns=check_columns, doc=__doc__))
