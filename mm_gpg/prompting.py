"""Samples -> model-ready prompts, encoded once and shared by the rollout engine and the learner.

Each image is decoded and sized (qwen-vl-utils) exactly once per prompt; the processor output
(token ids, pixel patches, grid sizes) is kept on the `Prompt`, so the learner never re-decodes
or re-resizes what the rollout engine saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_prep.prompts import build_messages, image_order
from data_prep.schema import Sample
from data_prep.vision import fit_image


@dataclass
class Prompt:
    sample: Sample
    messages: list
    text: str
    images: list
    """Sized PIL images, in prompt order (what a vLLM engine is given)."""
    input_ids: torch.Tensor
    """[L] token ids of the chat-templated prompt, image placeholders expanded."""
    mm_token_type_ids: torch.Tensor | None
    pixel_values: torch.Tensor | None
    """[patches, patch_dim] for this prompt's images, or None for a text-only prompt."""
    image_grid_thw: torch.Tensor | None
    """[n_images, 3]."""


def keep_fitted_size(processor) -> dict:
    """Processor keyword arguments that keep `fit_image`'s size (qwen-vl-utils' rule, multiples of
    patch x merge). Without them a Qwen-style image processor resizes the images again to its own
    min/max pixels, silently overriding data.min_pixels/max_pixels. Every engine that runs the
    processor itself (vLLM) must pass the same, or its prompts differ from the learner's."""
    return {"do_resize": False} if hasattr(processor.image_processor, "merge_size") else {}


def encode_prompts(processor, samples: list[Sample], style: str, min_pixels: int, max_pixels: int,
                   system_prompt: str | None = None) -> list[Prompt]:
    """Build, template, size and tokenise a batch of samples (one processor call)."""
    patch = getattr(processor.image_processor, "patch_size", 14)
    messages, texts, images = [], [], []
    for s in samples:
        m = build_messages(s, style, system_prompt)
        ims = [fit_image(s.images[i], min_pixels, max_pixels, patch,
                         where=f"{s.task} record {s.id!r} field images[{i}]") for i in image_order(m)]
        messages.append(m)
        texts.append(processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False))
        images.append(ims)
    flat = [im for ims in images for im in ims]
    enc = processor(text=texts, images=flat or None, padding=False, return_tensors=None,
                    **(keep_fitted_size(processor) if flat else {}))
    pixel_chunks = [None] * len(samples)
    grid_chunks = [None] * len(samples)
    if flat:
        grid = torch.as_tensor(enc["image_grid_thw"])
        pixels = torch.as_tensor(enc["pixel_values"])
        rows = torch.split(pixels, grid.prod(-1).tolist())
        cursor = 0
        for k, ims in enumerate(images):
            if ims:
                pixel_chunks[k] = torch.cat(rows[cursor:cursor + len(ims)])
                grid_chunks[k] = grid[cursor:cursor + len(ims)]
            cursor += len(ims)
    type_ids = enc.get("mm_token_type_ids")
    return [Prompt(sample=s, messages=m, text=t, images=ims,
                   input_ids=torch.as_tensor(enc["input_ids"][k]),
                   mm_token_type_ids=None if type_ids is None else torch.as_tensor(type_ids[k]),
                   pixel_values=pixel_chunks[k], image_grid_thw=grid_chunks[k])
            for k, (s, m, t, ims) in enumerate(zip(samples, messages, texts, images))]
