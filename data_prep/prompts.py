"""Sample -> chat messages, in the three prompt styles the configs name.

The messages use the Hugging Face multimodal chat format that Qwen2-VL's chat template and
`qwen_vl_utils.process_vision_info` both read: a user turn whose `content` is a list of
`{"type": "image"}` and `{"type": "text"}` parts. Images are placed where the question's
`<image N>` markers say (MMMU style); without markers they all go before the text.
"""
from __future__ import annotations

import re

from .schema import Sample

STYLE_INSTRUCTIONS = {
    "r1": ("Think about the problem inside <think> </think> tags, then give only the final "
           "answer inside <answer> </answer> tags."),
    "boxed": "Reason step by step, then put the final answer in \\boxed{}.",
    "direct": "Answer with only the final answer.",
}
_MARKER = re.compile(r"<image\s*(\d+)>")


def format_choices(choices: list) -> str:
    """`["3", "4"]` -> "A. 3\nB. 4" (letters in order, as the benchmarks print them)."""
    return "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))


def question_text(sample: Sample) -> str:
    """The question with its hint, choices and unit placed as the sources intend."""
    parts = []
    hint = sample.meta.get("hint")
    if hint:
        parts.append(f"Hint: {hint}")
    parts.append(sample.question.strip())
    if sample.choices:
        parts.append("Choices:\n" + format_choices(sample.choices))
    unit = sample.meta.get("unit")
    if unit and sample.answer_type in ("integer", "float"):
        parts.append(f"(Unit: {unit})")
    return "\n".join(parts)


def build_messages(sample: Sample, style: str = "r1", system_prompt: str | None = None) -> list[dict]:
    """Chat messages for one sample. `style` is one of STYLE_INSTRUCTIONS."""
    if style not in STYLE_INSTRUCTIONS:
        raise ValueError(f"unknown prompt style {style!r}, supported: {sorted(STYLE_INSTRUCTIONS)}")
    text = question_text(sample) + "\n" + STYLE_INSTRUCTIONS[style]
    n_images = len(sample.images)
    content: list[dict] = []
    markers = list(_MARKER.finditer(text))
    if markers and n_images:
        used = set()
        cursor = 0
        for m in markers:
            index = int(m.group(1)) - 1
            if not 0 <= index < n_images:
                raise ValueError(f"{sample.task}: record {sample.id!r}: field 'question': marker "
                                 f"{m.group(0)!r} but the record has {n_images} image(s)")
            if text[cursor:m.start()].strip():
                content.append({"type": "text", "text": text[cursor:m.start()]})
            content.append({"type": "image", "image_index": index})
            used.add(index)
            cursor = m.end()
        if text[cursor:].strip():
            content.append({"type": "text", "text": text[cursor:]})
        # Images the text never points at still belong to the prompt; put them first.
        content = [{"type": "image", "image_index": i} for i in range(n_images) if i not in used] + content
    else:
        content = [{"type": "image", "image_index": i} for i in range(n_images)]
        content.append({"type": "text", "text": text})
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages


def image_order(messages: list[dict]) -> list[int]:
    """The sample's image indices in the order the prompt shows them (one entry per image part)."""
    return [part["image_index"] for m in messages for part in m["content"]
            if part.get("type") == "image"]
