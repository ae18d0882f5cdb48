"""Samples -> model-ready prompts, encoded once and shared by the rollout engine and the learner.

Each image is decoded and sized exactly once per prompt; the processor output (token ids, pixel
patches, grid sizes) is kept on the `Prompt`, so the learner never re-decodes or re-resizes what
the rollout engine saw. Two paths: the Qwen families (Qwen2-VL, Qwen2.5-VL) size images with
qwen-vl-utils to data.min_pixels/max_pixels and keep flat patches + grid sizes; every other family
(`uses_qwen_sizing` false) gets the images as decoded and its own processor sizes them (Idefics3:
longest edge, tiles), its tensors kept as the processor returns them (`Prompt.image_inputs`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_prep.prompts import build_messages, image_order
from data_prep.schema import Sample, load_image
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
    image_inputs: dict | None = None
    """Non-Qwen families: this prompt's image tensors as its processor returns them for a batch of
    one prompt (Idefics3: pixel_values [1, tiles, 3, H, W] and pixel_attention_mask [1, tiles, H, W]),
    the keyword arguments of the model's `get_image_features`. None on the Qwen path (which uses
    pixel_values / image_grid_thw) and for a text-only prompt."""


def uses_qwen_sizing(processor) -> bool:
    """Whether images take the Qwen path: an image processor that cuts dynamic-resolution images
    into patch x merge grids (Qwen2-VL, Qwen2.5-VL) is sized by qwen-vl-utils; any other family's
    processor sizes images by its own rule."""
    image_processor = getattr(processor, "image_processor", None)
    return hasattr(image_processor, "merge_size") and hasattr(image_processor, "patch_size")


def keep_fitted_size(processor) -> dict:
    """Processor keyword arguments that keep `fit_image`'s size (qwen-vl-utils' rule, multiples of
    patch x merge). Without them a Qwen-style image processor resizes the images again to its own
    min/max pixels, silently overriding data.min_pixels/max_pixels. Every engine that runs the
    processor itself (vLLM) must pass the same, or its prompts differ from the learner's."""
    return {"do_resize": False} if uses_qwen_sizing(processor) else {}


def encode_prompts(processor, samples: list[Sample], style: str, min_pixels: int, max_pixels: int,
                   system_prompt: str | None = None) -> list[Prompt]:
    """Build, template, size and tokenise a batch of samples (one processor call on the Qwen path,
    one per prompt on the generic path). `min_pixels`/`max_pixels` apply to the Qwen path only."""
    if not uses_qwen_sizing(processor):
        return [_encode_with_own_sizing(processor, s, style, system_prompt) for s in samples]
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


def _encode_with_own_sizing(processor, sample: Sample, style: str, system_prompt: str | None) -> Prompt:
    """One prompt for a family that sizes images itself: its processor gets the decoded images and
    returns the token ids (placeholders expanded its way) and the image tensors its model takes."""
    messages = build_messages(sample, style, system_prompt)
    images = [load_image(sample.images[i], where=f"{sample.task} record {sample.id!r} field images[{i}]")
              for i in image_order(messages)]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[images] if images else None, padding=False, return_tensors="pt")
    image_inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    type_ids = enc.get("mm_token_type_ids")
    return Prompt(sample=sample, messages=messages, text=text, images=images, input_ids=enc["input_ids"][0],
                  mm_token_type_ids=None if type_ids is None else type_ids[0], pixel_values=None,
                  image_grid_thw=None, image_inputs=image_inputs if images else None)
