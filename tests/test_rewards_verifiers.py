"""Each built-in verifier, with cases taken from the official rules (working in comments)."""
import pytest

from data_prep import Sample
from rewards import RewardResult, get_verifier, route, verifier_names


def run(name, response, sample, **kw) -> RewardResult:
    return get_verifier(name)(response, sample, **kw)


def score(name, response, sample, **kw) -> float:
    return run(name, response, sample, **kw).score


def mc(answer, choices, **kw):
    return Sample(id="mc", answer=answer, answer_type="multiple_choice", choices=choices, **kw)


# ---------------------------------------------------------------------------------------------
# registry and routing
# ---------------------------------------------------------------------------------------------

def test_builtins_registered():
    assert {"math", "multiple_choice", "numeric", "exact_match", "vqa", "relaxed", "count",
            "format_r1", "format_boxed", "mathvista", "mmmu", "scienceqa", "list"} <= set(verifier_names())


@pytest.mark.parametrize("answer_type, task, expected", [
    ("integer", "count_shapes", "numeric"),
    ("multiple_choice", "bar_compare", "multiple_choice"),
    ("math", "segment_sum", "math"),
    ("float", "", "numeric"),
    ("count", "", "count"),
    ("text", "", "exact_match"),
    ("list", "", "list"),
    ("vqa", "", "vqa"),
    ("text", "chartqa", "relaxed"),          # the task's benchmark rule wins over the type
    ("integer", "MathVista_testmini", "mathvista"),
    ("multiple_choice", "mmmu_val", "mmmu"),
    ("multiple_choice", "ScienceQA-IMG", "scienceqa"),
    ("text", "vqav2", "vqa"),
])
def test_route(answer_type, task, expected):
    assert route(Sample(id="r", answer="1", answer_type=answer_type, task=task)) == expected


def test_unknown_verifier_names_nearest():
    with pytest.raises(ValueError, match="did you mean 'numeric'"):
        get_verifier("numerc")


# ---------------------------------------------------------------------------------------------
# math
# ---------------------------------------------------------------------------------------------

MATH9 = Sample(id="m", answer="9", answer_type="math")


@pytest.mark.parametrize("response, expected", [
    ("<think>4 + 5 = 9</think><answer>9</answer>", 1.0),
    ("<think>not 8, it is 9</think><answer>8</answer>", 0.0),   # the span, not the reasoning
    ("<answer>\\frac{18}{2}</answer>", 1.0),                   # 18/2 = 9 exactly
    ("<answer>9.0</answer>", 1.0),
    ("<answer>9 cm</answer>", 1.0),                             # unit normalised away
    ("<answer>3^2</answer>", 1.0),                              # through math-verify
    ("The answer is $9$.", 1.0),
    ("\\boxed{9} \\boxed{8}", 0.0),                             # two different boxes: shotgun
])
def test_math(response, expected):
    assert score("math", response, MATH9) == expected


def test_math_symbolic():
    s = Sample(id="m2", answer="\\frac{\\sqrt{3}}{2}", answer_type="math")
    assert score("math", "<answer>\\sqrt{3}/2</answer>", s) == 1.0
    assert score("math", "<answer>\\frac{\\sqrt{2}}{2}</answer>", s) == 0.0
    degrees = Sample(id="m3", answer="140", answer_type="math")
    assert score("math", "<answer>140^\\circ</answer>", degrees) == 1.0   # ° normalised
    assert score("math", "<answer>140°</answer>", degrees) == 1.0


def test_math_power_tower_refused_fast():
    res = run("math", "\\boxed{9^{9^{9^{9}}}}", MATH9)
    assert res.score == 0.0 and res.info["parse_failure"] and res.info["reason"] == "nested exponent"


# ---------------------------------------------------------------------------------------------
# multiple choice
# ---------------------------------------------------------------------------------------------

CHOICES = ["blue", "green", "red"]


@pytest.mark.parametrize("gold", ["B", 1, "1", "green", "(B)"])
@pytest.mark.parametrize("response", ["<answer>B</answer>", "<answer>(B)</answer>", "<answer>B.</answer>",
                                      "<answer>green</answer>", "<answer>B. green</answer>",
                                      "<answer>Option B</answer>", "<answer>2</answer>",   # 1-based index
                                      "The answer is (B).", "<answer>b</answer>",
                                      "<answer>The green bar</answer>"])
