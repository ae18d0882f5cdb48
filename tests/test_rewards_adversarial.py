"""The adversarial corpus: for every item and every verifier, nothing executes, every call
returns on its own well within its limit (no timeouts, no errors), and shotgun answers score 0."""
import time

import pytest

from data_prep import Sample
from rewards import build_scorer

LIMIT_S = 5.0
OPTS = ["1", "2", "3", "4"]


def samples() -> list[Sample]:
    """One sample per route, each with gold "3" (or the option holding "3", C / index 2)."""
    def s(i, **kw):
        return Sample(id=f"adv-{i}", **kw)
    return [
        s(0, answer="3", answer_type="math"),
        s(1, answer="3", answer_type="integer"),
        s(2, answer="3", answer_type="float"),
        s(3, answer="3", answer_type="count"),
        s(4, answer="C", answer_type="multiple_choice", choices=OPTS),
        s(5, answer="3", answer_type="text"),
        s(6, answer="3", answer_type="vqa", meta={"answers": ["3"] * 10}),
        s(7, answer="3", answer_type="list"),
        s(8, answer="3", answer_type="text", task="chartqa", meta={"labels": ["3"]}),
        s(9, answer="3", answer_type="integer", task="mathvista",
          meta={"question_type": "free_form", "mathvista_answer_type": "integer"}),
        s(10, answer="3", answer_type="multiple_choice", choices=OPTS, task="mathvista",
          meta={"question_type": "multi_choice", "mathvista_answer_type": "text"}),
        s(11, answer="C", answer_type="multiple_choice", choices=OPTS, task="mmmu",
          meta={"question_type": "multiple-choice"}),
        s(12, answer="3", answer_type="text", task="mmmu", meta={"question_type": "open"}),
        s(13, answer=2, answer_type="multiple_choice", choices=OPTS, task="scienceqa"),
    ]


def injections(path) -> list[str]:
    p = str(path)
    return [
        f"__import__('os').system('touch {p}')",
        f"<answer>__import__('os').system('touch {p}')</answer>",
        f"\\boxed{{__import__('os').system('touch {p}')}}",
        f"<answer>(lambda: open('{p}', 'w').write('x'))()</answer>",
        f"<answer>(lambda f: f(f))(lambda f: open('{p}', 'w'))</answer>",
        "<answer>().__class__.__bases__[0].__subclasses__()</answer>",
        "<answer>[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen']</answer>",
        f"<answer>eval(\"open('{p}', 'w')\")</answer>",
        f"<answer>exec('import os; os.system(\"touch {p}\")')</answer>",
        f"<answer>Symbol('x').__class__.__init__.__globals__['os'].system('touch {p}')</answer>",
        f"<answer>$\\input{{{p}}}$</answer>",
        "<answer>__import__('time').sleep(100)</answer>",
        f"<think>x</think><answer>7; __import__('os').system('touch {p}')</answer>",
        # no span: math-verify reads the whole response, its plain-expression extraction included
        f"The final answer is __import__('os').system('touch {p}') I hope",
        f"Answer: (lambda: open('{p}', 'w').write('x'))()",
        f"answer = eval(\"open('{p}', 'w')\")",
        f"Answer: 3 + __import__('os').system('touch {p}')",
    ]


