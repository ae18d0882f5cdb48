"""Shared machinery of the public-benchmark adapters: reading records, validating fields and
images, and turning records into `Sample`s lazily.

An adapter is a `SourceDef`: the source name, its hub id and defaults, and a `convert(record, ctx)`
function that checks one raw record (a plain dict, images still encoded) and returns a `Sample`
(or None to leave a record out on purpose, e.g. a MathVerse version not asked for).
`define_source` registers the loader every adapter shares:

    load_source(name, path=<hub id | local file | local dir>, split=..., config=...,
                image_dir=..., on_bad_record="error" | "skip", limit=None, streaming=False,
                check_images=True, cache_dir=None, shuffle_buffer=0, seed=0, **source_options)

- A relative image path in a local record is looked for in the folder of the data file first
  (then the folder given as `path`), then under `image_dir` when one is given.

- `streaming=False` returns a `SampleTable`: a random-access `Sequence[Sample]` over an Arrow
  dataset (memory-mapped, not in RAM). At construction it scans every record once (text fields,
  and image headers unless `check_images=False`), so that a malformed record fails at load time
  with a message naming source, record and field, or, with `on_bad_record="skip"`, is left out
  and counted. Samples are built on `__getitem__`; images stay encoded bytes or file paths until
  `load_image` / `fit_image` decode them.
- `streaming=True` returns a `SampleStream`: an iterable whose memory stays bounded however large
  the source (records are read in chunks and converted one at a time). Bad records are checked as
  they are met. `iter_from(position, epoch)` resumes a pass (see `Mixture`).

Both expose `skipped` (records left out as malformed) and `bad_records` (the first messages), and
`skipped_report` gathers them for the end-of-run report.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..registry import UnknownName, did_you_mean, register_source
from ..schema import BadRecord, Sample

ON_BAD_RECORD = ("error", "skip")
MAX_BAD_MESSAGES = 20
_EXTENSIONS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
STREAM_JSON_CHUNK = 1 << 20
"""Bytes of a local JSON Lines file read (and parsed) at a time when streaming."""
_SPLIT_WORDS = ("train", "training", "validation", "val", "valid", "dev", "test", "testmini", "testdev")


# --------------------------------------------------------------------------------------------
# Per-record context and field checks


@dataclass
class Ctx:
    """What `convert` knows besides the record itself."""

    source: str
    index: int
    """Position of the record in the raw file / dataset (before any record is skipped)."""
    split: str
    image_dir: str | None
    """The `image_dir` option: where relative image paths are looked for after `file_dirs`."""
    check_images: bool = True
    """Open each image's header (format, size) now; False defers every image check to decoding."""
    images_loaded: bool = True
    """False while scanning without the image columns: image fields are then not looked at."""
    features: Any = None
    """The dataset's `datasets.Features`, when known (for ClassLabel names)."""
    options: dict = field(default_factory=dict)
    """The source-specific options, defaults filled in."""
    file_dirs: tuple[str, ...] = ()
    """For a local source: the folders of its data files, then the folder given as `path`. Relative
    image paths are looked for there first: a file such as R1-V's `geoqa_test_prompts.jsonl`
    names its images relative to itself (`./Geo170K/images/test/0.png`)."""

    def default_id(self) -> str:
        return f"{self.source}-{self.split}-{self.index}"


def bad(ctx: Ctx, rid: Any, field_name: str, expected: str) -> BadRecord:
    return BadRecord(ctx.source, rid, field_name, expected)


def _type_name(value: Any) -> str:
    return "missing" if value is None else type(value).__name__


