"""Build the embedded tiny vision-language models: real architectures, random weights, locally
trained tokenizers.

Nothing can be downloaded where this project is built, so the default run and the tests use models
made here. Each family is transformers' own model class built from a small config, a byte-level
BPE tokenizer trained on the synthetic tasks' text with every special token of that family, the
family's chat template and its real processor class, all saved with `save_pretrained`. The result
loads through exactly the code that loads the hub checkpoint it imitates
(`mm_gpg.policy.load_policy`, transformers' Auto classes).

Families (`model.tiny_family`, `mm-gpg init-tiny --family`): `qwen2_vl` (Qwen2-VL),
`qwen2_5_vl` (Qwen2.5-VL: windowed vision attention, SwiGLU vision blocks) and `idefics3`
(Idefics3 / SmolVLM: SigLIP tower, pixel-shuffle connector, Llama text model).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from data_prep.registry import Registry

from .checkpoint import save_hf

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# The Qwen2-VL chat format: ChatML turns, a default system turn, and each image as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad per image patch).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenisation split pattern (contractions, letters, single digits, punctuation, spaces).
# The Idefics3 tiny model uses it too: its real tokenizers (Llama 3's, SmolLM's) split alike.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Idefics3 / SmolVLM special tokens: the turn markers, the end of a turn, and the image scaffolding
# its processor writes around each image (a tile grid tagged <row_i_col_j>, then <global-img>).
IDEFICS3_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
    "<global-img>", *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]

# The Idefics3 / SmolVLM chat format: "<|im_start|>User:<image>question<end_of_utterance>\n"
# then "Assistant:", roles capitalised, a space after the colon unless an image follows it.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# The words of each family's chat format, learnt as tokens. The Qwen list is exactly what the
# embedded Qwen2-VL was always built with: a different corpus gives a different tokenizer and so a
# different random model, and the default run's measured figures are that model's.
QWEN_CHAT_WORDS = ("system", "user", "assistant")
IDEFICS3_CHAT_WORDS = ("system", "user", "assistant", "User:", "Assistant:")

TINY_SIZES = {
    "text": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "vision": dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2),
}


def _training_corpus(chat_words: tuple[str, ...]) -> list[str]:
    """Text the tokenizer is trained on: the chat scaffolding, every prompt style and the
    synthetic tasks' questions and answers, so that common phrases become few tokens."""
    from data_prep.prompts import STYLE_INSTRUCTIONS, build_messages, question_text
    from data_prep.registry import load_source

    corpus = ["You are a helpful assistant.", *chat_words,
              "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "The answer is"]
    corpus += list(STYLE_INSTRUCTIONS.values())
    for sample in load_source("synthetic", size=200):
        corpus.append(question_text(sample))
        corpus.append(f"<think>{sample.answer}</think><answer>{sample.answer}</answer>")
    corpus += [str(i) for i in range(1000)] + list("ABCDEFGH")
    return corpus * 3


def train_byte_bpe(special_tokens: list[str], chat_words: tuple[str, ...], vocab_size: int = 512):
    """A byte-level BPE (a `tokenizers.Tokenizer`) trained on `_training_corpus`, with
    `special_tokens` first in the vocabulary: the shared core of every family's tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_training_corpus(chat_words), trainer=trainer)
    return bpe


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE with the Qwen special tokens, wrapped as transformers' Qwen2 tokenizer."""
    from transformers import Qwen2TokenizerFast

    tokenizer = Qwen2TokenizerFast(tokenizer_object=train_byte_bpe(QWEN_SPECIAL_TOKENS, QWEN_CHAT_WORDS, vocab_size),
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                                   bos_token=None, errors="replace", clean_up_tokenization_spaces=False,
                                   model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tokenizer


def _text_config(tokenizer, bos: str, eos: str, pad: str, **extra) -> dict:
    """The tiny language model's config (every family's text model has these keys)."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(**TINY_SIZES["text"], vocab_size=len(tokenizer), max_position_embeddings=2048,
                bos_token_id=ids(bos), eos_token_id=ids(eos), pad_token_id=ids(pad),
                tie_word_embeddings=True, **extra)


def _finish(model, tokenizer, end_of_turn: str, pad: str) -> None:
    """Generation stops at the end of a turn (or the end of text), and pads with `pad`."""
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config.eos_token_id = [ids(end_of_turn), ids("<|endoftext|>")]
    model.generation_config.pad_token_id = ids(pad)


TinyBuilder = Callable[[Path, int, int], Path]
TINY_BUILDERS: Registry[TinyBuilder] = Registry("tiny model family")
"""family name -> `(out_dir, seed, image_pixels) -> path`: what `build_tiny` can build."""


def _build_qwen_vl(out: Path, seed: int, image_pixels: int, config_class, model_class, processor_class,
                   vision_config: dict) -> Path:
    """Qwen2-VL and Qwen2.5-VL share the tokenizer, chat template, mrope text model and image
    processor; they differ in the vision tower (`vision_config`) and their classes."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    head_dim = TINY_SIZES["text"]["hidden_size"] // TINY_SIZES["text"]["num_attention_heads"]
    # mrope splits the rotary half-dimension into temporal / height / width sections.
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    config = config_class(
        text_config=_text_config(tokenizer, "<|endoftext|>", "<|im_end|>", "<|endoftext|>",
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": mrope}),
        vision_config=dict(**vision_config, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    _finish(model, tokenizer, "<|im_end|>", "<|endoftext|>")
    image_processor = Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels,
                                            patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2VL_CHAT_TEMPLATE)
    return save_hf(model, processor, out)


@TINY_BUILDERS.register("qwen2_vl")
def build_tiny_qwen2_vl(out: Path, seed: int, image_pixels: int) -> Path:
    """Qwen2-VL: a ViT with 2-D rotary positions whose merger folds 2x2 patches into one token."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    vision = dict(**TINY_SIZES["vision"], hidden_size=TINY_SIZES["text"]["hidden_size"])
    return _build_qwen_vl(out, seed, image_pixels, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                          Qwen2VLProcessor, vision)


@TINY_BUILDERS.register("qwen2_5_vl")
def build_tiny_qwen2_5_vl(out: Path, seed: int, image_pixels: int) -> Path:
    """Qwen2.5-VL: the same token layout as Qwen2-VL; its tower has SwiGLU MLPs, RMSNorm and
    windowed attention with full attention only in the `fullatt_block_indexes` blocks (here the
    last of two, so both kinds run) and an explicit output width (`out_hidden_size`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    v = TINY_SIZES["vision"]
    vision = dict(hidden_size=v["embed_dim"], depth=v["depth"], num_heads=v["num_heads"],
                  intermediate_size=v["embed_dim"] * v["mlp_ratio"],
                  out_hidden_size=TINY_SIZES["text"]["hidden_size"], window_size=56,
                  fullatt_block_indexes=[v["depth"] - 1])
    return _build_qwen_vl(out, seed, image_pixels, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor, vision)


# Idefics3's vision tower sees square tiles of this side; its processor resizes an image so its
# longest edge is at most IDEFICS3_IMAGE_EDGE and cuts it into tiles of IDEFICS3_TILE (plus one
# downscaled whole-image tile), its own sizing rule, as SmolVLM's does with 4 x 364 and 364.
IDEFICS3_TILE = 64
IDEFICS3_IMAGE_EDGE = 2 * IDEFICS3_TILE


@TINY_BUILDERS.register("idefics3")
def build_tiny_idefics3(out: Path, seed: int, image_pixels: int) -> Path:
    """Idefics3 / SmolVLM: a SigLIP-style ViT on fixed-size tiles, a connector that pixel-shuffles
    `scale_factor`^2 patches into one token and projects them, and a Llama text model. Each tile
    becomes (tile / patch)^2 / scale_factor^2 `<image>` tokens (here 16). `image_pixels` is not
    used: this family sizes images by its processor's longest-edge rule."""
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor, PreTrainedTokenizerFast)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_byte_bpe(IDEFICS3_SPECIAL_TOKENS, IDEFICS3_CHAT_WORDS), bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", pad_token="<|endoftext|>", unk_token=None,
        clean_up_tokenization_spaces=False, model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": IDEFICS3_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
    v = TINY_SIZES["vision"]
    patch, scale = 8, 2
    config = Idefics3Config(
        text_config=dict(_text_config(tokenizer, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>"),
                         model_type="llama", rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        vision_config=dict(hidden_size=v["embed_dim"], intermediate_size=v["embed_dim"] * v["mlp_ratio"],
                           num_hidden_layers=v["depth"], num_attention_heads=v["num_heads"],
                           image_size=IDEFICS3_TILE, patch_size=patch),
        scale_factor=scale, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    _finish(model, tokenizer, "<end_of_utterance>", "<|endoftext|>")
    image_processor = Idefics3ImageProcessor(size={"longest_edge": IDEFICS3_IMAGE_EDGE},
                                             max_image_size={"longest_edge": IDEFICS3_TILE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=(IDEFICS3_TILE // patch) ** 2 // scale ** 2,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    return save_hf(model, processor, out)


TINY_FAMILIES = tuple(TINY_BUILDERS.names())
"""The architectures `build_tiny` can build (`model.tiny_family`, `mm-gpg init-tiny --family`)."""


def build_tiny(out_dir: str | os.PathLike, seed: int = 0, image_pixels: int = 112 * 112,
               family: str = "qwen2_vl") -> Path:
    """Write a tiny `family` checkpoint (model + processor) to `out_dir` and return its path.

    `image_pixels`: the image area the Qwen processors size to by default (the other families'
    processors keep their own sizing rule). Written to a temporary sibling and renamed (`save_hf`),
    so a half-built model is never taken for one.
    """
    return TINY_BUILDERS.get(family)(Path(out_dir), seed, image_pixels)
