"""Image sizing for the Qwen families (Qwen2-VL, Qwen2.5-VL), through qwen-vl-utils (their own rule).

Only the Qwen path uses it: other families (Idefics3 / SmolVLM, ...) get the decoded image and
their processor sizes it by its own rule (see docs/models.md)."""
from __future__ import annotations

from PIL import Image
from qwen_vl_utils import fetch_image

from .schema import ImageRef, load_image


def fit_image(ref: ImageRef, min_pixels: int, max_pixels: int, patch_size: int = 14,
              *, where: str = "image") -> Image.Image:
    """Decode `ref` and resize it so both sides are multiples of 2*patch_size and its area lies
    in [min_pixels, max_pixels], keeping the aspect ratio (qwen_vl_utils.smart_resize)."""
    image = load_image(ref, where=where)
    return fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels},
                       image_patch_size=patch_size)
