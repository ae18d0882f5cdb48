"""Hypothesis property tests: no verifier raises or runs long on arbitrary text, scores stay in
[0, 1], and the rules hold for whole families of inputs."""
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import Sample
from rewards import build_scorer, get_verifier, verifier_names
from rewards.extract import MAX_ANSWER_CHARS, extract_answer
from rewards.registry import accepts_mode

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CALL_LIMIT_S = 2.0  # well under the scorer's default 5 s hard limit

OPTS = ["red", "green", "blue", "4"]
SAMPLES = {
    "math": Sample(id="p", answer="\\frac{1}{2}", answer_type="math"),
    "numeric": Sample(id="p", answer="12.5", answer_type="float", meta={"precision": 1}),
    "count": Sample(id="p", answer="3", answer_type="count"),
    "exact_match": Sample(id="p", answer="red", answer_type="text"),
    "list": Sample(id="p", answer="[1, 2]", answer_type="list"),
    "multiple_choice": Sample(id="p", answer="B", answer_type="multiple_choice", choices=OPTS),
    "vqa": Sample(id="p", answer="2", answer_type="vqa", meta={"answers": ["2"] * 7 + ["two"] * 3}),
    "relaxed": Sample(id="p", answer="12", answer_type="text", task="chartqa", meta={"labels": ["12", "0"]}),
    "mathvista": Sample(id="p", answer="green", answer_type="multiple_choice", choices=OPTS, task="mathvista",
                        meta={"question_type": "multi_choice", "mathvista_answer_type": "text"}),
    "mmmu": Sample(id="p", answer="B", answer_type="multiple_choice", choices=OPTS, task="mmmu",
                   meta={"question_type": "multiple-choice"}),
    "scienceqa": Sample(id="p", answer=1, answer_type="multiple_choice", choices=OPTS, task="scienceqa"),
    "format_r1": Sample(id="p", answer="1", answer_type="math"),
    "format_boxed": Sample(id="p", answer="1", answer_type="math"),
}
MATHVISTA_FLOAT = Sample(id="p", answer="1.5", answer_type="float", task="mathvista",
                         meta={"question_type": "free_form", "mathvista_answer_type": "float", "precision": 1})
MMMU_OPEN = Sample(id="p", answer="3.14", answer_type="text", task="mmmu", meta={"question_type": "open"})

# Text that looks like model output: tags, boxes, numbers, letters, LaTeX and junk, mixed.
PIECES = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "{", "}",
                          "\\frac{", "}{", "^", "**", "%", "$", ",", ".", " ", "\n", "A", "B",
                          "(C)", "or", "The answer is ", "=", "-", "1", "2", "12.5", "1/2", "three",
                          "°", "cm", "３", "٣", "√", "\\sqrt{", "__import__('os')", "lambda", "e9"])
MODEL_TEXT = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=40).map("".join))


def _check(name, response, sample, **kw):
    start = time.monotonic()
    res = get_verifier(name)(response, sample, **kw)
    elapsed = time.monotonic() - start
    assert elapsed < CALL_LIMIT_S, (name, response, elapsed)
    assert res is not None and 0.0 <= res.score <= 1.0, (name, response, res)
    return res


@pytest.mark.parametrize("name", sorted(SAMPLES))
@FAST
@given(response=MODEL_TEXT)
def test_no_verifier_raises_or_hangs_on_arbitrary_text(name, response):
    modes = ["lenient", "official"] if accepts_mode(get_verifier(name)) else [None]
    for mode in modes:
        kw = {"mode": mode} if mode else {}
        _check(name, response, SAMPLES[name], **kw)
    if name in ("mathvista", "mmmu"):
        for mode in ("lenient", "official"):
            _check(name, response, MATHVISTA_FLOAT if name == "mathvista" else MMMU_OPEN, mode=mode)