def get_str(rec: dict, name: str, ctx: Ctx, rid: Any, *, allow_empty: bool = False,
            optional: bool = False) -> str | None:
    """A string field; numbers are accepted and turned into strings (some JSON dumps do that)."""
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise bad(ctx, rid, name, "expected a string, the field is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad(ctx, rid, name, f"expected a string, got {_type_name(value)}")
    value = str(value)
    if not allow_empty and not value.strip():
        if optional:
            return None
        raise bad(ctx, rid, name, "expected a non-empty string, got an empty one")
    return value


def get_int(rec: dict, name: str, ctx: Ctx, rid: Any, *, optional: bool = False) -> int | None:
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise bad(ctx, rid, name, "expected an integer, the field is missing")
    if isinstance(value, bool):
        raise bad(ctx, rid, name, "expected an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise bad(ctx, rid, name, f"expected an integer, got {value!r}")


def get_str_list(rec: dict, name: str, ctx: Ctx, rid: Any, *, nonempty: bool = True,
                 optional: bool = False) -> list[str] | None:
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise bad(ctx, rid, name, "expected a list of strings, the field is missing")
    if not isinstance(value, (list, tuple)):
        raise bad(ctx, rid, name, f"expected a list of strings, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise bad(ctx, rid, f"{name}[{i}]", f"expected a string, got {_type_name(item)}")
        out.append(str(item))
    if nonempty and not out:
        raise bad(ctx, rid, name, "expected a non-empty list, got an empty one")
    return out


def record_id(rec: dict, name: str | None, ctx: Ctx) -> str:
    """The record's id from field `name`, or `<source>-<split>-<index>` when the source has none."""
    if name is None:
        return ctx.default_id()
    value = rec.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise bad(ctx, ctx.default_id(), name, f"expected a string or integer id, got {_type_name(value)}")
    return str(value)


def letter(index: int) -> str:
    return chr(ord("A") + index)


def class_label_name(value: Any, column: str, ctx: Ctx) -> Any:
    """ClassLabel ints -> their names when the dataset's features say so; strings pass through."""
    if isinstance(value, int) and not isinstance(value, bool) and ctx.features is not None:
        feature = ctx.features.get(column) if hasattr(ctx.features, "get") else None
        names = getattr(feature, "names", None)
        if names and 0 <= value < len(names):
            return names[value]
    return value


# --------------------------------------------------------------------------------------------
# Images


def _check_header(data: bytes | str) -> tuple[int, int]:
    """Open only the image header (cheap: no pixel decoding) and return its size."""
    with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as image:
        return image.size


def image_ref(value: Any, name: str, ctx: Ctx, rid: Any, *, optional: bool = False):
    """One image field -> a lazy reference for `Sample.images` (encoded bytes or an absolute path).

    Accepts the hub's Image-feature dict `{"bytes", "path"}`, raw bytes, or a path (a relative
    path is looked for beside the data file first, then under `image_dir`: `image_candidates`;
    a missing file's message names every place tried). With `ctx.check_images` the header is opened now, so a missing,
    unreadable or zero-size image is reported as a BadRecord naming the field. Returns None for an
    absent image when `optional`.
    """
    if not ctx.images_loaded:
        return None
    if isinstance(value, dict):
        data = value.get("bytes") or value.get("path")
    else:
        data = value
    if data is None or (isinstance(data, str) and not data.strip()):
        if optional:
            return None
        raise bad(ctx, rid, name, "expected an image, the field is missing or empty")
    if isinstance(data, Image.Image):
        ref: Any = data
    elif isinstance(data, (bytes, bytearray)):
        if len(data) == 0:
            raise bad(ctx, rid, name, "expected an image, got 0 bytes")
        ref = bytes(data)
    elif isinstance(data, (str, os.PathLike)):
        tried = image_candidates(os.fspath(data), ctx)
        ref = next((p for p in tried if os.path.isfile(p)), None)
        if ref is None:
            if ctx.check_images:
                raise bad(ctx, rid, name, f"image file not found: {os.fspath(data)!r}, tried "
                                          + " and ".join(tried))
            ref = tried[0]  # unchecked: decoding reports it
    else:
        raise bad(ctx, rid, name, f"expected image bytes or a path, got {_type_name(data)}")
    if ctx.check_images and not isinstance(ref, Image.Image):
        try:
            width, height = _check_header(ref)
        except Exception as exc:  # PIL raises several unrelated types for bad files
            raise bad(ctx, rid, name, f"unreadable image: {type(exc).__name__}: {exc}") from None
        if width == 0 or height == 0:
            raise bad(ctx, rid, name, f"image has zero size ({width}x{height})")
    return ref


def image_candidates(path: str, ctx: Ctx) -> list[str]:
    """Where an image path may point, in the order looked at: an absolute path as is; a relative
    one against the data files' folders (`ctx.file_dirs`), then `image_dir`; with neither (a hub
    source and no `image_dir`), against the working directory."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if os.path.isabs(path):
        return [path]
    bases = list(ctx.file_dirs) + ([ctx.image_dir] if ctx.image_dir else [])
    out: list[str] = []
    for base in bases or [os.getcwd()]:
        candidate = os.path.normpath(os.path.join(base, path))
        if candidate not in out:
            out.append(candidate)
    return out


def resolve_path(path: str, ctx: Ctx) -> str:
    """The first of `image_candidates` that is a file (the first one when none is)."""
    tried = image_candidates(path, ctx)
    return next((p for p in tried if os.path.isfile(p)), tried[0])


# --------------------------------------------------------------------------------------------
# Source definitions and the shared loader


Convert = Callable[[dict, Ctx], "Sample | None"]


@dataclass
class SourceDef:
    name: str
    convert: Convert
    hub_id: str | None
    """Default `path` (None: the source has no hub copy and needs a local path)."""
    split: str
    config: str | None = None
    image_columns: tuple[str, ...] = ()
    """Columns holding images (or image paths); left unread by a `check_images=False` scan."""
    options: dict = field(default_factory=dict)
    """Source-specific options and their defaults."""
    hub_configs: tuple[str, ...] = ()
    """For sources split into many configs (MMMU subjects): `config=None` loads them all."""
    check_options: Callable[[dict], dict] | None = None
    """Validates (and may normalise) the source options before anything is read."""
    doc: str = ""
    required_columns: tuple[tuple[str, ...], ...] = ()
    """Columns every file must have, each as its accepted names (`("problem", "question")`: either).
    A file without one is a single error naming the column, in both `on_bad_record` modes: with
    `skip` every record would otherwise be skipped for the same reason."""
    check_columns: Callable[[list[str], dict], None] | None = None
    """For sources whose columns depend on the options (the `table` column map): called with the
    data's column names and the options; raises ValueError saying what is missing (the loader
    prefixes the source and path). Skipped when the columns are not known up front (streaming)."""


def define_source(defn: SourceDef) -> Callable[..., "SampleTable | SampleStream"]:
    """Register `defn.name` with the loader shared by every adapter; returns the loader."""

    def load(path: str | os.PathLike | None = None, split: str | None = None, config: str | None = None,
             image_dir: str | os.PathLike | None = None, on_bad_record: str = "error",
             limit: int | None = None, streaming: bool = False, check_images: bool = True,
             cache_dir: str | None = None, shuffle_buffer: int = 0, seed: int = 0,
             **options) -> SampleTable | SampleStream:
        unknown = set(options) - set(defn.options)
        if unknown:
            hints = []
            for key in sorted(unknown):
                hints.append(f"{key!r}{did_you_mean(key, list(defn.options) + list(_LOADER_ARGS), cutoff=0.6)}")
            raise UnknownName(f"data source {defn.name!r}: unknown option(s) {', '.join(hints)}; "
                              f"supported: {sorted(_LOADER_ARGS)} and source options {sorted(defn.options)}")
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"data source {defn.name!r}: on_bad_record must be one of {ON_BAD_RECORD}, "
                             f"got {on_bad_record!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"data source {defn.name!r}: limit must be a non-negative integer, got {limit!r}")
        split = split or defn.split
        opts = {**defn.options, **options}
        if defn.check_options is not None:
            opts = defn.check_options(opts)
        path = os.path.expanduser(os.fspath(path)) if path is not None else defn.hub_id
        if image_dir is not None:
            image_dir = os.path.expanduser(os.fspath(image_dir))
        if path is None:
            raise ValueError(f"data source {defn.name!r} has no hub copy: give `path` (a local file or folder)")
        local = os.path.exists(path)
        if not local and _looks_local(path):
            raise FileNotFoundError(f"data source {defn.name!r}: local path not found: {path}")
        files = local_files(path, split, config or defn.config) if local else None
        file_dirs: list[str] = []
        if local:
            # each data file's own folder first (a file names its images relative to itself), then
            # the folder given as `path` (a hub copy names them relative to its root)
            for folder in [os.path.dirname(os.path.abspath(f)) for f in files] + (
                    [] if os.path.isfile(path) else [os.path.abspath(path)]):
                if folder not in file_dirs:
                    file_dirs.append(folder)
        pre_bad: list[BadRecord] = []
        if local:
            files, pre_bad = _checked_json_lines(defn, files, on_bad_record, cache_dir)
        reader = _open(defn, path, files, split, config, streaming, cache_dir)
        _check_columns(defn, reader, path)
        if defn.check_columns is not None and getattr(reader, "column_names", None) is not None:
            try:
                defn.check_columns(list(reader.column_names), opts)
            except ValueError as exc:  # name the data file(s) themselves, not only their folder
                where = path if not local or os.path.isfile(path) else \
                    ", ".join(local_files(path, split, config or defn.config))
                raise ValueError(f"data source {defn.name!r}: {where}: {exc}") from None
        make_ctx = _CtxFactory(defn.name, split, os.fspath(image_dir) if image_dir else None,
                               check_images, _features(reader), opts, tuple(file_dirs))
        if streaming:
            return SampleStream(defn, reader, make_ctx, on_bad_record, limit, shuffle_buffer, seed,
                                pre_bad=pre_bad)
        if shuffle_buffer:
            raise ValueError(f"data source {defn.name!r}: shuffle_buffer applies to streaming=True only "
                             "(a map-style source is shuffled by the Mixture)")
        return SampleTable(defn, reader, make_ctx, on_bad_record, limit, pre_bad=pre_bad)

    load.__name__ = f"load_{defn.name}"
    load.__doc__ = defn.doc or f"The {defn.name!r} source."
    load.source_def = defn  # type: ignore[attr-defined]
    return register_source(defn.name)(load)


_LOADER_ARGS = ("path", "split", "config", "image_dir", "on_bad_record", "limit", "streaming",
                "check_images", "cache_dir", "shuffle_buffer", "seed")


def adapter_def(source: str) -> SourceDef:
    """The SourceDef of the adapter registered as `source`; UnknownName, with the nearest
    adapter's name, for a name that is no adapter (the synthetic tasks read no raw records)."""
    from ..registry import UnknownName, get_source, source_names
    defn = getattr(get_source(source), "source_def", None)
    if defn is None:
        adapters = [n for n in source_names() if getattr(get_source(n), "source_def", None) is not None]
        raise UnknownName(f"data source {source!r} reads no raw records (it is no benchmark adapter)"
                          f"{did_you_mean(source, adapters)}; adapters: {adapters}")
    return defn


def record_to_sample(source: str, record: dict, *, index: int = 0, split: str | None = None) -> Sample:
    """The Sample that `source`'s adapter makes of one raw record (a dict with the benchmark's own
    field names, as its hub copy has them), with the source's default options; the same code that
    reads the source for training and evaluation. Images are not read: the Sample is for scoring.

    `index` is the record's position and `split` its split (default: the source's), which name a
    record whose source has no id column (`<source>-<split>-<index>`). A malformed record, or one
    the adapter leaves out on purpose, raises BadRecord naming source, record and field; a name
    that is no adapter raises UnknownName with the nearest one."""
    defn = adapter_def(source)
    ctx = Ctx(source=defn.name, index=index, split=split or defn.split, image_dir=None,
              check_images=False, images_loaded=False,
              options=defn.check_options(dict(defn.options)) if defn.check_options else dict(defn.options))
    if not isinstance(record, dict):
        raise bad(ctx, ctx.default_id(), "<record>", f"expected a JSON object, got {_type_name(record)}")
    sample = defn.convert(record, ctx)
    if sample is None:
        raise bad(ctx, ctx.default_id(), "<record>", f"left out by the {defn.name!r} adapter with its "
                                                     f"default options {defn.options}")
    return sample


class _CtxFactory:
    def __init__(self, source, split, image_dir, check_images, features, options, file_dirs=()):
        self.source, self.split, self.image_dir = source, split, image_dir
        self.check_images, self.features, self.options = check_images, features, options
        self.file_dirs = tuple(file_dirs)

    def __call__(self, index: int, *, check_images: bool | None = None, images_loaded: bool = True) -> Ctx:
        return Ctx(self.source, index, self.split, self.image_dir,
                   self.check_images if check_images is None else check_images,
                   images_loaded, self.features, self.options, self.file_dirs)


def _features(reader) -> Any:
    return getattr(reader, "features", None)


def _looks_local(path: str) -> bool:
    """A hub id is `owner/name`; anything else that is not on disk was meant as a local path."""
    return (path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
            or Path(path).suffix.lower() in _EXTENSIONS)


def local_files(path: str, split: str, config: str | None) -> list[str]:
    """The data files of a local source: `path` itself if it is a file; under a folder, the files
    of `config` (a sub-folder `<config>/`, as the hub lays out per-config data, or files named
    `<config>.*` / `<config>-*`, as MathVerse does), then among those the files whose name or
    parent folder names `split`. A folder with no split in its file names is read whole. When
    both parquet and JSON copies match, the parquet ones are read."""
    p = Path(path)
    if p.is_file():
        return [str(p)]
    root = p / config if config and (p / config).is_dir() else p
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in _EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no .parquet/.json/.jsonl/.csv files under {root}")
    if config and root == p:
        low = config.lower()
        named = [f for f in files if f.stem.lower() == low or f.name.lower().startswith(low + "-")]
        if named:
            return _prefer_parquet(named)

    def split_of(f: Path) -> str | None:
        name = f.name.lower()
        for word in sorted(_SPLIT_WORDS + (split.lower(),), key=len, reverse=True):
            # hub shards are named `<split>-00000-of-00001.parquet`, single files `<split>.jsonl`
            if name.startswith(word) and (len(name) == len(word) or name[len(word)] in "-."):
                return word
            if f.parent.name.lower() == word:
                return word
        return None

    named_split = {f: split_of(f) for f in files}
    matching = [f for f in files if named_split[f] == split.lower()]
    if matching:
        return _prefer_parquet(matching)
    if any(named_split.values()):
        found = sorted({s for s in named_split.values() if s})
        raise FileNotFoundError(f"no files for split {split!r} under {root} (found splits {found})")
    return _prefer_parquet(files)


def _json_lines_file(path: str) -> bool:
    """A `.jsonl`, or a `.json` whose first character is `{` (JSON lines; `[` is one document)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return True
    if suffix != ".json":
        return False
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"{")


def _checked_json_lines(defn: SourceDef, files: list[str], on_bad_record: str,
                        cache_dir: str | None) -> tuple[list[str], list[BadRecord]]:
    """Check every line of the local JSON-lines files: one truncated or non-object line would
    otherwise fail the whole load inside `datasets` ("An error occurred while generating the
    dataset"). With `error` the first such line is a BadRecord naming file and line; with
    `skip` each is counted like any other bad record and the file is read from a copy without
    those lines (same name, in a scratch folder). Returns (files to read, the bad lines)."""
    import json
    import tempfile

    out, bad_lines = [], []
    for path in files:
        if not _json_lines_file(path):
            out.append(path)
            continue
        bad_here: list[int] = []
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                    problem = None if isinstance(value, dict) else f"not a JSON object ({_type_name(value)})"
                except ValueError as exc:
                    problem = f"not valid JSON ({exc})"
                if problem is None:
                    continue
                exc = BadRecord(defn.name, f"{os.path.basename(path)} line {n}", "<json>", problem)
                if on_bad_record == "error":
                    raise exc
                bad_here.append(n)
                bad_lines.append(exc)
        if not bad_here:
            out.append(path)
            continue
        folder = tempfile.mkdtemp(prefix="clean-jsonl-", dir=cache_dir)
        clean = os.path.join(folder, os.path.basename(path))
        skip = set(bad_here)
        with open(path, "rb") as src, open(clean, "wb") as dst:
            for n, line in enumerate(src, 1):
                if n not in skip:
                    dst.write(line if line.endswith(b"\n") else line + b"\n")
        out.append(clean)
    return out, bad_lines


def _check_columns(defn: SourceDef, reader, path: str) -> None:
    """One error for a required column no record has (see `SourceDef.required_columns`)."""
    columns = getattr(reader, "column_names", None)
    if not defn.required_columns or columns is None:
        return
    for names in defn.required_columns:
        if not any(n in columns for n in names):
            wanted = " or ".join(repr(n) for n in names)
            raise ValueError(f"data source {defn.name!r}: {path}: missing column {wanted} "
                             f"(the file has columns {sorted(columns)})")


def _prefer_parquet(files: list[Path]) -> list[str]:
    parquet = [f for f in files if f.suffix.lower() == ".parquet"]
    return [str(f) for f in (parquet or files)]


def _open(defn: SourceDef, path: str, files: list[str] | None, split: str, config: str | None,
          streaming: bool, cache_dir: str | None):
    """A `datasets` Dataset (map-style) or IterableDataset (streaming) for the source: the local
    `files` (from `local_files`), or the hub dataset `path` when `files` is None."""
    import datasets  # deferred: importing datasets costs about a second

    if files is not None:
        kinds = {_EXTENSIONS[Path(f).suffix.lower()] for f in files}
        if len(kinds) != 1:
            raise ValueError(f"data source {defn.name!r}: mixed file types under {path}: {sorted(kinds)}")
        kind = kinds.pop()
        extra = {}
        if streaming and kind == "json":
            extra["chunksize"] = STREAM_JSON_CHUNK  # bounds the bytes held per read
        try:
            ds = datasets.load_dataset(kind, data_files={"train": files}, split="train",
                                       streaming=streaming, cache_dir=cache_dir, **extra)
        except Exception as exc:  # a damaged file fails inside `datasets` with a generic message
            raise ValueError(f"data source {defn.name!r}: cannot read {_unreadable_file(files, kind, exc)}") from exc
    else:
        configs = [config] if config else list(defn.hub_configs) or [defn.config]
        parts = [datasets.load_dataset(path, c, split=split, streaming=streaming, cache_dir=cache_dir)
                 for c in configs]
        ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if streaming:
        return ds.decode(False)  # images stay {"bytes", "path"} dicts
    return _ArrowRows(ds)


def _unreadable_file(files: list[str], kind: str, exc: Exception) -> str:
    """Which of `files` is damaged and why ("<file>: <reason>"), found only after a load failed
    (a parquet footer, a JSON document); falls back to the error `datasets` gave."""
    import json

    for path in files:
        try:
            if kind == "parquet":
                import pyarrow.parquet as pq
                pq.read_metadata(path)
            elif kind == "json" and not _json_lines_file(path):
                with open(path, "rb") as f:
                    json.load(f)
        except Exception as bad_file:
            return f"{path}: {type(bad_file).__name__}: {bad_file}"
    cause = exc.__cause__ or exc
    return f"{', '.join(files)}: {type(cause).__name__}: {cause}"


class _ArrowRows:
    """Row access to a map-style `datasets.Dataset` without decoding any feature (images stay
    encoded): rows come out of the Arrow table as plain dicts."""

    def __init__(self, ds):
        self.ds = ds
        self.arrow = ds.with_format("arrow")
        self.features = ds.features
        self.column_names = ds.column_names

    def __len__(self) -> int:
        return len(self.ds)

    def row(self, index: int) -> dict:
        return self.arrow[index].to_pylist()[0]

    def batches(self, columns: list[str] | None = None, batch_size: int = 512) -> Iterator[list[dict]]:
        arrow = self.arrow if columns is None else self.arrow.select_columns(columns)
        for table in arrow.iter(batch_size=batch_size):
            yield table.to_pylist()


# --------------------------------------------------------------------------------------------
# The two kinds of returned source


class _SkipCounter:
    skipped: int
    bad_records: list[str]

    def _record_bad(self, exc: BadRecord) -> None:
        self.skipped += 1
        if len(self.bad_records) < MAX_BAD_MESSAGES:
            self.bad_records.append(str(exc))


class SampleTable(Sequence, _SkipCounter):
    """Random-access Samples over a map-style dataset (see the module docstring)."""

    def __init__(self, defn: SourceDef, rows: _ArrowRows, make_ctx: _CtxFactory, on_bad_record: str,
                 limit: int | None, pre_bad: Sequence[BadRecord] = ()):
        self.name = defn.name
        self._defn, self._rows, self._make_ctx = defn, rows, make_ctx
        self.skipped, self.bad_records = 0, []
        for exc in pre_bad:  # lines of a JSON-lines file that were not JSON objects
            self._record_bad(exc)
        self._index = array("q")  # raw record index of each kept sample
        self.ids: list[str] = []
        seen: dict[str, int] = {}
        check_images = make_ctx.check_images
        columns = None
        if not check_images:  # do not even read the image columns
            columns = [c for c in rows.column_names if c not in defn.image_columns]
        raw = 0
        for batch in rows.batches(columns):
            for rec in batch:
                if limit is not None and len(self._index) >= limit:
                    break
                ctx = make_ctx(raw, images_loaded=check_images)
                try:
                    sample = defn.convert(rec, ctx)
                    if sample is not None and sample.id in seen:
                        raise BadRecord(defn.name, sample.id, "id",
                                        f"expected unique ids, record {seen[sample.id]} has the same id")
                except BadRecord as exc:
                    if on_bad_record == "error":
                        raise
                    self._record_bad(exc)
                    sample = None
                if sample is not None:
                    seen[sample.id] = raw
                    self._index.append(raw)
                    self.ids.append(sample.id)
                raw += 1
            if limit is not None and len(self._index) >= limit:
                break

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        raw = self._index[index]
        # Records were fully checked by the scan; building the Sample again needs no image I/O.
        sample = self._defn.convert(self._rows.row(raw), self._make_ctx(raw, check_images=False))
        assert sample is not None
        return sample

    def __repr__(self) -> str:
        return f"SampleTable({self.name!r}, {len(self)} samples, {self.skipped} skipped)"


class SampleStream(Iterable):
    """Samples read one at a time from a streaming dataset; memory stays bounded.

    Each `iter()` is a fresh pass from the start. With `shuffle_buffer` > 0 each pass goes through
    a seeded shuffle buffer of that many records (a different, reproducible order per `epoch`).
    `iter_from(position, epoch)` resumes a pass after `position` records (bad ones included) of
    epoch `epoch`: the skipped records are re-read but not converted. The iterator it returns
    exposes `position`, which a `Mixture` checkpoints. `skipped` counts the distinct malformed
    records met so far (over all passes).
    """

    def __init__(self, defn: SourceDef, ds, make_ctx: _CtxFactory, on_bad_record: str, limit: int | None,
                 shuffle_buffer: int, seed: int, pre_bad: Sequence[BadRecord] = ()):
        if shuffle_buffer < 0:
            raise ValueError(f"data source {defn.name!r}: shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.name = defn.name
        self._defn, self._ds, self._make_ctx = defn, ds, make_ctx
        self._on_bad, self._limit = on_bad_record, limit
        self._shuffle_buffer, self._seed = shuffle_buffer, seed
        self._bad_seen: set[int] = set()
        self.bad_records: list[str] = []
        for k, exc in enumerate(pre_bad):  # negative keys: lines left out before reading
            self._record_bad(-1 - k, exc)

    @property
    def skipped(self) -> int:
        return len(self._bad_seen)

    def _record_bad(self, raw_index: int, exc: BadRecord) -> None:
        if raw_index not in self._bad_seen:
            self._bad_seen.add(raw_index)
            if len(self.bad_records) < MAX_BAD_MESSAGES:
                self.bad_records.append(str(exc))

    def __iter__(self) -> "_StreamIterator":
        return self.iter_from(0, 0)

    def iter_from(self, position: int = 0, epoch: int = 0) -> "_StreamIterator":
        records = enumerate(iter(self._ds))  # (raw index in the file order, record)
        if self._shuffle_buffer:
            records = _shuffled(records, self._shuffle_buffer, np.random.default_rng([self._seed, epoch]))
        return _StreamIterator(self, records, position)

    def __repr__(self) -> str:
        return f"SampleStream({self.name!r}, streaming, {self.skipped} skipped so far)"


def _shuffled(items: Iterator, size: int, rng) -> Iterator:
    """A shuffle buffer: holds `size` items, emits a random one as each new item arrives."""
    buffer = list(itertools.islice(items, size))
    for item in items:
        j = int(rng.integers(len(buffer)))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[int(j)]


class _StreamIterator(Iterator):
    def __init__(self, stream: SampleStream, records: Iterator[tuple[int, dict]], start: int):
        self._stream, self._records = stream, records
        self.position = 0  # records consumed in this pass
        self.yielded = 0
        for raw_index, rec in itertools.islice(records, start):
            self.position += 1
            if stream._limit is not None:  # `limit` counts the samples of the whole pass
                try:
                    if stream._defn.convert(rec, stream._make_ctx(raw_index, check_images=False)) is not None:
                        self.yielded += 1
                except BadRecord:
                    pass

    def __next__(self) -> Sample:
        stream = self._stream
        while True:
            if stream._limit is not None and self.yielded >= stream._limit:
                raise StopIteration
            raw_index, rec = next(self._records)
            self.position += 1
            try:
                sample = stream._defn.convert(rec, stream._make_ctx(raw_index))
            except BadRecord as exc:
                if stream._on_bad == "error":
                    raise
                stream._record_bad(raw_index, exc)
                continue
            if sample is not None:
                self.yielded += 1
                return sample


# --------------------------------------------------------------------------------------------
# Helpers for runs: held-out split by id, skipped-record report


def _id_unit(sample_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}|{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class IndexSubset(Sequence):
    """A lazy view of some positions of a Sequence."""

    def __init__(self, base: Sequence, indices: Sequence[int], name: str = ""):
        self.base, self.indices = base, indices
        self.name = name or getattr(base, "name", "")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.base[self.indices[index]]

    @property
    def ids(self) -> list[str]:
        base_ids = getattr(self.base, "ids", None)
        if base_ids is not None:
            return [base_ids[i] for i in self.indices]
        return [self.base[i].id for i in self.indices]

    @property
    def skipped(self) -> int:
        return getattr(self.base, "skipped", 0)


class _FilteredStream(Iterable):
    def __init__(self, base: Iterable, keep: Callable[[Sample], bool]):
        self.base, self.keep = base, keep
        self.name = getattr(base, "name", "")

    def __iter__(self):
        return (s for s in self.base if self.keep(s))

    @property
    def skipped(self) -> int:
        return getattr(self.base, "skipped", 0)


def split_by_id(samples, heldout_fraction: float, seed: int = 0):
    """(train, heldout): a deterministic split by a hash of (seed, sample id).

    A sample's side depends only on its id and the seed, never on order or on the other samples,
    so adding records to a source never moves an existing one across the split. For a Sequence
    both parts are lazy views (ids come from the scan, no Sample is built); for an iterable both
    parts are filtered iterables.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1], got {heldout_fraction}")

    def is_heldout(sample_id: str) -> bool:
        return _id_unit(sample_id, seed) < heldout_fraction

    if hasattr(samples, "__getitem__") and hasattr(samples, "__len__"):
        ids = getattr(samples, "ids", None)
        if ids is None:
            ids = [samples[i].id for i in range(len(samples))]
        train = [i for i, sid in enumerate(ids) if not is_heldout(sid)]
        held = [i for i, sid in enumerate(ids) if is_heldout(sid)]
        return IndexSubset(samples, train), IndexSubset(samples, held)
    return (_FilteredStream(samples, lambda s: not is_heldout(s.id)),
            _FilteredStream(samples, lambda s: is_heldout(s.id)))


def skipped_report(sources: dict[str, Any] | Iterable[Any]) -> dict[str, int]:
    """{source name: records skipped as malformed}, for the sources that skipped any."""
    items = sources.items() if isinstance(sources, dict) else ((getattr(s, "name", repr(s)), s) for s in sources)
    return {name: int(getattr(src, "skipped", 0)) for name, src in items if getattr(src, "skipped", 0)}


def skipped_summary(source: Any) -> str:
    """For a source that gave no samples: how many records it skipped as malformed and the first
    reason, e.g. "; 3 record(s) skipped as malformed, first: vqav2: record ...: field ..."
    (empty when it skipped none)."""
    n = int(getattr(source, "skipped", 0) or 0)
    if not n:
        return ""
    messages = getattr(source, "bad_records", None) or getattr(getattr(source, "base", None), "bad_records", None)
    first = (messages or [""])[0]  # (a held-out split or filter keeps its base source as `base`)
    return f"; {n} record(s) skipped as malformed" + (f", first: {first}" if first else "")


def format_skipped(sources: dict[str, Any] | Iterable[Any]) -> str:
    """One line per source that skipped records, with its first bad-record messages."""
    items = sources.items() if isinstance(sources, dict) else ((getattr(s, "name", repr(s)), s) for s in sources)
    lines = []
    for name, src in items:
        n = int(getattr(src, "skipped", 0))
        if n:
            lines.append(f"{name}: skipped {n} malformed record(s)")
            lines.extend(f"  {msg}" for msg in getattr(src, "bad_records", [])[:5])
    return "\n".join(lines) if lines else "no records skipped"
