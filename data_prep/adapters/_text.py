"""Small text helpers shared by the adapters."""
from __future__ import annotations

import ast
import re

_BARE_IMAGE_TOKEN = re.compile(r"<image>\s*")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
MARKER = re.compile(r"<image\s*(\d+)>")


def strip_bare_image_tokens(text: str) -> str:
    """Drop un-numbered `<image>` placeholders (single-image sources put one in front of the
    question); the prompt builder places the image itself. Numbered `<image N>` markers stay."""
    return _BARE_IMAGE_TOKEN.sub("", text).strip()


def unwrap_answer_tags(text: str) -> str:
    """`"<answer> 3 </answer>"` -> `"3"`; text without tags is returned stripped."""
    m = _ANSWER_TAG.search(text)
    return (m.group(1) if m else text).strip()


def is_number(text: str) -> bool:
    return bool(_NUMBER.match(text.strip().replace(",", "")))


def is_integer_text(text: str) -> bool:
    t = text.strip()
    return bool(re.fullmatch(r"[+-]?\d+", t))


def literal_list(text: str, max_chars: int = 20_000) -> list | None:
    """A string holding a Python/JSON list literal -> the list, parsed with `ast.literal_eval`
    (never `eval`). None when the text is not such a literal. Long inputs are refused before
    parsing: literal_eval still builds an AST, and a hostile string could be made huge."""
    if not isinstance(text, str) or len(text) > max_chars:
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None