def test_every_registered_builtin_is_covered():
    assert {n for n in verifier_names() if not n.startswith("test_")} <= set(SAMPLES)


@FAST
@given(inner=st.text(max_size=MAX_ANSWER_CHARS).filter(lambda t: "<answer>" not in t and "</answer>" not in t and "\\boxed" not in t and "\\fbox" not in t))
def test_answer_span_is_extracted_verbatim(inner):
    ex = extract_answer(f"<think>ignored 123</think><answer>{inner}</answer>")
    if inner.strip():
        assert (ex.text, ex.rule) == (inner.strip(), "answer_tag")
    else:
        assert ex.text is None or ex.rule != "answer_tag"


@FAST
@given(n=st.integers(-10**12, 10**12), style=st.sampled_from(["{:d}", "{:,d}", "{:d}.0", "\\boxed{{{:d}}}"]))
def test_integers_in_any_plain_notation_match(n, style):
    sample = Sample(id="i", answer=str(n), answer_type="integer")
    response = f"<think>work</think><answer>{style.format(n)}</answer>"
    assert get_verifier("numeric")(response, sample).score == 1.0
    assert get_verifier("numeric")(f"<answer>{n + 1}</answer>", sample).score == 0.0


@FAST
@given(n_choices=st.integers(2, 8), gold=st.data())
def test_exactly_the_gold_letter_scores(n_choices, gold):
    choices = [f"option {i}" for i in range(n_choices)]
    g = gold.draw(st.integers(0, n_choices - 1))
    sample = Sample(id="c", answer=chr(65 + g), answer_type="multiple_choice", choices=choices)
    scores = [get_verifier("multiple_choice")(f"<answer>{chr(65 + k)}</answer>", sample).score
              for k in range(n_choices)]
    assert scores == [1.0 if k == g else 0.0 for k in range(n_choices)]
    # naming any two or more different options scores 0
    many = gold.draw(st.lists(st.integers(0, n_choices - 1), min_size=2, unique=True))
    shotgun = " ".join(chr(65 + k) for k in many)
    assert get_verifier("multiple_choice")(f"<answer>{shotgun}</answer>", sample).score == 0.0


@FAST
@given(answers=st.lists(st.sampled_from(["2", "two", "cat", "dog", "a cat"]), min_size=10, max_size=10),
       prediction=st.sampled_from(["2", "two", "cat", "dog", "a cat", "bird"]))
def test_vqa_soft_accuracy_formula(answers, prediction):
    # lenient: both sides normalised, then mean over leave-one-out subsets of min(1, matches/3)
    norm = {"2": "2", "two": "2", "cat": "cat", "dog": "dog", "a cat": "cat", "bird": "bird"}
    m = sum(norm[a] == norm[prediction] for a in answers)
    # leaving out a matching answer leaves m-1 matches, otherwise m
    expected = (m * min(1, (m - 1) / 3) + (10 - m) * min(1, m / 3)) / 10
    sample = Sample(id="v", answer=answers[0], answer_type="vqa", meta={"answers": answers})
    assert get_verifier("vqa")(f"<answer>{prediction}</answer>", sample).score == pytest.approx(expected)


@pytest.fixture(scope="module")
def pool():
    with build_scorer([{"name": "accuracy"}, {"name": "format_r1"}], timeout_s=5.0, num_workers=1) as s:
        yield s


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(responses=st.lists(MODEL_TEXT, min_size=1, max_size=30))
def test_pool_returns_one_bounded_result_per_response(pool, responses):
    samples = [SAMPLES[k] for k in sorted(SAMPLES)]
    ss = [samples[i % len(samples)] for i in range(len(responses))]
    start = time.monotonic()
    results = pool.score(responses, ss)
    assert time.monotonic() - start < 10
    assert len(results) == len(responses)
    for r in results:
        assert r.info["timeouts"] == 0 and r.info["errors"] == 0, r.info
        assert 0.0 <= r.score <= 2.0
