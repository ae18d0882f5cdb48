"""Small fixture files in the hub schemas of SAT (`array/SAT`) and CV-Bench (`nyu-visionx/CV-Bench`),
laid out as those repos lay them out (flat files at the repo root), written with `datasets` like
the writers in `hub`.

- SAT: `SAT_<split>.parquet`; `image_bytes` is a list of raw encoded images (binary), as in the
  parquet files themselves; one record has two images (VisualThinker leaves those out).
- CV-Bench: `test.parquet`; every column of the hub's file, `answer` as `(A)`.
"""
from __future__ import annotations

import os

from datasets import Features, Image, List, Value

from .hub import PALETTE, _write, img, png

SAT_FEATURES = Features({
    "image_bytes": List(Value("binary")), "question": Value("string"), "answers": List(Value("string")),
    "question_type": Value("string"), "correct_answer": Value("string"),
})


def sat_rows(n: int = 4) -> list[dict]:
    """`n` single-image questions, then one with two images (the last row)."""
    kinds = [("Is the red chair to the left or the right of the camera?", ["left", "right"], "right",
              "obj_movement"),
             ("If I turn left and walk forward, will the door get closer?", ["yes", "no"], "yes", "ego_movement"),
             ("Which object is closer to the table?", ["sofa", "lamp", "plant"], "lamp", "goal_aim"),
             ("Did the camera move forward or backward?", ["forward", "backward"], "backward", "action_consequence")]
    rows = []
    for i in range(n):
        question, answers, gold, kind = kinds[i % len(kinds)]
        rows.append({"image_bytes": [png(PALETTE[i % len(PALETTE)])], "question": question, "answers": answers,
                     "question_type": kind, "correct_answer": gold})
    rows.append({"image_bytes": [png(PALETTE[0]), png(PALETTE[1])],
                 "question": "Between the first and the second frame, did the camera turn left or right?",
                 "answers": ["left", "right"], "question_type": "ego_movement", "correct_answer": "left"})
    return rows


def write_sat(root: str, rows: list[dict] | None = None, split: str = "train") -> str:
    """`<root>/SAT_<split>.parquet` (and a `SAT_val.parquet` that must not be read for `train`).
    -> the train file's path (a local SAT copy is named by its file)."""
    path = _write(rows if rows is not None else sat_rows(), SAT_FEATURES, os.path.join(root, f"SAT_{split}.parquet"))
    if split != "val":
        _write(sat_rows(1), SAT_FEATURES, os.path.join(root, "SAT_val.parquet"))
    return path


CVBENCH_FEATURES = Features({
    "idx": Value("int64"), "type": Value("string"), "task": Value("string"), "image": Image(),
    "question": Value("string"), "choices": List(Value("string")), "answer": Value("string"),
    "prompt": Value("string"), "filename": Value("string"), "source": Value("string"),
    "source_dataset": Value("string"), "source_filename": Value("string"), "target_class": Value("string"),
    "target_size": Value("int64"), "bbox": List(List(Value("float64"))),
})

# (type, task, source, question, choices, gold letter): one or two of each task, every source
_CVBENCH = [
    ("2D", "Count", "ADE20K", "How many chairs are in the image?", ["3", "2", "4", "0"], "(A)"),
    ("2D", "Count", "COCO", "How many cups are in the image?", ["1", "5", "2", "3"], "(C)"),
    ("2D", "Relation", "ADE20K", "Considering the relative positions of the lamp and the bed in the image, "
     "where is the lamp located with respect to the bed?", ["left", "right"], "(B)"),
    ("2D", "Relation", "COCO", "Considering the relative positions of the dog and the car in the image, "
     "where is the dog located with respect to the car?", ["above", "below"], "(A)"),
    ("3D", "Depth", "Omni3D", "Which object is closer to the camera taking this photo, the box "
     "(highlighted by a red box) or the desk (highlighted by a blue box)?", ["box", "desk"], "(B)"),
    ("3D", "Distance", "Omni3D", "Estimate the real-world distances between objects in this image. Which "
     "object is closer to the sink (highlighted by a red box), the towel (highlighted by a blue box) or "
     "the mirror (highlighted by a green box)?", ["towel", "mirror"], "(A)"),
]


def cvbench_rows() -> list[dict]:
    rows = []
    for i, (kind, task, source, question, choices, answer) in enumerate(_CVBENCH):
        options = "\n".join(f"({chr(65 + k)}) {c}" for k, c in enumerate(choices))
        rows.append({
            "idx": i, "type": kind, "task": task, "image": img(i), "question": question, "choices": choices,
            "answer": answer, "prompt": f"{question} Select from the following choices.\n{options}",
            "filename": f"img/{kind}/{task.lower()}/{source.lower()}_{i}.png", "source": source,
            "source_dataset": source, "source_filename": f"{source.lower()}_{i}.jpg",
            "target_class": None if task == "Count" else question.split()[-1],
            "target_size": 100 * (i + 1) if kind == "2D" else None,
            "bbox": [[1.0, 2.0, 10.0, 12.0]] if task != "Count" else None})
    return rows


def write_cvbench(root: str, rows: list[dict] | None = None) -> str:
    """`<root>/test.parquet`, plus the 2D-only copy `test_2d.parquet` the hub also holds (which a
    `split: test` read must not add). -> `root`."""
    rows = rows if rows is not None else cvbench_rows()
    _write(rows, CVBENCH_FEATURES, os.path.join(root, "test.parquet"))
    _write([r for r in rows if r["type"] == "2D"], CVBENCH_FEATURES, os.path.join(root, "test_2d.parquet"))
    return root
