"""Build the embedded tiny Qwen2-VL: real architecture, random weights, a locally trained tokenizer.

Nothing can be downloaded where this project is built, so the default run and the tests use a
model made here. It is transformers' own `Qwen2VLForConditionalGeneration` built from a small
config, a byte-level BPE tokenizer trained on the synthetic tasks' text with every Qwen special
token, the Qwen2-VL chat template and a `Qwen2VLProcessor`, all saved with `save_pretrained`.
The result loads through exactly the code that loads `Qwen/Qwen2-VL-2B-Instruct`
(`mm_gpg.policy.load_policy`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

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
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TINY_FAMILIES = ("qwen2_vl",)
"""The architectures `build_tiny` can build (`model.tiny_family`, `mm-gpg init-tiny --family`)."""

TINY_SIZES = {
    "text": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "vision": dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2),
}


def _training_corpus() -> list[str]:
    """Text the tokenizer is trained on: the chat scaffolding, every prompt style and the
    synthetic tasks' questions and answers, so that common phrases become few tokens."""
    from data_prep.prompts import STYLE_INSTRUCTIONS, build_messages, question_text
    from data_prep.registry import load_source

    corpus = ["You are a helpful assistant.", "system", "user", "assistant",
              "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "The answer is"]
    corpus += list(STYLE_INSTRUCTIONS.values())
    for sample in load_source("synthetic", size=200):
        corpus.append(question_text(sample))
        corpus.append(f"<think>{sample.answer}</think><answer>{sample.answer}</answer>")
    corpus += [str(i) for i in range(1000)] + list("ABCDEFGH")
    return corpus * 3


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE with the Qwen special tokens, wrapped as transformers' Qwen2 tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, bos_token=None,
                                   errors="replace", clean_up_tokenization_spaces=False,
                                   model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny(out_dir: str | os.PathLike, seed: int = 0, image_pixels: int = 112 * 112) -> Path:
    """Write a tiny Qwen2-VL checkpoint (model + processor) to `out_dir` and return its path.

    Written to a temporary sibling and renamed, so a half-built model is never taken for one.
    """
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    head_dim = TINY_SIZES["text"]["hidden_size"] // TINY_SIZES["text"]["num_attention_heads"]
    # mrope splits the rotary half-dimension into temporal / height / width sections.
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    config = Qwen2VLConfig(
        text_config=dict(**TINY_SIZES["text"], vocab_size=len(tokenizer), max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True),
        vision_config=dict(**TINY_SIZES["vision"], hidden_size=TINY_SIZES["text"]["hidden_size"],
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels,
                                            patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(),
                                 chat_template=QWEN2VL_CHAT_TEMPLATE)
    return save_hf(model, processor, out)
