"""The SAT and CV-Bench adapters on fixture files in the hubs' schemas, their one-line errors on
malformed records, and CV-Bench's own overall score worked by hand."""
from __future__ import annotations

import pytest

from data_prep.registry import load_source
from data_prep.schema import BadRecord
from eval.metrics import cv_bench_overall
from fixtures_data import sat_cvbench as fx
from rewards.registry import route
from rewards.verifiers.choice import multiple_choice


def _score(response, sample) -> float:
    out = multiple_choice(response, sample)
    return float(getattr(out, "score", out))


# --- SAT -----------------------------------------------------------------------------------------

def test_sat_reads_the_hub_file_and_leaves_out_multi_image_questions(tmp_path):
    path = fx.write_sat(str(tmp_path / "SAT"))  # SAT_train.parquet (+ SAT_val.parquet beside it)
    table = load_source("sat", path=path)
    rows = fx.sat_rows()
    assert len(table) == 4 and table.skipped == 0  # the fifth row has two images: left out, not "bad"
    for i, sample in enumerate(table):
        row = rows[i]
        assert sample.id == f"sat-train-{i}" and sample.task == "sat" and sample.answer_type == "multiple_choice"
        assert sorted(sample.choices) == sorted(row["answers"]) and len(sample.images) == 1
        # the gold letter names the correct answer's text wherever the shuffle put it
        assert sample.choices[ord(sample.answer) - 65] == row["correct_answer"] == sample.meta["answer_text"]
        assert sample.meta["question_type"] == row["question_type"] and route(sample) == "multiple_choice"
    # streamed, the same questions; unchecked images (no image read at load) keep the two-image one
    assert [s.id for s in load_source("sat", path=path, streaming=True)] == table.ids
    assert len(load_source("sat", path=path, check_images=False)) == 5
    # the shuffle is a function of the record id: the same on every load
    assert [s.choices for s in load_source("sat", path=path)] == [s.choices for s in table]
    # ...and it moves options: the fixture's row 0 ("left", "right") comes out as ("right", "left")
    assert [s.choices for s in table] != [r["answers"] for r in rows[:4]] and table[0].choices == ["right", "left"]


def test_sat_options_keep_order_and_multi_image_questions(tmp_path):
    path = fx.write_sat(str(tmp_path / "SAT"))
    table = load_source("sat", path=path, max_images=None, shuffle_choices=False)
    assert len(table) == 5 and len(table[4].images) == 2
    # source order kept: row 0's options are ["left", "right"] with "right" correct -> B
    assert table[0].choices == ["left", "right"] and table[0].answer == "B"
    with pytest.raises(ValueError, match="max_images must be a positive integer or None, got 0"):
        load_source("sat", path=path, max_images=0)


def test_sat_answers_score_by_letter_and_by_text(tmp_path):
    sample = load_source("sat", path=fx.write_sat(str(tmp_path / "SAT")), shuffle_choices=False)[0]
    # options ["left", "right"], gold "right" = B
    assert _score("<think>.</think><answer>right</answer>", sample) == 1.0
    assert _score("<think>.</think><answer>(B)</answer>", sample) == 1.0
    assert _score("<think>.</think><answer>left</answer>", sample) == 0.0


@pytest.mark.parametrize("change,field", [
    ({"correct_answer": "up"}, "correct_answer"),       # not one of the options
    ({"answers": ["left"]}, "answers"),                  # a single option
    ({"image_bytes": []}, "image_bytes"),                # no image
    ({"question": ""}, "question"),
])
def test_sat_malformed_record_names_record_and_field(tmp_path, change, field):
    rows = fx.sat_rows(2)
    rows[1] = {**rows[1], **change}
    path = fx.write_sat(str(tmp_path / "SAT"), rows=rows)
    with pytest.raises(BadRecord) as err:
        load_source("sat", path=path)
    assert "sat-train-1" in str(err.value) and field in str(err.value)
    assert len(load_source("sat", path=path, on_bad_record="skip")) == 1


# --- CV-Bench ------------------------------------------------------------------------------------

