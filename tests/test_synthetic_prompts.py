"""Synthetic tasks, prompt building and prompt encoding."""
import pytest
import torch

from data_prep.prompts import build_messages, format_choices, image_order, question_text
from data_prep.registry import load_source
from data_prep.schema import Sample
from data_prep.synthetic import TASK_NAMES, SyntheticTask


@pytest.mark.parametrize("task", TASK_NAMES)
def test_tasks_are_deterministic_and_splits_disjoint(task):
    a, b = SyntheticTask(task, size=5), SyntheticTask(task, size=5)
    assert [s.id for s in a] == [s.id for s in b]
    assert a[3].images[0].tobytes() == b[3].images[0].tobytes()
    held = SyntheticTask(task, split="heldout", size=5)
    assert not {s.id for s in a} & {s.id for s in held}
    assert any(x.images[0].tobytes() != y.images[0].tobytes() for x, y in zip(a, held))


def test_answers_are_exact():
    for s in SyntheticTask("bar_compare", size=20, n_bars=3):
        assert s.answer in "ABC" and s.choices == ["left", "middle", "right"]
    for s in SyntheticTask("count_shapes", size=20, max_count=3):
        assert 1 <= int(s.answer) <= 3
        # count the target colour's pixels: each shape is one blob of a fixed colour
    for s in SyntheticTask("segment_sum", size=20, max_value=3):
        assert 2 <= int(s.answer) <= 6
    for s in SyntheticTask("shape_color", size=20):
        assert len(s.choices) == 3


def test_count_answer_matches_the_picture():
    from data_prep.synthetic import COLORS
    for s in SyntheticTask("count_shapes", size=10):
        colour = COLORS[s.meta["color"]]
        image = s.images[0]
        cells = 0
        for row in range(4):
            for col in range(4):
                if image.getpixel((col * 28 + 14, row * 28 + 14)) == colour:
                    cells += 1
        assert cells == int(s.answer)


def test_unknown_task_split_and_knob():
    with pytest.raises(KeyError, match="supported"):
        SyntheticTask("nope")
    with pytest.raises(ValueError, match="split"):
        SyntheticTask("count_shapes", split="test")
    with pytest.raises(KeyError, match="unknown option"):
        SyntheticTask("count_shapes", n_bars=3)
    with pytest.raises(KeyError, match="not in `tasks`"):
        load_source("synthetic", tasks=["count_shapes"], knobs={"bar_compare": {"n_bars": 2}})


def test_mix_interleaves_tasks():
    mix = load_source("synthetic", tasks=["count_shapes", "bar_compare"], size=3)
    assert len(mix) == 6
    assert [mix[i].task for i in range(4)] == ["count_shapes", "bar_compare"] * 2


def test_choices_formatting_and_question_text():
    # choices print as "A. x" lines; hint first; unit only for numeric answers
    assert format_choices(["3", "4"]) == "A. 3\nB. 4"
    s = Sample(id="1", question="Find x.", answer="3", answer_type="integer", choices=None,
               meta={"hint": "Look closely", "unit": "cm"})
    assert question_text(s) == "Hint: Look closely\nFind x.\n(Unit: cm)"


def test_image_markers_place_images():
    s = Sample(id="m1", images=["a", "b"], question="Compare <image 2> with <image 1>.", answer="A",
               answer_type="multiple_choice", choices=["x", "y"])
    content = build_messages(s, "direct")[0]["content"]
    assert [p["type"] for p in content][:4] == ["text", "image", "text", "image"]
    assert image_order(build_messages(s, "direct")) == [1, 0]
    bad = Sample(id="m2", images=["a"], question="See <image 3>", answer="1", answer_type="integer")
    with pytest.raises(ValueError, match="m2.*<image 3>"):
        build_messages(bad)


def test_unmarked_images_go_first_and_styles():
    s = Sample(id="u", images=["a"], question="Q?", answer="1", answer_type="integer")
    for style in ("r1", "boxed", "direct"):
        content = build_messages(s, style)[0]["content"]
        assert content[0]["type"] == "image" and content[1]["type"] == "text"
    with pytest.raises(ValueError, match="supported"):
        build_messages(s, "cot")