def test_multiple_choice_forms(gold, response):
    # gold as letter, 0-based index (int or digit string), option text or "(B)"
    assert score("multiple_choice", response, mc(gold, CHOICES)) == 1.0


@pytest.mark.parametrize("response", ["<answer>A B C</answer>", "<answer>A or C</answer>",
                                      "<answer>A and B</answer>", "<answer>A, B</answer>",
                                      "<answer>(A) (B)</answer>", "<answer>B. red</answer>",
                                      "<answer>blue or green</answer>"])
def test_multiple_choice_several_options_score_zero(response):
    res = run("multiple_choice", response, mc("B", CHOICES))
    assert res.score == 0.0 and res.info.get("shotgun")


def test_multiple_choice_unparseable_is_a_parse_failure_never_a_guess():
    for response in ["<answer>purple</answer>", "<answer>?</answer>", "", "<answer>E</answer>"]:
        res = run("multiple_choice", response, mc("B", CHOICES))
        assert res.score == 0.0 and res.info["parse_failure"], response


def test_multiple_choice_numeric_options_match_text_not_index():
    # options "3","4","5": "4" is the option text (B), not the 1-based index 4
    s = mc("B", ["3", "4", "5"])
    assert score("multiple_choice", "<answer>4</answer>", s) == 1.0
    assert score("multiple_choice", "<answer>2</answer>", s) == 0.0
    assert run("multiple_choice", "<answer>2</answer>", s).info["parse_failure"]


def test_multiple_choice_article_a_is_not_option_a():
    # "A green bar": "A" + lowercase word reads as the article, so only "green" is named
    assert score("multiple_choice", "<answer>A green bar</answer>", mc("B", CHOICES)) == 1.0


def test_multiple_choice_bad_gold_names_sample():
    with pytest.raises(ValueError, match="gold answer 'purple'"):
        run("multiple_choice", "<answer>A</answer>", mc("purple", CHOICES))


# ---------------------------------------------------------------------------------------------
# numeric, count, exact_match, list
# ---------------------------------------------------------------------------------------------

def num(answer, **meta):
    return Sample(id="n", answer=answer, answer_type="float", meta=meta)


@pytest.mark.parametrize("response, sample, expected", [
    ("<answer>1,234</answer>", num("1234"), 1.0),           # thousands separator
    ("<answer>1234.0</answer>", num("1234"), 1.0),
    ("<answer>25%</answer>", num("0.25"), 1.0),             # 25 / 100 = 0.25
    ("<answer>0.25</answer>", num("25%"), 1.0),
    ("<answer>1.449999</answer>", num("1.45"), 1.0),        # rounds to 1.45 at gold's 2 decimals
    ("<answer>1.44</answer>", num("1.45"), 0.0),
    ("<answer>3.14159</answer>", num("3.14", precision=2), 1.0),  # round(3.14159, 2) = 3.14
    ("<answer>3.149</answer>", num("3.14", precision=2), 0.0),    # round(3.149, 2) = 3.15
    ("<answer>102</answer>", num("100", rel_tol=0.05), 1.0),      # |102-100| = 2 <= 5
    ("<answer>106</answer>", num("100", rel_tol=0.05), 0.0),
    ("<answer>3 4</answer>", num("3"), 0.0),                  # two numbers: shotgun
    ("<answer>three</answer>", num("3"), 1.0),
    ("<answer>12 cm</answer>", num("12"), 1.0),
])
def test_numeric(response, sample, expected):
    assert score("numeric", response, sample) == expected


def test_count():
    s = Sample(id="c", answer="3", answer_type="count")
    assert score("count", "<answer>3</answer>", s) == 1.0
    assert score("count", "<answer>three</answer>", s) == 1.0
    assert score("count", "There are three red shapes.", s) == 1.0
    assert score("count", "<answer>3 or 4</answer>", s) == 0.0
    assert score("count", "<answer>4</answer>", s) == 0.0
    assert run("count", "<answer>many</answer>", s).info["parse_failure"]