def test_cv_bench_reads_test_parquet_only(tmp_path):
    root = fx.write_cvbench(str(tmp_path / "CV-Bench"))  # test.parquet + the 2D-only test_2d.parquet
    table = load_source("cv_bench", path=root, split="test")
    rows = fx.cvbench_rows()
    assert len(table) == len(rows) == 6  # test_2d.parquet's copies are not read again
    for sample, row in zip(table, rows):
        assert sample.id == str(row["idx"]) and sample.choices == row["choices"]
        assert f"({sample.answer})" == row["answer"] and sample.meta["answer_text"] == row["choices"][ord(sample.answer) - 65]
        assert (sample.meta["task"], sample.meta["type"], sample.meta["source"]) == (row["task"], row["type"], row["source"])
        assert sample.meta["prompt"] == row["prompt"] and route(sample) == "multiple_choice"
    count = table[0]  # "How many chairs", choices ["3", "2", "4", "0"], gold (A) = "3"
    assert _score("<answer>(A)</answer>", count) == 1.0 and _score("<answer>3</answer>", count) == 1.0
    assert _score("<answer>2</answer>", count) == 0.0


@pytest.mark.parametrize("change,field", [
    ({"answer": "(E)"}, "answer"),          # names no option (4 choices)
    ({"answer": "A or B"}, "answer"),
    ({"task": None}, "task"),
    ({"source": ""}, "source"),
])
def test_cv_bench_malformed_record_names_record_and_field(tmp_path, change, field):
    rows = fx.cvbench_rows()
    rows[1] = {**rows[1], **change}
    root = fx.write_cvbench(str(tmp_path / "CV-Bench"), rows=rows)
    with pytest.raises(BadRecord) as err:
        load_source("cv_bench", path=root)
    assert "'1'" in str(err.value) and field in str(err.value)


# --- CV-Bench's overall, by hand -----------------------------------------------------------------

def _rec(source, task, score):
    return {"score": score, "categories": {"source": source, "task": task}}


def test_cv_bench_overall_worked_by_hand():
    records = [_rec("ADE20K", "Count", 1), _rec("ADE20K", "Relation", 0),                 # ADE20K 1/2 = 0.5
               _rec("COCO", "Count", 1),                                                    # COCO   1/1 = 1.0
               _rec("Omni3D", "Depth", 1), _rec("Omni3D", "Depth", 1),
               _rec("Omni3D", "Distance", 0), _rec("Omni3D", "Distance", 0)]               # Omni3D 2/4 = 0.5
    out = cv_bench_overall(records)
    # 2D = (0.5 + 1.0) / 2 = 0.75; 3D = 0.5; overall = (0.75 + 0.5) / 2 = 0.625
    assert (out["accuracy_2d"], out["accuracy_3d"], out["overall"]) == (0.75, 0.5, 0.625)
    assert out["per_source"] == {"ADE20K": 0.5, "COCO": 1.0, "Omni3D": 0.5}
    # per task: Count 2/2, Relation 0/1, Depth 2/2, Distance 0/2; all questions 4/7 = 0.571429
    assert out["per_task"] == {"Count": 1.0, "Depth": 1.0, "Distance": 0.0, "Relation": 0.0}
    assert out["all_questions"] == 0.571429
    # no Omni3D answers: no 3D accuracy, so no overall (never a mean over what is there)
    partial = cv_bench_overall(records[:3])
    assert (partial["accuracy_2d"], partial["accuracy_3d"], partial["overall"]) == (0.75, None, None)


def test_the_papers_total_is_the_mean_over_all_questions():
    """The GPG paper's CV-Bench "Total" is the all-question mean (VisualThinker's evaluation), not
    CV-Bench's overall: its per-task accuracies weighted by the task sizes of the 2638 questions
    (Count 788, Relation 650, Depth 600, Distance 600) give its Total. GPG row:
    (66.62*788 + 83.23*650 + 81.66*600 + 75.50*600) / 2638 = 2008.93 / 2638 = 76.15; the GRPO row
    gives 1568.82 / 2638 = 59.47. CV-Bench's overall weighs the sources instead, so it differs."""
    sizes = {"Count": 788, "Relation": 650, "Depth": 600, "Distance": 600}
    for per_task, total in (({"Count": 66.62, "Relation": 83.23, "Depth": 81.66, "Distance": 75.50}, 76.15),
                            ({"Count": 59.64, "Relation": 66.76, "Depth": 54.16, "Distance": 56.66}, 59.47)):
        records = []
        for task, n in sizes.items():
            right = round(per_task[task] * n / 100)
            records += [_rec("x", task, 1)] * right + [_rec("x", task, 0)] * (n - right)
        # whole questions right per task (66.62 % of 788 = 524.97 -> 525, ...): the mean over all
        # questions then lands within the rounding of the published two-decimal figures
        assert abs(100 * cv_bench_overall(records)["all_questions"] - total) <= 0.01