HUGE = [
    "A" * 1_000_000,                                                        # 1 MB, one line
    "<think>" + "reason " * 150_000 + "</think><answer>3</answer>",        # 1 MB of reasoning
    "\\boxed{" * 10_000 + "3" + "}" * 10_000,                              # 10,000 nested boxes
    "{" * 10_000 + "3" + "}" * 10_000,                                     # 10,000 nested braces
    "<answer>" + "{" * 900 + "3" + "}" * 900 + "</answer>",
    "<answer>" + "(" * 10_000 + "3" + ")" * 10_000 + "</answer>",
    "\\boxed{9^{9^{9^{9}}}}",
    "<answer>9^{9^{9^{9}}}</answer>",
    "<answer>9**9**9**9</answer>",
    "<answer>10^{10^{10}}</answer>",
    "<answer>2^{1000000}</answer>",
    "<answer>100000!</answer>",
    "<answer>1e999999999</answer>",
    "<answer>" + "9" * 1500 + "</answer>",
    "<answer>" + "1" * 5000 + "</answer>",
    "0." + "1" * 200_000,
    "<answer>" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "</answer>",
    # the plain-expression path (no span: math-verify's expression extraction sees these)
    "The final answer is 9^9^9^9 I hope",
    "Answer: 2^99999",
    "Answer: 10**10**10",
    "Answer: 9^(9^9)",
    "Answer: 2^(3+99999)",
    "answer: " + "(" * 300 + "3" + ")" * 300,
    "Answer: " + "9*" * 2000 + "9",
    "Answer: 1/0",
]
# Spans that hold the gold's number 3 without reading as a number or option: never 3
GAMING = [
    "\\boxed{exit(3)}",
    "<answer>exit(3)</answer>",
    "<answer>AZYUK3A</answer>",
    "\\boxed{x_3}",
    "<answer>print(3)</answer>",
    "<answer>os.system(3)</answer>",
    "<answer>f(3)</answer>",
    "<answer>not 3</answer>",
    "<answer>__import__(3)</answer>",
    "\\boxed{\\text{exit}(3)}",
    "<answer>'3'.strip()</answer>",
    "<answer>[3][0]</answer>",
]
LOOKALIKES = [
    "<answer>٣</answer>",          # Arabic-Indic three
    "<answer>З</answer>",          # Cyrillic Ze
    "<answer>３</answer>",          # full-width three
    "<answer>𝟑</answer>",          # mathematical bold three
    "<answer>³</answer>",           # superscript three
    "<answer>Ⅲ</answer>",          # Roman numeral three
    "<answer>3\u20e3</answer>",     # keycap
    "<answer>3\u200b</answer>",     # zero-width space
    "<answer>Ｃ</answer>",          # full-width C
    "<answer>С</answer>",          # Cyrillic Es
]
SHOTGUNS = [
    "<answer>A B C D</answer>",
    "<think>x</think><answer>A or C</answer>",
    "<answer>C or D</answer>",
    "<answer>(A) (B) (C) (D)</answer>",
    "<answer>A, B, C, D</answer>",
    "<answer>1 2 3 4 5</answer>",
    "<answer>3 or 4</answer>",
    "<answer>2, 3, 4</answer>",
    "\\boxed{1} \\boxed{2} \\boxed{3} \\boxed{4}",
    "<answer>1</answer><answer>2</answer><answer>3</answer><answer>4</answer>",
    "<answer>\\boxed{2} \\boxed{3}</answer>",
]


@pytest.fixture(scope="module")
def scorer():
    # one pool, every call scored both ways: lenient as "accuracy", official as "official"
    specs = [{"name": "accuracy"}, {"name": "accuracy", "mode": "official", "component": "official"},
             {"name": "format_r1"}, {"name": "format_boxed", "component": "boxed"}]
    with build_scorer(specs, timeout_s=LIMIT_S, num_workers=2) as s:
        yield s


@pytest.fixture(scope="module")
def scorers(scorer):
    return _View(scorer, "accuracy"), _View(scorer, "official")


class _View:
    """One mode of the shared scorer: its component is reported as "accuracy"."""

    def __init__(self, scorer, component):
        self.scorer, self.component = scorer, component


_RESULTS = {}


def _score_all(view, responses):
    pool = samples()
    rs = [r for r in responses for _ in pool]
    ss = [s for _ in responses for s in pool]
    key = tuple(responses)
    start = time.monotonic()
    if key not in _RESULTS:  # both modes come from one scoring pass
        _RESULTS[key] = (view.scorer.score(rs, ss), time.monotonic() - start)
    results, elapsed = _RESULTS[key]
    out = []
    for res in results:
        r = type(res)(res.score, dict(res.components), res.info)
        r.components["accuracy"] = res.components[view.component]
        out.append(r)
    return out, elapsed, len(pool)


@pytest.mark.parametrize("mode", [0, 1])
def test_injection_strings_execute_nothing(scorers, tmp_path, mode):
    sentinel = tmp_path / "pwned"
    results, _, _ = _score_all(scorers[mode], injections(sentinel))
    assert not sentinel.exists()
    for res in results:
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0, res.info
        if mode == 0:  # (official MathVista/MMMU rules map any text to some option or number)
            assert res.components["accuracy"] == 0.0


