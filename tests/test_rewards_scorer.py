"""build_scorer / RewardScorer: spec validation, composition, the worker pool and its limits."""
import os
import threading
import time

import pytest
from PIL import Image

from data_prep import Sample
from rewards import RewardResult, build_scorer, register_verifier
from rewards.scorer import resolve_specs

USER = os.path.join(os.path.dirname(__file__), "fixtures", "rewards", "user_reward.py")
NINE = Sample(id="nine", answer="9", answer_type="math")
LETTER_B = Sample(id="bar", answer="B", answer_type="multiple_choice", choices=["blue", "green", "red"])
COUNT3 = Sample(id="cnt", answer="3", answer_type="integer", task="count_shapes")


@pytest.fixture(scope="module")
def scorer():
    with build_scorer([{"name": "accuracy", "weight": 1.0}, {"name": "format_r1", "weight": 0.5}],
                      timeout_s=5.0, num_workers=2) as s:
        s.wait_ready()
        yield s


# ---------------------------------------------------------------------------------------------
# spec validation (no workers needed)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("specs, message", [
    ([{"name": "acuracy"}], "did you mean 'accuracy'"),
    ([{"name": "accuracy", "wieght": 1}], "unknown key 'wieght'.*did you mean 'weight'"),
    ([{"name": "vqa", "mode": "offical"}], "did you mean 'official'"),
    ([{"name": "math", "mode": "official"}], "has no modes"),
    ([{"name": "accuracy", "weight": "1"}], "key 'weight'"),
    ([{"name": "accuracy", "fn": "x.py:f"}], "exactly one of 'name'"),
    ([{"name": "format_r1"}, {"name": "format_boxed"}], "component 'format' is already produced"),
    ([], "non-empty list"),
    ([{"fn": f"{USER}:nope"}], "has no function 'nope'"),
    ([{"fn": f"{USER}:one_arg"}], r"must accept \(response: str, sample: Sample\)"),
    ([{"fn": f"{USER}:NOT_A_FUNCTION"}], "not callable"),
    ([{"fn": "/no/such/file.py:f"}], "does not exist"),
    ([{"fn": "no_such_package_xyz.mod:f"}], "module 'no_such_package_xyz.mod' not found"),
    ([{"fn": os.path.join(os.path.dirname(USER), "bad_import.py") + ":f"}], "importing .* failed: ImportError"),
    ([{"fn": "just_a_name"}], "expected 'path/to/file.py:function'"),
])
def test_bad_specs_raise_clear_errors(specs, message):
    with pytest.raises(ValueError, match=message):
        resolve_specs(specs)


def test_spec_components_and_dotted_path():
    specs = resolve_specs([{"name": "accuracy"}, {"name": "format_r1", "weight": 0.5},
                           {"fn": "rewards.verifiers.formats:format_boxed", "component": "boxed"},
                           {"fn": f"{USER}:with_mode", "mode": "official"}])
    assert [s["component"] for s in specs] == ["accuracy", "format", "boxed", "with_mode"]
    assert [s["weight"] for s in specs] == [1.0, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------------

def test_synthetic_tasks_accuracy_and_format(scorer):
    responses = ["<think>count</think><answer>3</answer>",   # integer, r1 format
                 "<think>tallest</think><answer>B</answer>",  # letter
                 "<answer>9</answer>",                         # right, but no <think>
                 "<think>x</think><answer>A B C</answer>"]     # shotgun
    results = scorer.score(responses, [COUNT3, LETTER_B, NINE, LETTER_B])
    # score = 1.0 * accuracy + 0.5 * format
    assert [r.score for r in results] == [1.5, 1.5, 1.0, 0.5]
    assert results[0].components == {"accuracy": 1.0, "format": 1.0}
    assert results[0].info["verifiers"] == {"accuracy": "numeric", "format": "format_r1"}
    assert results[1].info["verifiers"]["accuracy"] == "multiple_choice"
    assert results[2].info["verifiers"]["accuracy"] == "math"
    assert results[0].info["extraction"] == "answer_tag"
    assert not results[0].info["timeout"] and not results[0].info["parse_failure"]


def test_parse_failures_counted(scorer):
    [res] = scorer.score(["<think>?</think><answer>purple</answer>"], [LETTER_B])
    assert res.score == 0.5 and res.info["parse_failures"] == 1 and res.info["parse_failure"]


def test_empty_batch_and_length_mismatch(scorer):
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="2 responses but 1 samples"):
        scorer.score(["a", "b"], [NINE])
    with pytest.raises(ValueError, match="responses\\[0\\] is int"):
        scorer.score([3], [NINE])