def test_exact_match_and_list():
    s = Sample(id="t", answer="New York", answer_type="text")
    assert score("exact_match", "<answer>new york.</answer>", s) == 1.0
    assert score("exact_match", "<answer>\"New  York\"</answer>", s) == 1.0
    assert score("exact_match", "<answer>York</answer>", s) == 0.0
    lst = Sample(id="l", answer="[1, 2, 3]", answer_type="list")
    assert score("list", "<answer>1, 2, 3</answer>", lst) == 1.0
    assert score("list", "<answer>[1,2,3]</answer>", lst) == 1.0
    assert score("list", "<answer>3, 2, 1</answer>", lst) == 0.0
    unordered = Sample(id="l2", answer=["a", "b"], answer_type="list", meta={"ordered": False})
    assert score("list", "<answer>b and a</answer>", unordered) == 1.0


# ---------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    ("<think>r</think><answer>9</answer>", 1.0),
    ("  <think>r</think>\n<answer> 9 </answer>\n", 1.0),
    ("<answer>9</answer>", 0.0),                              # no reasoning
    ("<think>r</think><answer></answer>", 0.0),               # empty answer
    ("<think>r</think><answer>9</answer><answer>8</answer>", 0.0),
    ("<think>r</think>so<answer>9</answer>", 0.0),            # text between
    ("<think>r</think><answer>9</answer> more", 0.0),         # text after
    ("<answer>9</answer><think>r</think>", 0.0),              # order
])
def test_format_r1(response, expected):
    assert score("format_r1", response, MATH9) == expected


def test_format_boxed():
    assert score("format_boxed", "so \\boxed{9}", MATH9) == 1.0
    assert score("format_boxed", "\\boxed{9} and again \\boxed{9}", MATH9) == 1.0
    assert score("format_boxed", "\\boxed{9} \\boxed{8}", MATH9) == 0.0
    assert score("format_boxed", "\\boxed{}", MATH9) == 0.0
    assert score("format_boxed", "9", MATH9) == 0.0


# ---------------------------------------------------------------------------------------------
# VQAv2 (GT-Vision-Lab vqaEval.py)
# ---------------------------------------------------------------------------------------------

def vqa(answers):
    return Sample(id="v", answer=answers[0], answer_type="vqa", meta={"answers": answers})


def test_vqa_leave_one_out_average():
    # 3 "dog", 7 "cat"; prediction "dog".
    # Leaving out one of the 3 dogs leaves 2 matches -> 2/3; leaving out a cat leaves 3 -> 1.
    # (3 * 2/3 + 7 * 1) / 10 = 9 / 10
    s = vqa(["dog"] * 3 + ["cat"] * 7)
    for mode in ("official", "lenient"):
        assert score("vqa", "<answer>dog</answer>", s, mode=mode) == pytest.approx(0.9)
    # one "dog": every subset has at most 1 match -> (1 * 0 + 9 * 1/3) / 10 = 0.3
    assert score("vqa", "dog", vqa(["dog"] + ["cat"] * 9), mode="official") == pytest.approx(0.3)


def test_vqa_number_words_when_annotators_disagree():
    # Annotators disagree, so prediction and gold answers are both normalised: "two" -> "2"
    # everywhere, ten matches of "2" -> every leave-one-out subset has 9 >= 3 -> 1.0
    s = vqa(["2", "2"] + ["two"] * 8)
    assert score("vqa", "<answer>two</answer>", s, mode="official") == pytest.approx(1.0)
    assert score("vqa", "<answer>two</answer>", s, mode="lenient") == pytest.approx(1.0)