@pytest.mark.parametrize("mode", [0, 1])
def test_huge_and_pathological_inputs_return_quickly(scorers, mode):
    results, elapsed, n = _score_all(scorers[mode], HUGE)
    for i, res in enumerate(results):
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0, (i // n, res.info)
        assert 0.0 <= res.components["accuracy"] <= 1.0
    # the legitimately answered 1 MB response still scores (every route's gold is 3)
    reasoning = results[1 * n:2 * n]
    assert all(r.components["accuracy"] == 1.0 for r in reasoning[:4])
    assert elapsed < 30


@pytest.mark.parametrize("mode", [0, 1])
def test_lookalike_digits(scorers, mode):
    results, _, n = _score_all(scorers[mode], LOOKALIKES)
    for res in results:
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0, res.info
    numeric = {text: results[i * n + 1].components["accuracy"] for i, text in enumerate(LOOKALIKES)}
    # NFKC-equivalent digits are the digit; look-alikes from other scripts are not
    assert numeric["<answer>３</answer>"] == 1.0 and numeric["<answer>𝟑</answer>"] == 1.0
    assert numeric["<answer>3\u200b</answer>"] == 1.0
    assert numeric["<answer>٣</answer>"] == 0.0 and numeric["<answer>З</answer>"] == 0.0
    assert numeric["<answer>³</answer>"] == 0.0      # "^3": an expression, not 3


def test_shotgun_answers_score_zero_in_lenient_mode(scorers):
    results, _, n = _score_all(scorers[0], SHOTGUNS)
    for i, res in enumerate(results):
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0
        assert res.components["accuracy"] == 0.0, (SHOTGUNS[i // n], samples()[i % n].task,
                                                     samples()[i % n].answer_type, res.info)


def test_shotgun_answers_in_official_mode(scorers):
    # Official rules are the benchmarks' code. VQAv2, ChartQA, ScienceQA, MathVista integers and
    # our generic verifiers still give 0; MMMU's parser takes the *last* letter of "A B C D"
    # and MathVista maps any text to its nearest option, as their official code does.
    results, _, n = _score_all(scorers[1], SHOTGUNS)
    quirky = {10, 11, 12}  # mathvista multi_choice, mmmu multiple-choice and open
    for i, res in enumerate(results):
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0
        if i % n not in quirky:
            assert res.components["accuracy"] == 0.0, (SHOTGUNS[i // n], i % n, res.info)


def test_gaming_spans_score_zero_in_lenient_mode(scorers):
    results, _, n = _score_all(scorers[0], GAMING)
    for i, res in enumerate(results):
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0
        assert res.components["accuracy"] == 0.0, (GAMING[i // n], samples()[i % n].answer_type,
                                                     samples()[i % n].task, res.info)


def test_gaming_spans_in_official_mode(scorers):
    # as with shotguns, MathVista's nearest option and MMMU's parsers map any text somewhere
    results, _, n = _score_all(scorers[1], GAMING)
    quirky = {10, 11, 12}
    for i, res in enumerate(results):
        assert res.info["timeouts"] == 0 and res.info["errors"] == 0
        if i % n not in quirky:
            assert res.components["accuracy"] == 0.0, (GAMING[i // n], i % n, res.info)


@pytest.mark.parametrize("expr, allowed", [
    ("1 000", True), ("(9+1)", True), ("1/2", True), ("2**3", True), ("2 ** ( -3 )", True),
    ("exit(3)", False), ("__import__", False), ("os.system", False), ("'3'", False),
    ("[3]", False), ("x", False), ("3,4", False), ("a=1", False),
    ("9**9**9", False), ("2**99999", False), ("9**(9**9)", False), ("2**(3+99999)", False),
    ("2**3.5", False), ("2**2*2**2*2**2", False), ("(" * 21 + "1" + ")" * 21, False), ("1" * 201, False),
])
def test_plain_expression_grammar(expr, allowed):
    from rewards.verifiers.math import plain_expression_refusal
    assert (plain_expression_refusal(expr) is None) == allowed


def test_the_guard_stands_in_front_of_parse_expr(tmp_path):
    # math-verify's parser module calls `parse_expr` by its module-level name; once guarded,
    # text outside the grammar raises before sympy sees it, text inside parses as before
    import math_verify.parser as mv_parser

    from rewards.verifiers.math import install_expr_guard
    assert install_expr_guard()
    sentinel = tmp_path / "pwned"
    with pytest.raises(ValueError, match="refused"):
        mv_parser.parse_expr(f"__import__('os').system('touch {sentinel}')", evaluate=False)
    assert not sentinel.exists()
    assert mv_parser.parse_expr("(9+1)*2", evaluate=False).doit() == 20
