"""The policy: model + processor loading, trainable-parameter choice, and completion log-probs.

One loading path serves a hub id (`Qwen/Qwen2-VL-2B-Instruct`) and a local directory (the
embedded tiny model): transformers' Auto classes for image-text-to-text models.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field

import torch

# Parameter-name fragments that identify the vision tower and its projector across HF VLMs (the
# projector is tested first: it sits inside the tower in Qwen). Qwen2-VL / Qwen2.5-VL: the tower is
# `visual.*`, its projector `visual.merger`; Idefics3 / SmolVLM: `vision_model` and `connector`
# (pixel shuffle + linear); LLaVA-style: `vision_tower` and `multi_modal_projector`.
PROJECTOR_KEYS = ("visual.merger", "connector", "multi_modal_projector", "mm_projector")
VISION_KEYS = ("visual.", "vision_tower", "vision_model")


def model_part(parameter_name: str) -> str:
    """'projector', 'vision_tower' or 'language_model': which part a parameter belongs to, by the
    fragments above (everything that is neither is the language model: embeddings, decoder, head)."""
    if any(k in parameter_name for k in PROJECTOR_KEYS):
        return "projector"
    if any(k in parameter_name for k in VISION_KEYS):
        return "vision_tower"
    return "language_model"


@dataclass
class Policy:
    model: torch.nn.Module
    processor: object
    blocked_tokens: torch.Tensor
    """[vocab] bool: tokens never sampled and masked identically in the learner (every special
    or unused id except end-of-turn)."""
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int = 0

    @property
    def tokenizer(self):
        return self.processor.tokenizer


# A chat turn ends with the first of these the vocabulary has (Qwen's ChatML, Idefics3 / SmolVLM);
# otherwise with the tokenizer's eos token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_utterance>")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_policy(name_or_path: str, dtype: str = "auto", attn_implementation: str | None = "auto",
                device: str | torch.device | None = None) -> Policy:
    """Load an image-text-to-text model and its processor from a hub id or a local directory.

    `device`: where the model goes (None: it stays on the CPU). `dtype` and `attn_implementation`
    `auto` are resolved for that device (see mm_gpg.device): bf16 and flash-attn or SDPA on a GPU,
    float32 and SDPA on the CPU. A caller that lets another place the model (the learner:
    DeepSpeed) passes the values resolved for where it will run."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .device import resolve_attn_implementation, resolve_dtype

    if not os.path.isdir(name_or_path) and (not _HUB_ID.match(name_or_path) or os.path.exists(name_or_path)):
        raise FileNotFoundError(f"model.path: {name_or_path!r} is not a directory (and not a hub id "
                                "of the form owner/name)")
    target = torch.device("cpu") if device is None else torch.device(device)
    dtype = resolve_dtype(dtype, target)
    attn = resolve_attn_implementation(attn_implementation or "auto", target, dtype)
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=getattr(torch, dtype),
                                                        attn_implementation=attn)
    if device is not None:
        model.to(target)
    processor = AutoProcessor.from_pretrained(name_or_path)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"  # generation pads on the left; the learner builds its own batches
    vocab = tokenizer.get_vocab()
    eos = next((vocab[t] for t in END_OF_TURN_TOKENS if t in vocab), tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    vocab_rows = model.get_output_embeddings().weight.shape[0]
    return Policy(model=model, processor=processor, blocked_tokens=blocked_token_mask(tokenizer, vocab_rows, eos),
                  eos_token_ids=[eos], pad_token_id=pad)


def blocked_token_mask(tokenizer, vocab_rows: int, end_of_turn_id: int) -> torch.Tensor:
    """[vocab_rows] bool, True for every special/added-special token and every embedding row the
    tokenizer never produces (checkpoints pad the vocabulary), except end-of-turn.

    Sampling a vision placeholder breaks the learner's forward ("image features and image tokens
    do not match"), and sampling any of them is off-distribution for a verifiable answer."""
    blocked = torch.zeros(vocab_rows, dtype=torch.bool)
    blocked[len(tokenizer):] = True
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for token_id in special:
        if token_id < vocab_rows:
            blocked[token_id] = True
    blocked[end_of_turn_id] = False
    return blocked


def set_trainable(model: torch.nn.Module, language_model: bool = True, projector: bool = False,
                  vision_tower: bool = False) -> dict[str, int]:
    """Freeze or unfreeze the three parts; returns the trainable parameter count per part.

    Uses `requires_grad_(False)` on each parameter: the official GPG code assigned
    `model.visual.requires_grad_ = False`, which replaces the method and freezes nothing."""
    counts = {"language_model": 0, "projector": 0, "vision_tower": 0}
    wanted = {"language_model": language_model, "projector": projector, "vision_tower": vision_tower}
    for name, param in model.named_parameters():
        part = model_part(name)
        flag = wanted[part]
        param.requires_grad_(flag)
        counts[part] += param.numel() if flag else 0
    if not any(counts.values()):
        raise ValueError("no trainable parameters: enable at least one of language_model, projector, vision_tower")
    return counts


def vision_is_trainable(model: torch.nn.Module) -> bool:
    """Whether the image features need gradients: the tower or its projector trains (in Qwen the
    projector sits inside the tower; in Idefics3 it is a separate `connector`)."""
    return any(p.requires_grad for n, p in model.named_parameters() if model_part(n) != "language_model")


def _supports_encoder_outputs(base_model: torch.nn.Module) -> bool:
    return "mm_encoder_outputs" in inspect.signature(base_model.forward).parameters


# Model families whose text positions continue a prompt as (last prompt position + 1 + j) in every
# rotary section, with the base model's `get_rope_index` giving the prompt's own positions: for
# these the learner runs each prompt once and its completions on the prompt's cached keys/values.
SHARED_PROMPT_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


def shares_prompt_prefix(base_model: torch.nn.Module, batch: dict | None = None) -> bool:
    """Whether `completion_logprobs` can run each prompt once for its whole group (see there)."""
    model_type = getattr(getattr(base_model, "config", None), "model_type", None)
    if model_type not in SHARED_PROMPT_MODEL_TYPES or not hasattr(base_model, "get_rope_index") \
            or not _supports_encoder_outputs(base_model):
        return False
    return batch is None or batch.get("pixel_values") is None or batch.get("mm_token_type_ids") is not None


def prefill_prompts(base_model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    mm_token_type_ids: torch.Tensor | None, pixel_values: torch.Tensor | None,
                    image_grid_thw: torch.Tensor | None, vision_grad: bool = False):
    """One forward over B *left-padded* prompts that keeps their keys/values.

    input_ids, attention_mask, mm_token_type_ids: [B, Lp] (left-padded); pixel_values and
    image_grid_thw: the prompts' images in prompt order (or None). Returns the prompts' hidden
    states [B, Lp, H] (position Lp-1 predicts the first completion token), the cache
    (a transformers Cache; `batch_select_indices` / `batch_repeat_interleave` expand it to the
    completions, differentiably) and `next_position` [B], the rotary position of the first token
    after each prompt. Gradients flow through all three outputs' uses."""
    kwargs = {}
    if pixel_values is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and vision_grad):
            features = base_model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        kwargs["mm_encoder_outputs"] = {"image": features}
        positions, _ = base_model.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids,
                                                 image_grid_thw=image_grid_thw, attention_mask=attention_mask)
    else:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None].expand(3, -1, -1)
    out = base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                     use_cache=True, **kwargs)
    return out.last_hidden_state, out.past_key_values, positions.amax(dim=(0, 2)) + 1