def test_vqa_unanimous_gold_is_compared_as_written_officially():
    # Ten identical answers: no normalisation on either side, only strip.
    # "Yes" vs ten "Yes" -> 1; "yes" vs ten "Yes" -> 0; "Yes" vs ten "yes" -> 0
    assert score("vqa", "<answer>Yes</answer>", vqa(["Yes"] * 10), mode="official") == 1.0
    assert score("vqa", "<answer>yes</answer>", vqa(["Yes"] * 10), mode="official") == 0.0
    assert score("vqa", "Yes", vqa(["yes"] * 10), mode="official") == 0.0
    assert score("vqa", " yes\n", vqa(["yes"] * 10), mode="official") == 1.0  # stripped
    # "two" vs ten "2": no number-word mapping without disagreement -> 0
    assert score("vqa", "two", vqa(["2"] * 10), mode="official") == 0.0
    # lenient normalises both sides always
    assert score("vqa", "<answer>Yes</answer>", vqa(["yes"] * 10), mode="lenient") == 1.0


@pytest.mark.parametrize("prediction, gold", [
    ("A dog.", "dog"),             # article dropped, final period stripped
    ("the dog", "dog"),
    ("dont", "don't"),             # contraction restored
    ("1,000", "1000"),             # digit,digit: every punctuation mark removed, not spaced
    ("red,blue", "red blue"),      # no digit-comma-digit, no space around ",": comma -> space
    ("3.5", "3.5"),                # a period before a digit stays
    ("Two", "2"),
    ("none", "0"),
    ("yes!", "yes"),
])
def test_vqa_official_normalisation(prediction, gold):
    # one dissenting "zzz" turns normalisation on; 9 matches, every subset keeps >= 8 -> 1.0
    assert score("vqa", f"<answer>{prediction}</answer>", vqa([gold] * 9 + ["zzz"]), mode="official") == 1.0


def test_vqa_official_period_count_quirk():
    from rewards.verifiers.vqa import process_punctuation
    # re.UNICODE (32) is passed as `count`: only the first 32 periods go
    assert process_punctuation("." * 40) == "." * 8
    # the "lookbehind" is a lookahead typo: a period after a digit and before a letter goes
    assert process_punctuation("1.a") == "1a"


def test_vqa_hub_answer_dicts():
    s = Sample(id="v", answer="dog", answer_type="vqa",
               meta={"answers": [{"answer": "dog", "answer_id": i} for i in range(10)]})
    assert score("vqa", "dog", s, mode="official") == 1.0


# ---------------------------------------------------------------------------------------------
# ChartQA relaxed accuracy (pix2struct relaxed_correctness)
# ---------------------------------------------------------------------------------------------

def chart(*labels):
    return Sample(id="c", answer=labels[0], answer_type="text", task="chartqa", meta={"labels": list(labels)})


@pytest.mark.parametrize("mode", ["official", "lenient"])
@pytest.mark.parametrize("prediction, labels, expected", [
    ("12.5", ["12"], 1.0),        # |12.5 - 12| / 12 = 0.0417 <= 0.05
    ("12.7", ["12"], 0.0),        # 0.7 / 12 = 0.0583 > 0.05
    ("11.4", ["12"], 1.0),        # 0.6 / 12 = 0.05 exactly: <= passes
    ("12%", ["0.12"], 1.0),       # "12%" -> 12 / 100 = 0.12
    ("12%", ["12"], 0.0),         # 0.12 vs 12
    ("Yes", ["yes"], 1.0),        # case-insensitive exact match
    ("five", ["5", "five"], 1.0),  # best over the gold labels
    ("0", ["0"], 1.0),
])
def test_relaxed_shared_cases(prediction, labels, expected, mode):
    assert score("relaxed", f"<answer>{prediction}</answer>", chart(*labels), mode=mode) == expected


@pytest.mark.parametrize("prediction, label, official, lenient", [
    ("0.0", "0", 0.0, 1.0),       # gold 0 is falsy: official falls back to "0.0" == "0" -> False
    ("0.01", "0", 0.0, 0.0),      # gold 0: exact only (no relative error around zero)
    ("1,000", "1000", 0.0, 1.0),  # float("1,000") fails: official compares strings
    ("$5", "5", 0.0, 1.0),
    ("1_000", "1000", 1.0, 0.0),  # float("1_000") == 1000.0 officially; we do not read "_"
])
def test_relaxed_official_vs_lenient(prediction, label, official, lenient):
    s = chart(label)
    assert score("relaxed", f"<answer>{prediction}</answer>", s, mode="official") == official
    assert score("relaxed", f"<answer>{prediction}</answer>", s, mode="lenient") == lenient


