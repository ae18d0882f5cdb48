"""Iterating a 20,000-record local JSONL file as a stream holds a bounded amount of memory: the
loader reads STREAM_JSON_CHUNK bytes at a time and builds one Sample at a time, so the peak does
not grow with the file (here ~40 MB of records; a list of all its Samples would hold all of it)."""
from __future__ import annotations

import json
import os
import tracemalloc

import datasets
import psutil

from data_prep.adapters.base import STREAM_JSON_CHUNK
from data_prep.registry import load_source
from data_prep.schema import load_image
from fixtures_data import hub

datasets.disable_progress_bars()
N = 20_000
PAD = "x" * 2_000  # ~2 KB of question text per record


def test_streaming_a_20k_record_jsonl_keeps_memory_bounded(tmp_path):
    image_dir = str(tmp_path / "images")
    hub.write_image_files(image_dir, ["superCLEVR_new_000000.png"])
    path = tmp_path / "superclevr_rows.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(N):
            f.write(json.dumps({"image_path": "superCLEVR_new_000000.png",
                                "question": f"How many objects? ({i}) {PAD}", "ground_truth": i % 10}) + "\n")
    file_bytes = os.path.getsize(path)
    assert file_bytes > 30 * STREAM_JSON_CHUNK

    def stream(check_images):
        return load_source("superclevr", path=str(path), image_dir=image_dir, streaming=True,
                           check_images=check_images, cache_dir=str(tmp_path / "cache"))

    # Pass 1, the full path (every image header opened): whole-process memory, Arrow included.
    it = iter(stream(check_images=True))
    first = next(it)  # the first read imports the rest of the datasets/arrow machinery: not data
    assert load_image(first.images[0]).size == (24, 16)
    process = psutil.Process()
    rss_start = rss_peak = process.memory_info().rss
    count, checksum = 1, int(first.answer)
    for sample in it:
        count += 1
        checksum += int(sample.answer)
        if count % 500 == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
    assert count == N and checksum == sum(i % 10 for i in range(N))
    assert rss_peak - rss_start < file_bytes / 2, (rss_peak - rss_start, file_bytes)

    # Pass 2, Python allocations traced (image checks off: tracemalloc makes PIL's header
    # parsing slow, and it allocates nothing that outlives a record).
    it = iter(stream(check_images=False))
    next(it)
    tracemalloc.start()
    try:
        count = 1 + sum(1 for _ in it)
        _, py_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == N
    # A few chunks' worth, far below the file (and below a materialised list of its Samples).
    assert py_peak < 8 * STREAM_JSON_CHUNK, py_peak
    assert py_peak < file_bytes / 5, (py_peak, file_bytes)
