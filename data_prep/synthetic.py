"""Procedurally generated visual problems with exact answers, the offline stand-in for benchmarks.

Every problem is a pure function of (task, split, seed, index): the same arguments always draw
the same image and question, and the `train` and `heldout` splits use different seed streams and
different ids, so they never share a record. A task is a `Sequence`, so a mixture can index into
it without rendering anything it does not serve (images are drawn on first access).

Tasks and their answer types (the same verifiers the public benchmarks use):
- `count_shapes`  "How many red shapes are there?"         -> integer   (CLEVR-count style)
- `bar_compare`   "Which bar is the tallest?" + choices    -> multiple_choice (chart style)
- `segment_sum`   a segment in two labelled parts, "total?" -> math (diagram-reading style)

Difficulty knobs: `max_count` and `distractors` (counting), `n_bars` and `min_gap` (bars),
`max_value` (segments).
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from .registry import UnknownName, register_source
from .schema import Sample

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220),
          "yellow": (230, 200, 30), "purple": (150, 60, 190)}
SPLITS = ("train", "heldout")
IMAGE_SIZE = 112


def _rng(task: str, split: str, seed: int, index: int) -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"synthetic task {task!r}: unknown split {split!r}, expected one of {SPLITS}")
    digest = hashlib.sha256(f"{task}|{split}|{seed}|{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    return image, ImageDraw.Draw(image)


def _draw_count_shapes(rng: random.Random, max_count: int, distractors: int):
    target = rng.choice(list(COLORS))
    count = rng.randint(1, max_count)
    others = [c for c in COLORS if c != target]
    colours = [target] * count + [rng.choice(others) for _ in range(rng.randint(0, distractors))]
    rng.shuffle(colours)
    image, draw = _canvas()
    # Place on a 4x4 grid of cells so shapes never overlap (overlap would make the gold wrong).
    cells = rng.sample(range(16), len(colours))
    cell = IMAGE_SIZE // 4
    for colour, c in zip(colours, cells):
        x0, y0 = (c % 4) * cell + 3, (c // 4) * cell + 3
        box = (x0, y0, x0 + cell - 6, y0 + cell - 6)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=COLORS[colour])
        else:
            draw.rectangle(box, fill=COLORS[colour])
    question = f"How many {target} shapes are in the image?"
    return image, question, str(count), None, {"color": target, "category": "counting"}


POSITIONS = {2: ["left", "right"], 3: ["left", "middle", "right"],
             4: ["far left", "middle left", "middle right", "far right"]}


def _draw_bar_compare(rng: random.Random, n_bars: int, min_gap: int):
    if n_bars not in POSITIONS:
        raise ValueError(f"bar_compare: n_bars must be one of {sorted(POSITIONS)}, got {n_bars}")
    colours = [rng.choice(list(COLORS)) for _ in range(n_bars)]
    while True:
        heights = [rng.randint(15, 100) for _ in colours]
        ranked = sorted(heights, reverse=True)
        if ranked[0] - ranked[1] >= min_gap:
            break
    image, draw = _canvas()
    width = IMAGE_SIZE // n_bars
    for i, (colour, h) in enumerate(zip(colours, heights)):
        x0 = i * width + 4
        draw.rectangle((x0, IMAGE_SIZE - 4 - h, x0 + width - 8, IMAGE_SIZE - 4), fill=COLORS[colour])
    choices = POSITIONS[n_bars]
    answer = chr(ord("A") + heights.index(max(heights)))
    return image, "Which bar is the tallest?", answer, list(choices), {"category": "chart"}


def _draw_segment_sum(rng: random.Random, max_value: int):
    a, b = rng.randint(1, max_value), rng.randint(1, max_value)
    image, draw = _canvas()
    y = IMAGE_SIZE // 2
    split_x = 16 + int(80 * a / (a + b))
    draw.line((16, y, 96, y), fill=(0, 0, 0), width=3)
    for x in (16, split_x, 96):
        draw.line((x, y - 8, x, y + 8), fill=(0, 0, 0), width=3)
    font = _font(22)
    draw.text(((16 + split_x) // 2, y - 14), str(a), fill=(200, 0, 0), font=font, anchor="ms")
    draw.text(((split_x + 96) // 2, y + 30), str(b), fill=(0, 0, 200), font=font, anchor="ms")
    question = "The segment is split into two labelled parts. What is its total length?"
    return image, question, str(a + b), None, {"category": "diagram"}


def _draw_shape_color(rng: random.Random, n_choices: int):
    colour = rng.choice(list(COLORS))
    image, draw = _canvas()
    x0, y0 = rng.randint(4, 40), rng.randint(4, 40)
    size = rng.randint(50, 68)
    box = (x0, y0, x0 + size, y0 + size)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=COLORS[colour])
    choices = sorted(rng.sample([c for c in COLORS if c != colour], n_choices - 1) + [colour])
    answer = chr(ord("A") + choices.index(colour))
    return image, "What colour is the shape?", answer, choices, {"category": "colour"}


_TASKS = {
    "count_shapes": ("integer", _draw_count_shapes, {"max_count": 4, "distractors": 2}),
    "bar_compare": ("multiple_choice", _draw_bar_compare, {"n_bars": 3, "min_gap": 8}),
    "segment_sum": ("math", _draw_segment_sum, {"max_value": 4}),
    "shape_color": ("multiple_choice", _draw_shape_color, {"n_choices": 3}),
}
TASK_NAMES = tuple(_TASKS)


class SyntheticTask(Sequence):
    """`size` problems of one task kind; `task[i]` renders problem i."""

    def __init__(self, task: str, split: str = "train", seed: int = 0, size: int = 10_000, **knobs):
        if task not in _TASKS:
            raise UnknownName(f"unknown synthetic task {task!r}, supported: {sorted(_TASKS)}")
        _rng(task, split, seed, 0)  # validates the split early
        answer_type, self._draw, defaults = _TASKS[task]
        unknown = set(knobs) - set(defaults)
        if unknown:
            raise UnknownName(f"synthetic task {task!r}: unknown option(s) {sorted(unknown)}, "
                              f"supported: {sorted(defaults)}")
        self.task, self.split, self.seed, self.size = task, split, seed, size
        self.answer_type = answer_type
        self.knobs = {**defaults, **knobs}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        index %= self.size
        rng = _rng(self.task, self.split, self.seed, index)
        image, question, answer, choices, meta = self._draw(rng, **self.knobs)
        return Sample(id=f"{self.task}-{self.split}-{self.seed}-{index}", images=[image],
                      question=question, answer=answer, answer_type=self.answer_type,
                      choices=choices, task=self.task, meta={**meta, "source": "synthetic"})


class SyntheticMix(Sequence):
    """Several tasks interleaved (problem i is task i mod n_tasks), so any prefix is balanced."""

    def __init__(self, tasks: Sequence[str], knobs: dict | None = None, **kwargs):
        if not tasks:
            raise ValueError("synthetic source: `tasks` is empty")
        knobs = knobs or {}
        unknown = set(knobs) - set(tasks)
        if unknown:
            raise UnknownName(f"synthetic source: knobs given for task(s) not in `tasks`: {sorted(unknown)}")
        self.parts = [SyntheticTask(t, **kwargs, **knobs.get(t, {})) for t in tasks]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        n = len(self.parts)
        return self.parts[index % n][index // n]


@register_source("synthetic")
def synthetic_source(tasks: Sequence[str] = TASK_NAMES, split: str = "train", seed: int = 0,
                     size: int = 10_000, knobs: dict | None = None) -> SyntheticMix:
    """`size` problems per task; `knobs` maps a task name to its difficulty options."""
    return SyntheticMix(list(tasks), knobs=knobs, split=split, seed=seed, size=size)