# ---------------------------------------------------------------------------------------------
# MathVista (calculate_score.py)
# ---------------------------------------------------------------------------------------------

def mathvista(answer, answer_type, *, choices=None, precision=None, **meta):
    ours = "multiple_choice" if choices else answer_type
    return Sample(id="mv", answer=answer, answer_type=ours, choices=choices, task="mathvista",
                  meta={"question_type": "multi_choice" if choices else "free_form",
                        "mathvista_answer_type": answer_type, "precision": precision, **meta})


def test_mathvista_integer_truncates_officially():
    s = mathvista("3", "integer")
    # str(int(float("3.7"))) = "3" == "3"
    assert score("mathvista", "<answer>3.7</answer>", s, mode="official") == 1.0
    assert score("mathvista", "<answer>3.7</answer>", s, mode="lenient") == 0.0
    # int(float("-2.5")) = -2: truncation toward zero
    assert score("mathvista", "<answer>-2.5</answer>", mathvista("-2", "integer"), mode="official") == 1.0
    # "1,000" is not a float officially -> None -> wrong (a parse failure)
    res = run("mathvista", "<answer>1,000</answer>", mathvista("1000", "integer"), mode="official")
    assert res.score == 0.0 and res.info["parse_failure"]


def test_mathvista_float_rounds_to_precision():
    s = mathvista("1.5", "float", precision=1)
    # str(round(1.46, 1)) = "1.5"
    assert score("mathvista", "<answer>1.46</answer>", s, mode="official") == 1.0
    # round(1.45, 1) = 1.4 (1.45 is 1.4499999... in binary)
    assert score("mathvista", "<answer>1.45</answer>", s, mode="official") == 0.0
    # quirk: gold "0.60" with precision 2 never equals str(round(x, 2)) = "0.6"
    s2 = mathvista("0.60", "float", precision=2)
    assert score("mathvista", "<answer>0.6</answer>", s2, mode="official") == 0.0
    assert score("mathvista", "<answer>0.6</answer>", s2, mode="lenient") == 1.0


def test_mathvista_choices_compare_as_option_text():
    s = mathvista("cat", "text", choices=["dog", "cat", "cow"])
    for mode in ("official", "lenient"):
        assert score("mathvista", "<answer>(B)</answer>", s, mode=mode) == 1.0
        assert score("mathvista", "<answer>B</answer>", s, mode=mode) == 1.0
        assert score("mathvista", "<answer>cat</answer>", s, mode=mode) == 1.0
    # officially "catt" goes to the nearest option by edit distance: cat (1) < cow (3)
    assert score("mathvista", "<answer>catt</answer>", s, mode="official") == 1.0
    assert score("mathvista", "<answer>catt</answer>", s, mode="lenient") == 0.0


def test_mathvista_uses_a_records_extraction():
    s = mathvista("7", "integer", extraction="7")
    assert score("mathvista", "long response that never says it", s, mode="official") == 1.0


# ---------------------------------------------------------------------------------------------
# MMMU (eval_utils.py) and ScienceQA
# ---------------------------------------------------------------------------------------------

def mmmu_mc(answer="B"):
    return Sample(id="mm", answer=answer, answer_type="multiple_choice", choices=["p", "q", "r", "s"],
                  task="mmmu", meta={"question_type": "multiple-choice"})


def test_mmmu_multiple_choice_official():
    s = mmmu_mc("B")
    assert score("mmmu", "(B)", s, mode="official") == 1.0
    # several bracketed letters: the last one mentioned wins (rfind)
    assert score("mmmu", "Not (A), the answer is (B)", s, mode="official") == 1.0
    # quirk kept in official mode: a shotgun answer picks its last letter
    assert score("mmmu", "A B C D", mmmu_mc("D"), mode="official") == 1.0
    assert score("mmmu", "<answer>A B C D</answer>", mmmu_mc("D"), mode="lenient") == 0.0
    # nothing found: the official code guesses at random; we score 0 and count a failure
    res = run("mmmu", "no idea", s, mode="official")
    assert res.score == 0.0 and res.info["parse_failure"]