def test_order_preserved_over_many_chunks(scorer):
    samples = [Sample(id=str(i), answer=str(i), answer_type="integer") for i in range(300)]
    responses = [f"<think>.</think><answer>{i if i % 3 else i + 1}</answer>" for i in range(300)]
    results = scorer.score(responses, samples)
    assert [r.components["accuracy"] for r in results] == [0.0 if i % 3 == 0 else 1.0 for i in range(300)]


def test_none_components_are_left_out_and_subcomponents_logged():
    specs = [{"name": "accuracy", "weight": 2.0}, {"fn": f"{USER}:not_applicable", "weight": 5.0},
             {"fn": f"{USER}:with_parts", "weight": 1.0}]
    with build_scorer(specs, num_workers=0) as s:
        [res] = s.score(["<answer>9</answer>"], [NINE])
    # 2.0 * 1.0 + 1.0 * 0.5; not_applicable returned None and is left out of the sum
    assert res.score == 2.5
    assert res.components == {"accuracy": 1.0, "with_parts": 0.5, "with_parts/brevity": 1.0}
    assert res.info["not_applicable"] == ["not_applicable"]


def test_user_errors_score_zero_and_are_counted():
    with build_scorer([{"fn": f"{USER}:boom"}], num_workers=0) as s:
        [res] = s.score(["x"], [NINE])
    assert res.score == 0.0 and res.info["errors"] == 1 and "RuntimeError: boom" in res.info["error"]["boom"]


def test_mode_is_passed_through():
    with build_scorer([{"fn": f"{USER}:with_mode", "mode": "official"}], num_workers=0) as s:
        assert s.score(["x"], [NINE])[0].score == 1.0


@register_verifier("test_rewards_scorer_always_one")
def _always_one(response, sample):
    return 1.0


def test_verifier_registered_by_the_caller_reaches_the_workers():
    # defined in this test module: the workers import it by reference
    with build_scorer([{"name": "test_rewards_scorer_always_one"}], num_workers=1) as s:
        assert s.score(["x"], [NINE])[0].score == 1.0


# ---------------------------------------------------------------------------------------------
# the pool: images stay home, hard time limit, crashes, threads
# ---------------------------------------------------------------------------------------------

def test_images_are_not_sent_to_workers():
    from rewards.scorer import strip_images
    sample = Sample(id="img", answer="9", answer_type="math", images=[Image.new("RGB", (64, 64))],
                    meta={"decoded_image": Image.new("RGB", (8, 8)), "raw": b"\x89PNG", "unit": "cm"})
    assert strip_images(sample).meta == {"unit": "cm"} and strip_images(sample).images == []
    with build_scorer([{"fn": f"{USER}:n_images"}], num_workers=1) as s:
        assert s.score(["x"], [sample])[0].score == 0.0
    assert len(sample.images) == 1  # the caller's sample is untouched
    with build_scorer([{"fn": f"{USER}:n_images"}], num_workers=0) as s:
        assert s.score(["x"], [sample])[0].score == 1.0


