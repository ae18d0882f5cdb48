"""Adapter throughput: samples/s from a 5,000-record local parquet file to model-ready images.

    python bench/adapter_throughput.py [--n 5000] [--width 480 --height 320] [--format png]
                                       [--min-pixels 3136] [--max-pixels 401408] [--keep DIR]

Writes a file in the `leonardPKU/clevr_cogen_a_train` schema (`image` as embedded PNG/JPEG
bytes, `problem`, `solution`; CLEVR renders are 480x320 PNGs) and measures:

1. load: `load_source("clevr_count", path=...)`, which scans every record (text fields and
   image headers) and builds the random-access index;
2. samples only: `table[i]` for every i (Sample building, images still encoded);
3. map-style + decode + resize: `fit_image(table[i].images[0], min, max)` (qwen-vl-utils sizing);
4. streaming + decode + resize: the same through `streaming=True`;
5. baseline: pyarrow reads the file and the same decode + `fit_image` run on the raw bytes,
   with no adapter at all. The ratio adapter/baseline is the cost of the adapter layer.

Not a pass/fail test; numbers depend on the machine (report them with its CPU count).
"""
from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_DISTINCT = 64  # distinct rendered images, repeated over the records (bytes stored per record)


def render(rng: random.Random, width: int, height: int, fmt: str) -> tuple[bytes, int]:
    """A CLEVR-like scene: shaded background, 3-10 coloured objects. -> (encoded bytes, count)."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image = Image.blend(image, Image.new("RGB", (width, height), (128, 128, 128)), 0.6)
    draw = ImageDraw.Draw(image)
    count = rng.randint(3, 10)
    for _ in range(count):
        r = rng.randint(height // 16, height // 7)
        x, y = rng.randint(r, width - r), rng.randint(height // 3, height - r)
        color = tuple(rng.randint(30, 230) for _ in range(3))
        box = (x - r, y - r, x + r, y + r)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1))
    buf = io.BytesIO()
    image.save(buf, "JPEG" if fmt == "jpeg" else "PNG", **({"quality": 90} if fmt == "jpeg" else {}))
    return buf.getvalue(), count


def write_file(path: str, n: int, width: int, height: int, fmt: str) -> float:
    from datasets import Dataset, Features, Image, Value

    rng = random.Random(0)
    rendered = [render(rng, width, height, fmt) for _ in range(N_DISTINCT)]
    rows = {"image": [], "problem": [], "solution": []}
    for i in range(n):
        data, count = rendered[i % N_DISTINCT]
        rows["image"].append({"bytes": data, "path": None})
        rows["problem"].append("How many items are there in the image?")
        rows["solution"].append(f"<answer> {count} </answer>")
    features = Features({"image": Image(), "problem": Value("string"), "solution": Value("string")})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(path)
    return sum(len(d) for d, _ in rendered) / N_DISTINCT


def timed(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    done = fn()
    seconds = time.perf_counter() - start
    assert done == n, (label, done, n)
    rate = n / seconds
    print(f"  {label:<44} {seconds:7.2f} s  {rate:9.0f} samples/s")
    return rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--format", choices=("png", "jpeg"), default="png")
    p.add_argument("--min-pixels", type=int, default=56 * 56)
    p.add_argument("--max-pixels", type=int, default=512 * 28 * 28)
    p.add_argument("--keep", default=None, help="write the file here and keep it (default: a temp dir)")
    args = p.parse_args(argv)

    import datasets
    import pyarrow.parquet as pq

    from data_prep.registry import load_source
    from data_prep.schema import load_image
    from data_prep.vision import fit_image

    datasets.disable_progress_bars()
    root = args.keep or tempfile.mkdtemp(prefix="adapter_bench_")
    path = os.path.join(root, "clevr", "data", "train-00000-of-00001.parquet")
    cache = os.path.join(root, "hf_cache")
    try:
        t = time.perf_counter()
        mean_bytes = write_file(path, args.n, args.width, args.height, args.format)
        print(f"adapter throughput: {args.n} records, {args.width}x{args.height} {args.format.upper()} "
              f"(~{mean_bytes / 1024:.0f} KiB each), file {os.path.getsize(path) / 2**20:.1f} MiB, "
              f"written in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPU(s)")
        size = fit_image(load_image(pq.read_table(path, columns=["image"]).column(0)[0].as_py()),
                         args.min_pixels, args.max_pixels).size
        print(f"  fit_image(min_pixels={args.min_pixels}, max_pixels={args.max_pixels}) -> {size[0]}x{size[1]}")

        holder = {}

        def load():
            holder["table"] = load_source("clevr_count", path=os.path.dirname(os.path.dirname(path)),
                                          cache_dir=cache)
            return len(holder["table"])

        # Arrow conversion happens once per file (cached); time the load that a run does after it.
        load()
        r_load = timed("load + scan (text + image headers)", args.n, load)
        table = holder["table"]
        r_samples = timed("samples only (table[i], images encoded)", args.n,
                          lambda: sum(1 for i in range(len(table)) if table[i].images))

        def map_style():
            return sum(1 for i in range(len(table))
                       if fit_image(table[i].images[0], args.min_pixels, args.max_pixels))

        r_map = timed("map-style + decode + fit_image", args.n, map_style)
        stream = load_source("clevr_count", path=os.path.dirname(os.path.dirname(path)), streaming=True,
                             cache_dir=cache)
        r_stream = timed("streaming + decode + fit_image", args.n,
                         lambda: sum(1 for s in stream if fit_image(s.images[0], args.min_pixels, args.max_pixels)))

        def baseline():
            done = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["image", "solution"]):
                for cell in batch.column(0).to_pylist():
                    if fit_image(cell["bytes"], args.min_pixels, args.max_pixels):
                        done += 1
            return done

        r_base = timed("baseline: pyarrow + decode + fit_image", args.n, baseline)
        print(f"  ratio map-style / baseline: {r_map / r_base:.2f}   streaming / baseline: {r_stream / r_base:.2f}")
        print(f"  adapter share of the map-style time: {100 * (1 / r_samples) / (1 / r_map):.1f} %  "
              f"(load + scan {args.n / r_load:.2f} s once per run)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
