"""Answer extraction shared by all verifiers.

The final answer is taken from, in order of preference:

1. `answer_tag`: the `<answer>…</answer>` span (a `\\boxed{}` inside it is unwrapped);
2. `boxed`: the last brace-balanced `\\boxed{…}` / `\\fbox{…}` after the `<think>` part;
3. `answer_is`: "the answer is …" / "final answer: …" (the rest of that line);
4. `last_line`: the last non-empty line after the `<think>` part.

math-verify alone misses a bare number directly inside `<answer>140</answer>`, and parsing a
whole response can pick a number out of the reasoning, hence the span comes first. Every scan is
linear in the response length (1 MB responses and 10,000 nested braces are fine), and an
extracted answer longer than MAX_ANSWER_CHARS is refused (rule `too_long`), so no verifier ever
sees an unbounded string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 2000
"""Longest extracted answer a verifier will look at; longer is a parse failure."""

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?", re.I)


@dataclass
class Extraction:
    """What the response's final answer is and which rule found it."""

    text: str | None
    """The answer text (stripped), or None when nothing usable was found."""
    rule: str
    """`answer_tag`, `boxed`, `answer_is`, `last_line`, `too_long` or `none`."""
    n_candidates: int = 1
    """How many *different* answers the chosen rule found (more than 1: a shotgun response)."""

    @property
    def ambiguous(self) -> bool:
        return self.n_candidates > 1


def find_boxed(text: str) -> list[str]:
    """Contents of the top-level, brace-balanced `\\boxed{…}` and `\\fbox{…}` in `text`, in order.

    One linear pass with a brace stack; an unclosed box is ignored; boxes nested inside a box
    belong to their outer box.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    found: list[str] = []
    stack: list[int] = []          # for each open brace: start of box content, or -1
    for m in _BOX_OPEN.finditer(text):
        token = m.group(0)
        if token == "}":
            if stack:
                start = stack.pop()
                if start >= 0 and not any(s >= 0 for s in stack):
                    found.append(text[start:m.start()])
        elif token == "{":
            stack.append(-1)
        else:  # \boxed{
            stack.append(m.end())
    return found


def answer_tag_spans(text: str) -> list[str]:
    """Contents of every complete `<answer>…</answer>` span, in order (linear scan)."""
    spans: list[str] = []
    pos = 0
    while True:
        start = text.find("<answer>", pos)
        if start < 0:
            break
        end = text.find("</answer>", start + 8)
        if end < 0:
            break
        # An inner "<answer>" means the first one was never closed; the span starts at the last.
        inner = text.rfind("<answer>", start + 8, end)
        if inner >= 0:
            start = inner
        spans.append(text[start + 8:end])
        pos = end + 9
    return spans


def after_think(text: str) -> str:
    """The part of the response after the reasoning (`</think>`), or all of it."""
    cut = text.rfind("</think>")
    return text[cut + 8:] if cut >= 0 else text


def official_text(response: str, ex: "Extraction") -> str:
    """What an official scorer is handed: the `<answer>` / `\\boxed{}` content when the response
    has one (the official pipelines extract first), else the response after its `</think>` part
    *as written*. Not stripped: the official scorers see trailing newlines and spaces, and some
    of them (ChartQA's lower-cased comparison, MMMU's `" B "` search) score differently for it."""
    if ex.text is not None and ex.rule in ("answer_tag", "boxed"):
        return ex.text
    return after_think(response if isinstance(response, str) else "" if response is None else str(response))


def _distinct(items: list[str]) -> list[str]:
    """The different answers among `items` (whitespace-insensitive), in order of their last
    appearance, each as written (stripped)."""
    seen: dict[str, str] = {}
    for item in items:
        key = " ".join(item.split())
        if key:
            seen.pop(key, None)
            seen[key] = item.strip()
    return list(seen.values())


def _unwrap_boxed(span: str) -> str:
    boxes = _distinct(find_boxed(span))
    return boxes[-1] if len(boxes) == 1 else span


def _bounded(text: str | None, rule: str, n: int = 1) -> Extraction:
    if text is None:
        return Extraction(None, "none", 0)
    text = text.strip()
    if not text:
        return Extraction(None, "none", 0)
    if len(text) > MAX_ANSWER_CHARS:
        return Extraction(None, "too_long", 0)
    return Extraction(text, rule, n)


def extract_answer(response: str) -> Extraction:
    """The final answer of `response` and the rule that found it (see the module docstring)."""
    if not isinstance(response, str):
        response = "" if response is None else str(response)
    spans = [_unwrap_boxed(s) for s in answer_tag_spans(response)]
    spans = _distinct(spans)
    if spans:
        return _bounded(spans[-1], "answer_tag", len(spans))
    tail = after_think(response)
    boxes = _distinct(find_boxed(tail))
    if boxes:
        return _bounded(boxes[-1], "boxed", len(boxes))
    last = None
    for last in _ANSWER_IS.finditer(tail):
        pass
    if last is not None:
        rest = tail[last.end():last.end() + MAX_ANSWER_CHARS + 1]
        line = rest.split("\n", 1)[0].strip()
        if line:
            return _bounded(line, "answer_is")
    stripped = tail.rstrip()
    if not stripped:
        return Extraction(None, "none", 0)
    cut = stripped.rfind("\n")
    return _bounded(stripped[cut + 1:], "last_line")