def test_mmmu_open_official():
    s = Sample(id="mo", answer="3.14159", answer_type="text", task="mmmu", meta={"question_type": "open"})
    # gold -> round(3.14159, 2) = 3.14; "so the answer is 3.14" -> key "3.14" -> [3.14]
    assert score("mmmu", "so the answer is 3.14", s, mode="official") == 1.0
    assert score("mmmu", "so the answer is 3.15", s, mode="official") == 0.0


def test_mmmu_open_gold_list_literal_official(monkeypatch):
    import rewards.verifiers.benchmarks as benchmarks
    gold = "['24/7', '3.429']"  # the hub's MMMU stores several acceptable open answers like this
    parsed = []
    real = benchmarks.ast.literal_eval
    monkeypatch.setattr(benchmarks.ast, "literal_eval", lambda text: parsed.append(text) or real(text))
    s = Sample(id="ml", answer=gold, answer_type="text", task="mmmu", meta={"question_type": "open"})
    # gold -> ['24/7', '3.429'] -> normalize_str each: '24/7' is no float -> '24/7';
    # '3.429' -> round(3.429, 2) = 3.43; so the normalised golds are ['24/7', 3.43]
    # "so the answer is 3.43" -> key "3.43" -> [3.43] -> 3.43 is a gold -> 1
    assert score("mmmu", "so the answer is 3.43", s, mode="official") == 1.0
    # "the shop is open 24/7" -> key after "is " = "open 24/7", a string containing '24/7' -> 1
    assert score("mmmu", "the shop is open 24/7", s, mode="official") == 1.0
    # "3.42" -> [3.42]: not 3.43 -> 0
    assert score("mmmu", "<answer>3.42</answer>", s, mode="official") == 0.0
    # a response that is itself a list literal is parsed by the official text rules, never as a literal
    assert score("mmmu", "<answer>['3.42']</answer>", s, mode="official") == 0.0
    assert parsed and set(parsed) == {gold}
    # the adapter's / record mapper's meta["answers"] is used as is; lenient mode takes any of them too
    s2 = Sample(id="ml", answer=gold, answer_type="text", task="mmmu",
                meta={"question_type": "open", "answers": ["24/7", "3.429"]})
    assert score("mmmu", "<answer>24/7</answer>", s2, mode="official") == 1.0
    assert score("mmmu", "<answer>3.429</answer>", s2, mode="lenient") == 1.0
    # code in a gold is no literal: it stays one string answer and runs nothing
    bad = Sample(id="mb", answer="[__import__('os').getcwd()]", answer_type="text", task="mmmu",
                 meta={"question_type": "open"})
    assert score("mmmu", "<answer>[__import__('os').getcwd()]</answer>", bad, mode="official") == 1.0


def test_scienceqa_official():
    s = Sample(id="sq", answer=1, answer_type="multiple_choice", choices=["x", "y", "z"], task="scienceqa")
    assert score("scienceqa", "B", s, mode="official") == 1.0
    assert score("scienceqa", "B. y", s, mode="official") == 1.0
    assert score("scienceqa", "The answer is B.", s, mode="official") == 1.0
    # two "The answer is" matches -> FAILED -> (official: random) -> 0 and a parse failure
    res = run("scienceqa", "The answer is A. The answer is B.", s, mode="official")
    assert res.score == 0.0 and res.info["parse_failure"]
    # letter beyond the 3 choices
    assert run("scienceqa", "The answer is D.", s, mode="official").info["parse_failure"]
    assert score("scienceqa", "<answer>y</answer>", s, mode="lenient") == 1.0


def test_math_unicode_gold_geoqa_style():
    # GeoQA writes golds as "2√{3}"; √, π, × are read as \sqrt, \pi, \times
    s = Sample(id="g", answer="2√{3}", answer_type="math")
    for response, expected in [("2\\sqrt{3}", 1.0), ("2√3", 1.0), ("\\sqrt{12}", 1.0), ("3√2", 0.0)]:
        assert score("math", f"<answer>{response}</answer>", s) == expected, response
    assert score("math", "<answer>2π</answer>", Sample(id="p", answer="2\\pi", answer_type="math")) == 1.0
