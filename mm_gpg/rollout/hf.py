"""Rollouts with Hugging Face `generate`, on the learner's own module (works anywhere)."""
from __future__ import annotations

from typing import Iterable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .base import Completion, RolloutEngine, SamplingParams, register_engine


class BlockTokens(LogitsProcessor):
    """Sets the logits of blocked ids to -inf, the same mask the learner applies."""

    def __init__(self, blocked: torch.Tensor):
        self.blocked = blocked

    def __call__(self, input_ids, scores):
        blocked = self.blocked[: scores.shape[-1]].to(scores.device)
        return scores.masked_fill(blocked, float("-inf"))


def left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(r.numel() for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, width - r.numel():] = r
    return out


@register_engine("hf")
class HFRolloutEngine(RolloutEngine):
    def __init__(self, policy, model_fn=None, max_prompts_per_call: int = 64, **_unused):
        """`model_fn()` returns the module to generate with (the learner's, possibly wrapped);
        defaults to `policy.model`."""
        if _unused:
            raise TypeError(f"hf rollout engine: unsupported option(s) {sorted(_unused)}")
        self.policy = policy
        self.model_fn = model_fn or (lambda: policy.model)
        self.max_prompts_per_call = max_prompts_per_call
        self.block = LogitsProcessorList([BlockTokens(policy.blocked_tokens)])

    @property
    def shares_learner_weights(self) -> bool:
        return True

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Nothing to copy: generation runs on the learner's parameters."""

    @torch.no_grad()
    def generate(self, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        torch.manual_seed(sampling.seed)
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), self.max_prompts_per_call):
            out += self._generate(prompts[start:start + self.max_prompts_per_call], n, sampling)
        return out

    def _generate(self, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        model = self.model_fn()
        pad = self.policy.pad_token_id
        eos = self.policy.eos_token_ids
        input_ids = left_pad([p.input_ids for p in prompts], pad)
        lengths = torch.tensor([p.input_ids.numel() for p in prompts])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] >= (input_ids.shape[1] - lengths)[:, None]).long()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if prompts[0].mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = left_pad([p.mm_token_type_ids for p in prompts], 0)
        with_images = [p for p in prompts if p.pixel_values is not None]
        if with_images:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in with_images])
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in with_images])
        sampling_kwargs = ({"do_sample": False} if sampling.greedy else
                           {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                            "top_k": sampling.top_k})
        generated = model.generate(**inputs, **sampling_kwargs, num_return_sequences=n,
                                   max_new_tokens=sampling.max_new_tokens, logits_processor=self.block,
                                   eos_token_id=eos, pad_token_id=pad, use_cache=True)
        new_tokens = generated[:, input_ids.shape[1]:]
        tokenizer = self.policy.tokenizer
        groups = []
        for i in range(len(prompts)):
            group = []
            for row in new_tokens[i * n:(i + 1) * n].tolist():
                stop = next((k for k, tok in enumerate(row) if tok in eos), None)
                ids = row if stop is None else row[:stop + 1]
                group.append(Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True),
                                        finish_reason="length" if stop is None else "stop"))
            groups.append(group)
        return groups