def _unique_prompts(batch: dict):
    """The micro-batch's unique prompts, left-padded, recovered from collate's rows: each prompt's
    first row holds it in positions [0, prompt length)."""
    owner = batch["image_owner"]
    n_prompts = len(batch["prompt_images"])
    first = [None] * n_prompts
    for row, k in enumerate(owner.tolist()):
        if first[k] is None:
            first[k] = row
    lengths = batch["completion_positions"][first, 0].tolist()  # completion start = prompt length
    # One pad column more than needed: every prompt row is then padded, so attention always takes
    # the explicit-mask kernel. (Unpadded, SDPA takes its causal fast path, which rounds
    # differently: a prompt alone and the same prompt in a batch would then differ by more than
    # float noise, and micro-batching would no longer match one big batch as closely.)
    width = max(lengths) + 1
    ids = batch["input_ids"].new_zeros((n_prompts, width))
    mask = batch["attention_mask"].new_zeros((n_prompts, width))
    types = batch.get("mm_token_type_ids")
    mm = types.new_zeros((n_prompts, width)) if types is not None else None
    for k, (row, length) in enumerate(zip(first, lengths)):
        ids[k, width - length:] = batch["input_ids"][row, :length]
        mask[k, width - length:] = 1
        if mm is not None:
            mm[k, width - length:] = types[row, :length]
    return ids, mask, mm