def test_hard_time_limit_kills_and_replaces_the_worker_off_the_main_thread():
    specs = [{"fn": f"{USER}:hang"}, {"name": "accuracy"}]
    with build_scorer(specs, timeout_s=1.0, num_workers=2) as s:
        s.wait_ready()
        responses = ["<answer>9</answer>"] * 6 + ["<answer>9</answer> hang"] + ["<answer>9</answer>"] * 6
        out = {}

        def work():
            start = time.monotonic()
            out["results"] = s.score(responses, [NINE] * len(responses))
            out["elapsed"] = time.monotonic() - start

        thread = threading.Thread(target=work)   # not the main thread: no signals possible
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        results = out["results"]
        assert out["elapsed"] < 4.0
        hung = results[6]
        # only the overrunning call scores 0; the same response's other component is redone
        assert hung.info["timeouts"] == 1 and hung.info["timeout"]
        assert hung.components == {"hang": 0.0, "accuracy": 1.0} and hung.score == 1.0
        assert all(r.score == 2.0 for i, r in enumerate(results) if i != 6)
        assert s.stats["timeouts"] == 1 and s.stats["worker_restarts"] == 1
        # the replacement worker serves the next call
        again = s.score(["<answer>9</answer>"] * 4, [NINE] * 4)
        assert [r.score for r in again] == [2.0] * 4


def test_worker_crash_is_an_error_not_a_hang():
    with build_scorer([{"fn": f"{USER}:crash"}], timeout_s=5.0, num_workers=1) as s:
        results = s.score(["ok", "crash", "ok"], [NINE] * 3)
        assert [r.score for r in results] == [1.0, 0.0, 1.0]
        assert results[1].info["errors"] == 1 and "died" in results[1].info["error"]["crash"]


def test_main_module_verifier_is_refused_for_workers(monkeypatch):
    def fn(response, sample):
        return 1.0
    fn.__module__ = "__main__"
    monkeypatch.setitem(__import__("rewards.registry").registry.VERIFIERS._items, "test_main_only", fn)
    with pytest.raises(ValueError, match="defined in __main__"):
        build_scorer([{"name": "test_main_only"}], num_workers=1)
    fn.__module__ = __name__  # a closure: not importable by reference either
    with pytest.raises(ValueError, match="cannot be sent to the scoring workers"):
        build_scorer([{"name": "test_main_only"}], num_workers=1)
    with build_scorer([{"name": "test_main_only"}], num_workers=0) as s:
        assert s.score(["x"], [NINE])[0].score == 1.0


def test_close_is_idempotent_and_score_after_close_fails():
    s = build_scorer([{"name": "accuracy"}], num_workers=1)
    procs = [w.process for w in s.pool.workers]
    s.close()
    s.close()
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(RuntimeError, match="after close"):
        s.score(["x"], [NINE])


def test_batch_of_128_is_fast(scorer):
    samples = [COUNT3, LETTER_B, NINE] * 43
    responses = ["<think>a</think><answer>3</answer>", "<think>b</think><answer>B</answer>",
                 "<think>c</think><answer>9</answer>"] * 43
    scorer.score(responses[:128], samples[:128])  # warm
    start = time.perf_counter()
    for _ in range(5):
        results = scorer.score(responses[:128], samples[:128])
    per_call = (time.perf_counter() - start) / 5
    assert all(r.score == 1.5 for r in results)
    assert per_call < 0.25, per_call  # typically ~10-20 ms on 2 cores


def test_worker_start_failure_is_a_clear_error():
    path = os.path.join(os.path.dirname(USER), "fails_in_worker.py")
    scorer = build_scorer([{"fn": f"{path}:f"}], num_workers=1)
    with pytest.raises(RuntimeError, match="worker failed to start: .*refuses to load in a worker"):
        scorer.score(["x"], [NINE])
    with pytest.raises(RuntimeError, match="after close"):
        scorer.score(["x"], [NINE])


def test_unpicklable_sample_is_a_clear_error_and_the_pool_survives(scorer):
    bad = Sample(id="bad", answer="9", answer_type="math", meta={"callback": lambda: None})
    with pytest.raises(ValueError, match="cannot be sent to the scoring workers"):
        scorer.score(["<answer>9</answer>"], [bad])
    assert scorer.score(["<think>a</think><answer>9</answer>"], [NINE])[0].score == 1.5
