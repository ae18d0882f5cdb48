"""Small fixture files in the *official* schema of each hub dataset (column names and feature
types as the hub's dataset cards declare them; images embedded as `{"bytes", "path"}` where the hub
stores an Image feature). Files are written with `datasets` so that the parquet carries the same
feature metadata as the hub's, and laid out like the hub repos (`data/<split>-00000-of-00001.parquet`)
so that the adapters' folder discovery is exercised too.

Each writer returns the path to hand to `load_source(name, path=...)`. `write_data_root` lays out
a whole `--data-root` folder for the cross_modal suite as the hubs (and R1-V) distribute the data:
several splits per repo, `data/` shards with hashed names, config sub-folders, flat files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

from datasets import ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage

PALETTE = [(220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 30), (150, 60, 190),
           (30, 200, 200), (240, 120, 20), (90, 90, 90)]


def png(color=(200, 30, 30), size=(24, 16), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def img(i: int = 0, size=(24, 16)) -> dict:
    """An Image-feature cell: distinct colour per `i`, width/height `size`."""
    return {"bytes": png(PALETTE[i % len(PALETTE)], size), "path": f"{i}.png"}


CORRUPT = {"bytes": b"this is not an image", "path": "broken.png"}


def _write(rows: list[dict], features: Features, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    columns = {name: [row.get(name) for row in rows] for name in features}
    Dataset.from_dict(columns, features=features).to_parquet(path)
    return path


def _hub_file(root: str, split: str, config: str | None = None) -> str:
    sub = os.path.join(root, config) if config else os.path.join(root, "data")
    return os.path.join(sub, f"{split}-00000-of-00001.parquet")


def write_shards(rows: list[dict], features: Features, folder: str, split: str, shards: int) -> list[str]:
    """`rows` as `shards` parquet files named as the hub's converter names them:
    `<folder>/<split>-0000k-of-0000n-<16 hex>.parquet` (rows in order across the shards)."""
    paths = []
    for k in range(shards):
        part = rows[k * len(rows) // shards:(k + 1) * len(rows) // shards]
        digest = hashlib.sha256(f"{folder}|{split}|{k}".encode()).hexdigest()[:16]
        paths.append(_write(part, features, os.path.join(folder, f"{split}-{k:05d}-of-{shards:05d}-{digest}.parquet")))
    return paths


# --- hiyouga/geometry3k ------------------------------------------------------------------------

GEOMETRY3K_FEATURES = Features({
    "images": List(Image()), "problem": Value("string"), "answer": Value("string"),
    "id": Value("int64"), "choices": List(Value("string")), "ground_truth": Value("string"),
})


def geometry3k_rows(n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        choices = [str(3 * i + k) for k in range(4)]
        rows.append({"images": [img(i)], "problem": f"<image>Find x. Case {i}.", "answer": choices[i % 4],
                     "id": 100 + i, "choices": choices, "ground_truth": "ABCD"[i % 4]})
    return rows


def write_geometry3k(root: str, rows: list[dict] | None = None, split: str = "train") -> str:
    _write(rows if rows is not None else geometry3k_rows(), GEOMETRY3K_FEATURES, _hub_file(root, split))
    return root


# --- AI4Math/MathVista ------------------------------------------------------------------------

MATHVISTA_FEATURES = Features({
    "pid": Value("string"), "question": Value("string"), "image": Value("string"),
    "decoded_image": Image(), "choices": List(Value("string")), "unit": Value("string"),
    "precision": Value("float64"), "answer": Value("string"), "question_type": Value("string"),
    "answer_type": Value("string"),
    "metadata": {
        "category": Value("string"), "context": Value("string"), "grade": Value("string"),
        "img_height": Value("int64"), "img_width": Value("int64"), "language": Value("string"),
        "skills": List(Value("string")), "source": Value("string"), "split": Value("string"),
        "task": Value("string"),
    },
    "query": Value("string"),
})


def _mv_meta(task: str, skills: list[str]) -> dict:
    return {"category": "math-targeted-vqa", "context": "geometry diagram", "grade": "high school",
            "img_height": 16, "img_width": 24, "language": "english", "skills": skills,
            "source": "Geometry3K", "split": "testmini", "task": task}


def mathvista_rows() -> list[dict]:
    return [
        {"pid": "1", "question": "When a spring does work on an object, which option is right?",
         "image": "images/1.jpg", "decoded_image": img(0), "choices": ["twice", "half", "same"],
         "unit": None, "precision": None, "answer": "half", "question_type": "multi_choice",
         "answer_type": "text", "metadata": _mv_meta("textbook question answering", ["scientific reasoning"]),
         "query": "Hint: ... Question: When a spring ..."},
        {"pid": "2", "question": "What is the total volume of the measuring cup?", "image": "images/2.jpg",
         "decoded_image": img(1), "choices": None, "unit": "g", "precision": None, "answer": "1000",
         "question_type": "free_form", "answer_type": "integer",
         "metadata": _mv_meta("figure question answering", ["numeric commonsense"]), "query": "q2"},
        {"pid": "3", "question": "What is the slope of the line?", "image": "images/3.jpg",
         "decoded_image": img(2), "choices": None, "unit": None, "precision": 2.0, "answer": "0.25",
         "question_type": "free_form", "answer_type": "float",
         "metadata": _mv_meta("math word problem", ["algebraic reasoning"]), "query": "q3"},
        {"pid": "4", "question": "List the values of the bars.", "image": "images/4.jpg",
         "decoded_image": img(3), "choices": None, "unit": None, "precision": None, "answer": "[1, 2, 3]",
         "question_type": "free_form", "answer_type": "list",
         "metadata": _mv_meta("figure question answering", ["statistical reasoning"]), "query": "q4"},
    ]


def write_mathvista(root: str, rows: list[dict] | None = None, split: str = "testmini") -> str:
    _write(rows if rows is not None else mathvista_rows(), MATHVISTA_FEATURES, _hub_file(root, split))
    return root


# --- AI4Math/MathVerse (config testmini) -----------------------------------------------------

MATHVERSE_FEATURES = Features({
    "sample_index": Value("string"), "problem_index": Value("string"), "problem_version": Value("string"),
    "question": Value("string"), "image": Image(), "answer": Value("string"),
    "question_type": Value("string"),
    "metadata": {"split": Value("string"), "source": Value("string"), "subject": Value("string"),
                 "subfield": Value("string")},
    "query_wo": Value("string"), "query_cot": Value("string"), "question_for_eval": Value("string"),
})


def mathverse_rows() -> list[dict]:
    meta = {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}
    stem = "As shown in the figure, AB is parallel to CD, angle 1 = 50°, find angle 2 ()"
    choices = "Choices:\nA:40°\nB:50°\nC:130°\nD:140°"
    return [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Dominant",
         "question": f"{stem}\n{choices}", "image": img(0), "answer": "C", "question_type": "multi-choice",
         "metadata": meta, "query_wo": "wo", "query_cot": "cot", "question_for_eval": f"{stem}\n{choices}"},
        {"sample_index": "2", "problem_index": "1", "problem_version": "Vision Only", "question": "",
         "image": img(1), "answer": "C", "question_type": "multi-choice", "metadata": meta,
         "query_wo": "According to the question shown in the image ...", "query_cot": "cot",
         "question_for_eval": ""},
        {"sample_index": "3", "problem_index": "2", "problem_version": "Vision Dominant",
         "question": "Find the length of AB.", "image": img(2), "answer": "2\\sqrt{3}",
         "question_type": "free-form", "metadata": meta, "query_wo": "wo", "query_cot": "cot",
         "question_for_eval": "Find the length of AB."},
        {"sample_index": "4", "problem_index": "2", "problem_version": "Text Lite",
         "question": "AB = 4. Find the length of BC.", "image": img(3), "answer": "2",
         "question_type": "free-form", "metadata": meta, "query_wo": "wo", "query_cot": "cot",
         "question_for_eval": "AB = 4. Find the length of BC."},
    ]


def write_mathverse(root: str, rows: list[dict] | None = None) -> str:
    """Laid out like the hub repo: `testmini.parquet` at the top."""
    path = os.path.join(root, "testmini.parquet")
    _write(rows if rows is not None else mathverse_rows(), MATHVERSE_FEATURES, path)
    return root


# --- leonardPKU/GEOQA_R1V_Train_8K and R1-V's GeoQA eval rows -------------------------------

R1V_FEATURES = Features({"image": Image(), "problem": Value("string"), "solution": Value("string")})


def geoqa_rows(n: int = 4) -> list[dict]:
    golds = ["140°", "3cm", "<answer>25°</answer>", "2√{3}"]
    return [{"image": img(i), "problem": f"As shown in the figure, find the measure. Case {i}.",
             "solution": golds[i % len(golds)]} for i in range(n)]


def write_geoqa(root: str, rows: list[dict] | None = None, split: str = "train") -> str:
    _write(rows if rows is not None else geoqa_rows(), R1V_FEATURES, _hub_file(root, split))
    return root


def write_image_files(image_dir: str, names: list[str], size=(24, 16)) -> None:
    for i, name in enumerate(names):
        path = os.path.join(image_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png(PALETTE[i % len(PALETTE)], size))


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_geoqa_eval(root: str, n: int = 3, layout: str = "r1v") -> tuple[str, str]:
    """R1-V's `geoqa_test_prompts.jsonl` rows (`"image_path": "./Geo170K/images/test/N.png"`).
    -> (file, the folder the paths are relative to).

    `layout="r1v"`: the images where the paths point from the file, as R1-V distributes them
    (`<root>/Geo170K/images/test/N.png`); `"images_dir"`: under `<root>/images/` instead (the
    paths then resolve only with `image_dir=<root>/images`)."""
    if layout not in ("r1v", "images_dir"):
        raise ValueError(f"layout: expected 'r1v' or 'images_dir', got {layout!r}")
    image_dir = root if layout == "r1v" else os.path.join(root, "images")
    names = [f"Geo170K/images/test/{i}.png" for i in range(n)]
    write_image_files(image_dir, names)
    golds = ["140°", "3cm", "65"]
    rows = [{"image_path": f"./{name}", "question": f"Find the angle. Case {i}.", "ground_truth": golds[i % 3]}
            for i, name in enumerate(names)]
    return write_jsonl(os.path.join(root, "geoqa_test_prompts.jsonl"), rows), image_dir


# --- leonardPKU/clevr_cogen_a_train and SuperCLEVR rows --------------------------------------

def clevr_rows(n: int = 4) -> list[dict]:
    return [{"image": img(i), "problem": "How many items are there in the image?",
             "solution": f"<answer> {i + 2} </answer>"} for i in range(n)]


def write_clevr(root: str, rows: list[dict] | None = None, split: str = "train") -> str:
    _write(rows if rows is not None else clevr_rows(), R1V_FEATURES, _hub_file(root, split))
    return root


def write_superclevr(root: str, n: int = 3, layout: str = "r1v") -> tuple[str, str]:
    """R1-V's `superclevr_test200_counting_problems.jsonl` rows, images in `<root>/images/`.
    -> (file, the images folder).

    `layout="r1v"`: the paths as R1-V writes them, relative to the file
    (`"./images/superCLEVR_new_025000.png"`); `"images_dir"`: bare file names, which resolve only
    with `image_dir=<root>/images`."""
    if layout not in ("r1v", "images_dir"):
        raise ValueError(f"layout: expected 'r1v' or 'images_dir', got {layout!r}")
    image_dir = os.path.join(root, "images")
    names = [f"superCLEVR_new_{i:06d}.png" for i in range(n)]
    write_image_files(image_dir, names)
    rows = [{"image_path": f"./images/{name}" if layout == "r1v" else name,
             "question": "How many different items are there in the image?", "ground_truth": i + 3}
            for i, name in enumerate(names)]
    return write_jsonl(os.path.join(root, "superclevr_test200_counting_problems.jsonl"), rows), image_dir


# --- HuggingFaceM4/ChartQA -------------------------------------------------------------------

CHARTQA_FEATURES = Features({
    "image": Image(), "query": Value("string"), "label": List(Value("string")),
    "human_or_machine": ClassLabel(names=["human", "machine"]),
})


def chartqa_rows() -> list[dict]:
    return [
        {"image": img(0), "query": "What is the value of the blue bar?", "label": ["23.5"], "human_or_machine": 0},
        {"image": img(1), "query": "Which country has the lowest share?", "label": ["Chile"], "human_or_machine": 1},
        {"image": img(2), "query": "What is the share of women?", "label": ["45%", "45"], "human_or_machine": 0},
    ]


def write_chartqa(root: str, rows: list[dict] | None = None, split: str = "test") -> str:
    _write(rows if rows is not None else chartqa_rows(), CHARTQA_FEATURES, _hub_file(root, split))
    return root


# --- lmms-lab/VQAv2 --------------------------------------------------------------------------

VQAV2_FEATURES = Features({
    "question_type": Value("string"), "multiple_choice_answer": Value("string"),
    "answers": List({"answer": Value("string"), "answer_confidence": Value("string"),
                     "answer_id": Value("int64")}),
    "image_id": Value("int64"), "answer_type": Value("string"), "question_id": Value("int64"),
    "question": Value("string"), "image": Image(),
})


def _vqa_answers(values: list[str]) -> list[dict]:
    return [{"answer": v, "answer_confidence": "yes", "answer_id": k + 1} for k, v in enumerate(values)]


def vqav2_rows() -> list[dict]:
    return [
        {"question_type": "what color", "multiple_choice_answer": "red",
         "answers": _vqa_answers(["red"] * 7 + ["dark red", "maroon", "red"]), "image_id": 42,
         "answer_type": "other", "question_id": 42001, "question": "What color is the bus?", "image": img(0)},
        {"question_type": "is the", "multiple_choice_answer": "yes",
         "answers": _vqa_answers(["yes"] * 9 + ["no"]), "image_id": 43, "answer_type": "yes/no",
         "question_id": 43001, "question": "Is the man standing?", "image": img(1)},
        {"question_type": "how many", "multiple_choice_answer": "2",
         "answers": _vqa_answers(["2"] * 6 + ["two", "3", "2", "2"]), "image_id": 44, "answer_type": "number",
         "question_id": 44001, "question": "How many dogs are there?", "image": img(2)},
    ]


def write_vqav2(root: str, rows: list[dict] | None = None, split: str = "validation") -> str:
    _write(rows if rows is not None else vqav2_rows(), VQAV2_FEATURES, _hub_file(root, split))
    return root


# --- lmms-lab/ScienceQA (config ScienceQA-IMG) -----------------------------------------------

SCIENCEQA_FEATURES = Features({
    "image": Image(), "question": Value("string"), "choices": List(Value("string")),
    "answer": Value("int8"), "hint": Value("string"), "task": Value("string"), "grade": Value("string"),
    "subject": Value("string"), "topic": Value("string"), "category": Value("string"),
    "skill": Value("string"), "lecture": Value("string"), "solution": Value("string"),
})


def scienceqa_rows() -> list[dict]:
    common = {"task": "closed choice", "grade": "grade5", "subject": "natural science", "topic": "geography",
              "category": "Geography", "skill": "Read a map", "lecture": "Maps show ...", "solution": "Look at ..."}
    return [
        {"image": img(0), "question": "Which of these states is farthest north?",
         "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0, "hint": "", **common},
        {"image": img(1), "question": "Which animal's feet are also adapted for snow?",
         "choices": ["hare", "camel"], "answer": 1,
         "hint": "Lynxes live in the cold forests. The feet are covered in thick fur.", **common},
    ]


def write_scienceqa(root: str, rows: list[dict] | None = None, split: str = "test") -> str:
    _write(rows if rows is not None else scienceqa_rows(), SCIENCEQA_FEATURES, _hub_file(root, split, "ScienceQA-IMG"))
    return root


# --- MMMU/MMMU (per-subject configs) ---------------------------------------------------------

MMMU_FEATURES = Features({
    "id": Value("string"), "question": Value("string"), "options": Value("string"),
    "explanation": Value("string"),
    **{f"image_{k}": Image() for k in range(1, 8)},
    "img_type": Value("string"), "answer": Value("string"), "topic_difficulty": Value("string"),
    "question_type": Value("string"), "subfield": Value("string"),
})


def mmmu_rows(subject: str = "Art") -> list[dict]:
    return [
        {"id": f"validation_{subject}_1", "question": "<image 1> Which painting is older, this one or <image 2>?",
         "options": "['The first', 'The second', \"They're the same age\"]", "explanation": "",
         "image_1": img(0), "image_2": img(1, size=(20, 20)), "img_type": "['Paintings']", "answer": "B",
         "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Fine Arts"},
        {"id": f"validation_{subject}_2", "question": "Which option shows the same motif as <image 1>?",
         "options": "['<image 2>', '<image 3>']", "explanation": "", "image_1": img(2), "image_2": img(3),
         "image_3": img(4), "img_type": "['Sketches and Drafts']", "answer": "A",
         "topic_difficulty": "Medium", "question_type": "multiple-choice", "subfield": "Drawing"},
        {"id": f"validation_{subject}_3", "question": "<image 1> How many figures are shown?", "options": "[]",
         "explanation": "", "image_1": img(5), "img_type": "['Paintings']", "answer": "3",
         "topic_difficulty": "Hard", "question_type": "open", "subfield": "Fine Arts"},
    ]


def write_mmmu(root: str, subjects: dict[str, list[dict]] | None = None, split: str = "validation") -> str:
    subjects = subjects if subjects is not None else {"Art": mmmu_rows("Art")}
    for subject, rows in subjects.items():
        _write(rows, MMMU_FEATURES, _hub_file(root, split, subject))
    return root


# --- a whole --data-root for the cross_modal suite --------------------------------------------

def _renamed(rows: list[dict], key: str, prefix: str) -> list[dict]:
    """Copies of `rows` whose id field `key` gets `prefix`: the rows of another split, which must
    never be read (if they were, the counts would be off)."""
    return [{**row, key: f"{prefix}{row[key]}"} for row in rows]


def write_data_root(root: str) -> dict[str, int]:
    """Every benchmark of the cross_modal suite in `root/<name>`, laid out as its hub repo (or
    R1-V) distributes it, other splits and configs included. -> {benchmark: good records of the
    split the suite reads}.

    | benchmark | layout |
    |---|---|
    | geometry3k | `data/{train,validation,test}-0000k-of-0000n-<hash>.parquet` (test: 2 shards) |
    | mathvista | `data/testmini-...-<hash>.parquet`, `data/test-...` (2 shards) |
    | mathverse | flat: `testmini.parquet`, `testmini_text_only.parquet` |
    | geoqa | R1-V: `geoqa_test_prompts.jsonl`, `Geo170K/images/test/N.png` |
    | superclevr | R1-V: `superclevr_test200_counting_problems.jsonl`, `images/superCLEVR_new_N.png` |
    | chartqa | `data/{train,val,test}-...-<hash>.parquet` (test: 2 shards) |
    | vqav2 | `data/validation-0000k-of-00003-<hash>.parquet`, `data/testdev-...` |
    | scienceqa | config folders `ScienceQA-IMG/{train,validation,test}-...`, `ScienceQA-FULL/test-...` |
    | mmmu | subject folders `Art/`, `Math/`, each `{dev,validation,test}-00000-of-00001.parquet` |
    | cv_bench | flat: `test.parquet`, `test_2d.parquet` (the hub's 2D-only copy, not read for `test`) |
    """
    from .sat_cvbench import write_cvbench  # that module builds on this one's helpers

    def at(name: str) -> str:
        return os.path.join(root, name)

    data = lambda name: os.path.join(at(name), "data")  # noqa: E731
    g3k = geometry3k_rows(6)
    write_shards(g3k[:4], GEOMETRY3K_FEATURES, data("geometry3k"), "test", 2)
    write_shards(g3k[4:], GEOMETRY3K_FEATURES, data("geometry3k"), "train", 1)
    write_shards([{**g3k[5], "id": 999}], GEOMETRY3K_FEATURES, data("geometry3k"), "validation", 1)

    write_shards(mathvista_rows(), MATHVISTA_FEATURES, data("mathvista"), "testmini", 1)
    write_shards(_renamed(mathvista_rows(), "pid", "test-"), MATHVISTA_FEATURES, data("mathvista"), "test", 2)

    write_mathverse(at("mathverse"))
    text_only = [{**row, "sample_index": f"t{row['sample_index']}", "problem_version": "Text Only", "image": None}
                 for row in mathverse_rows()[:2]]
    _write(text_only, MATHVERSE_FEATURES, os.path.join(at("mathverse"), "testmini_text_only.parquet"))

    write_geoqa_eval(at("geoqa"), n=3)
    write_superclevr(at("superclevr"), n=3)

    write_shards(chartqa_rows(), CHARTQA_FEATURES, data("chartqa"), "test", 2)
    write_shards(chartqa_rows()[:2], CHARTQA_FEATURES, data("chartqa"), "train", 1)
    write_shards(chartqa_rows()[2:], CHARTQA_FEATURES, data("chartqa"), "val", 1)

    write_shards(vqav2_rows(), VQAV2_FEATURES, data("vqav2"), "validation", 3)
    write_shards([{**row, "question_id": row["question_id"] + 1_000_000} for row in vqav2_rows()[:2]],
                 VQAV2_FEATURES, data("vqav2"), "testdev", 1)

    sqa = scienceqa_rows()
    for split, rows in (("test", sqa), ("train", sqa[:1]), ("validation", sqa[1:])):
        write_shards(rows, SCIENCEQA_FEATURES, os.path.join(at("scienceqa"), "ScienceQA-IMG"), split, 1)
    write_shards(sqa, SCIENCEQA_FEATURES, os.path.join(at("scienceqa"), "ScienceQA-FULL"), "test", 1)

    for subject in ("Art", "Math"):
        rows = mmmu_rows(subject)
        _write(rows, MMMU_FEATURES, _hub_file(at("mmmu"), "validation", subject))
        for split in ("dev", "test"):
            other = [{**row, "id": row["id"].replace("validation_", f"{split}_")} for row in rows[:1]]
            _write(other, MMMU_FEATURES, _hub_file(at("mmmu"), split, subject))
    write_cvbench(at("cv_bench"))
    return {"geometry3k": 4, "mathvista": 4, "mathverse": 4, "geoqa": 3, "superclevr": 3, "chartqa": 3,
            "vqav2": 3, "scienceqa": 2, "mmmu": 6, "cv_bench": 6}