def _shared_prompt_hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """[N, T, H]: the hidden state that predicts each completion token, with every prompt run once
    for its whole group (its keys/values are shared by the group's completions)."""
    base = model.model
    owner = batch["image_owner"]
    prompt_ids, prompt_mask, prompt_mm = _unique_prompts(batch)
    hidden_p, cache, next_position = prefill_prompts(
        base, prompt_ids, prompt_mask, prompt_mm, batch.get("pixel_values"), batch.get("image_grid_thw"),
        vision_grad=vision_is_trainable(model))
    cache.batch_select_indices(owner)  # [B, ...] -> [N, ...], differentiable
    n, t = batch["completion_ids"].shape
    positions = (next_position[owner][:, None] + torch.arange(t, device=next_position.device)[None]).expand(3, n, t)
    mask = torch.cat([prompt_mask[owner], batch["completion_mask"].to(prompt_mask.dtype)], dim=1)
    hidden_c = base(input_ids=batch["completion_ids"], attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True).last_hidden_state
    # Completion token j is predicted at j-1; token 0 at the prompt's last position.
    return torch.cat([hidden_p[owner, -1:], hidden_c[:, :-1]], dim=1)


def prompt_image_features(base_model: torch.nn.Module, image_inputs: list, vision_grad: bool = False) -> list:
    """Non-Qwen families: per unique prompt, its images' features [tokens, H] in the order its
    image placeholders come (None for a text-only prompt). The tower runs once per prompt, on the
    tensors its processor made (`Prompt.image_inputs`, the keywords of `get_image_features`)."""
    features = []
    with torch.set_grad_enabled(torch.is_grad_enabled() and vision_grad):
        for inputs in image_inputs:
            if inputs is None:
                features.append(None)
                continue
            pooled = base_model.get_image_features(**inputs, return_dict=True).pooler_output
            features.append(torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else
                            pooled.reshape(-1, pooled.shape[-1]))
    return features


