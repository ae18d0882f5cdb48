"""`vqa`: VQAv2 soft accuracy, `min(1, matches / 3)` averaged over the 10 leave-one-out subsets.

`official` follows GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py` as on
its master branch (the commit "Fixed processing answers bug", the file the VQAv2 numbers come
from), quirks included:

- the prediction (the response as written, `extract.official_text`) and every gold answer:
  newlines/tabs -> spaces, stripped;
- *only when the gold answers are not unanimous* (`len(set(answers)) > 1`) do the prediction and
  the gold answers go through `processPunctuation` and then `processDigitArticle` (lower-case,
  number words zero..ten and "none" -> digits, articles dropped, contractions restored). With
  ten identical answers the stripped prediction is compared as it is: "Yes" scores 0 against
  ten "yes", and "two" scores 1 against ten "two" but 0 against ten "2";
- `processPunctuation` decides remove-vs-space per mark by looking at the *original* text, and its
  period regex `(?!<=\\d)(\\.)(?!\\d)` is a lookahead typo (any "." not before a digit goes) whose
  `sub` gets `re.UNICODE` (= 32) as its *count*, so at most 32 periods are removed.

(The Python 3 port on the repository's `feature/update_style` branch normalises the prediction
always and the gold answers by punctuation only; it is not the one the published numbers use.)

`lenient` normalises the prediction and every gold answer the same way (both steps) before the
same leave-one-out average. Gold answers: `meta["answers"]` (strings or the hub's
`{"answer": ...}` dicts), else `answer` when it is a list, else `[answer]`.
"""
from __future__ import annotations

import re

from data_prep.schema import Sample

from ..extract import extract_answer, official_text
from ..registry import register_verifier
from ._common import result, unparsed

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")   # sic: the official typo, kept on purpose
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_COUNT = int(re.UNICODE)                # sic: passed as `count` by the official code


def process_punctuation(text: str) -> str:
    """The official `processPunctuation` rule."""
    out = text
    comma_in_number = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or comma_in_number:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle` rule."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def gold_answers(sample: Sample) -> list[str]:
    answers = sample.meta.get("answers")
    if answers is None:
        answers = sample.answer if isinstance(sample.answer, (list, tuple)) else [sample.answer]
    out = []
    for a in answers:
        if isinstance(a, dict):
            a = a.get("answer", "")
        out.append("" if a is None else str(a))
    if not out:
        raise ValueError(f"vqa: sample {sample.id!r}: no gold answers (meta['answers'] or answer)")
    return out


def soft_accuracy(prediction: str, answers: list[str]) -> float:
    """Mean over the leave-one-out subsets of `min(1, matches / 3)` (one subset per answer)."""
    total = 0.0
    for left_out in range(len(answers)):
        matches = sum(1 for k, a in enumerate(answers) if k != left_out and a == prediction)
        total += min(1.0, matches / 3)
    return total / len(answers)


def vqa_official(prediction: str, answers: list[str]) -> float:
    def clean(text: str) -> str:
        return text.replace("\n", " ").replace("\t", " ").strip()
    pred, answers = clean(prediction), [clean(a) for a in answers]
    if len(set(answers)) > 1:  # unanimous answers: both sides compared as written
        pred = process_digit_article(process_punctuation(pred))
        answers = [process_digit_article(process_punctuation(a)) for a in answers]
    return soft_accuracy(pred, answers)


def vqa_lenient(prediction: str, answers: list[str]) -> float:
    def norm(text: str) -> str:
        text = " ".join(text.replace("’", "'").split())
        return process_digit_article(process_punctuation(text)).strip()
    return soft_accuracy(norm(prediction), [norm(a) for a in answers])


@register_verifier("vqa")
def vqa(response: str, sample: Sample, mode: str = "lenient"):
    ex = extract_answer(response)
    if ex.text is None:
        return unparsed("vqa", ex, ex.rule)
    if ex.ambiguous:
        return result("vqa", 0.0, ex, reason="several different answers")
    answers = gold_answers(sample)
    if mode == "official":
        return result("vqa", vqa_official(official_text(response, ex), answers), ex, mode=mode)
    return result("vqa", vqa_lenient(ex.text, answers), ex, mode=mode)
