"""Format rewards: the R1 style `<think>…</think><answer>…</answer>` and the `\\boxed{}` style."""
from __future__ import annotations

from data_prep.schema import Sample

from ..extract import after_think, find_boxed
from ..registry import register_verifier
from ..result import RewardResult

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def r1_format_ok(response: str) -> tuple[bool, str]:
    """True when the response is exactly `<think>R</think> <answer>A</answer>` (whitespace
    around and between allowed, each tag exactly once, A non-empty), with the reason if not."""
    text = response.strip()
    for tag in _TAGS:
        n = text.count(tag)
        if n != 1:
            return False, f"{tag} appears {n} times"
    a, b, c, d = (text.find(tag) for tag in _TAGS)
    if a != 0:
        return False, "text before <think>"
    if not a < b < c < d:
        return False, "tags out of order"
    if text[b + len("</think>"):c].strip():
        return False, "text between </think> and <answer>"
    if d + len("</answer>") != len(text):
        return False, "text after </answer>"
    if not text[c + len("<answer>"):d].strip():
        return False, "empty answer"
    return True, "ok"


@register_verifier("format_r1")
def format_r1(response: str, sample: Sample) -> RewardResult:
    ok, reason = r1_format_ok(response)
    return RewardResult(float(ok), {"format_r1": float(ok)}, {"reason": reason})


@register_verifier("format_boxed")
def format_boxed(response: str, sample: Sample) -> RewardResult:
    """1 when the text after the reasoning holds non-empty `\\boxed{}` answer(s) that all agree."""
    boxes = {" ".join(b.split()) for b in find_boxed(after_think(response))}
    boxes.discard("")
    ok = len(boxes) == 1
    reason = "ok" if ok else ("no boxed answer" if not boxes else "several different boxed answers")
    return RewardResult(float(ok), {"format_boxed": float(ok)}, {"reason": reason})