def _generic_image_kwargs(model: torch.nn.Module, batch: dict) -> dict:
    """The forward's image arguments for the rows of a non-Qwen family: each row gets its prompt's
    precomputed features (`mm_encoder_outputs`), so the tower runs once per prompt, not per row."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    features = prompt_image_features(model.model, batch["image_inputs"], vision_is_trainable(model))
    per_row = [features[k] for k in batch["image_owner"].tolist() if features[k] is not None]
    if not per_row:
        return {}
    return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=tuple(per_row))}}


def _full_sequence_hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """[N, T, H] from one forward over every prompt + completion row (any image-text model)."""
    base = model.model
    grid = batch["image_grid_thw"]
    kwargs = {}
    if batch.get("image_inputs") is not None:
        kwargs = _generic_image_kwargs(model, batch)
    elif batch.get("pixel_values") is not None:
        per_sample_images = [i for p in batch["image_owner"].tolist() for i in batch["prompt_images"][p]]
        per_sample_grid = grid[per_sample_images]
        if _supports_encoder_outputs(base):
            with torch.set_grad_enabled(torch.is_grad_enabled() and vision_is_trainable(model)):
                features = base.get_image_features(batch["pixel_values"], grid, return_dict=True)
            pooled = features.pooler_output
            features.pooler_output = tuple(pooled[i] for i in per_sample_images)
            kwargs["mm_encoder_outputs"] = {"image": features}
        else:  # models without precomputed-feature support: the tower runs per completion
            sizes = grid.prod(-1).tolist()
            chunks = torch.split(batch["pixel_values"], sizes)
            kwargs["pixel_values"] = torch.cat([chunks[i] for i in per_sample_images])
        kwargs["image_grid_thw"] = per_sample_grid
    if batch.get("mm_token_type_ids") is not None:
        kwargs["mm_token_type_ids"] = batch["mm_token_type_ids"]
    hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                  **kwargs).last_hidden_state
    # Position p's hidden state predicts token p+1.
    positions = (batch["completion_positions"] - 1).clamp(min=0)
    n, t = positions.shape
    return hidden.gather(1, positions[..., None].expand(n, t, hidden.shape[-1]))


def completion_logprobs(model: torch.nn.Module, batch: dict, blocked_tokens: torch.Tensor,
                        token_chunk: int = 4096, with_entropy: bool = True, share_prompts: bool = True,
                        temperature: float = 1.0):
    """Log-probs of the completion tokens only, and their (detached) entropy, under the
    distribution the rollout engines sample from: blocked ids masked, then logits / `temperature`
    (log_softmax(logits) alone would be another distribution at T != 1, and the gradient off-policy).

    batch (see `mm_gpg.learner.collate`):
      input_ids, attention_mask, mm_token_type_ids: [N, L], prompt + completion, right-padded
      completion_positions: [N, T] index in L of each completion token (0 where padded)
      completion_ids, completion_mask: [N, T]
      pixel_values, image_grid_thw: the *unique* prompts' images; image_owner: [N] prompt index
      prompt_images: list (per unique prompt) of image indices into image_grid_thw
    Returns logprobs [N, T] (0 on padding) and entropy [N, T] or None.

    The vision tower runs once per unique prompt, not once per completion, and the vocabulary
    projection is applied only at the T completion positions (in chunks), never at prompt
    positions. With `share_prompts` (and a model family in `SHARED_PROMPT_MODEL_TYPES`) the
    language model too runs each prompt once for its group: one forward over the B unique
    prompts keeps their keys/values, and the N completions run on top of them, so the prompt
    tokens cost B rows instead of N = B*G. The values and gradients are those of the full
    forward (the prompt's keys/values are the same tensors for every completion of its group;
    their gradients sum over the group); other models take the full forward.
    """
    if share_prompts and shares_prompt_prefix(model.model, batch):
        selected = _shared_prompt_hidden(model, batch)
    else:
        selected = _full_sequence_hidden(model, batch)
    n, t, h = selected.shape
    selected = selected.reshape(n * t, h)
    targets = batch["completion_ids"].reshape(-1)
    lm_head = model.get_output_embeddings()
    blocked = blocked_tokens.to(selected.device)
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, n * t, token_chunk):
        logits = lm_head(selected[start:start + token_chunk]).float()
        logits = logits.masked_fill(blocked, float("-inf"))
        if temperature != 1.0:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1)
        logprob_chunks.append(logp.gather(1, targets[start:start + token_chunk, None]).squeeze(1))
        if with_entropy:
            with torch.no_grad():
                p = logp.exp()
                entropy_chunks.append(-(p * logp.masked_fill(blocked, 0.0)).sum(-1))
    # torch.where, not a product: a padding slot's target may be a blocked id whose log-prob is
    # -inf, and -inf * 0 is nan.
    keep = batch["completion_mask"].bool()
    zero = torch.zeros((), dtype=selected.dtype, device=selected.device)
    logprobs = torch.where(keep, torch.cat(logprob_chunks).view(n, t), zero)
    entropy = torch.where(keep, torch.cat(entropy_chunks).view(n, t), zero) if with_entropy else None
    return logprobs, entropy
