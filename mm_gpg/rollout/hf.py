"""Rollouts with Hugging Face `generate`, on the learner's own module (works anywhere)."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ..policy import prefill_prompts, shares_prompt_prefix
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
    def __init__(self, policy, model_context=None, max_prompts_per_call: int = 64, share_prompts: bool = True,
                 **_unused):
        """`model_context()` returns a context manager that yields the module to generate with
        and holds it ready for the whole `generate` call (the learner's `generation_context`:
        under ZeRO-3 its whole, gathered weights); defaults to `policy.model` as it is.
        `share_prompts`: for the families of
        `mm_gpg.policy.SHARED_PROMPT_MODEL_TYPES`, prefill each prompt once for its group and
        decode in the engine's own loop (False: always `generate`)."""
        if _unused:
            raise TypeError(f"hf rollout engine: unsupported option(s) {sorted(_unused)}")
        self.policy = policy
        self.model_context = model_context or (lambda: contextlib.nullcontext(policy.model))
        self.max_prompts_per_call = max_prompts_per_call
        self.share_prompts = share_prompts
        self.block = LogitsProcessorList([BlockTokens(policy.blocked_tokens)])

    @property
    def shares_learner_weights(self) -> bool:
        return True

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Nothing to copy: generation runs on the learner's parameters."""

    def generation_scope(self):
        """The model provider's context (see `RolloutEngine.generation_scope`)."""
        return self.model_context()

    @torch.no_grad()
    def generate(self, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        torch.manual_seed(sampling.seed)
        out: list[list[Completion]] = []
        # One context for the whole call, every chunk and every token in it: under ZeRO-3 no
        # forward inside gathers weights, so this rank may stop decoding before the others.
        with self.model_context() as model:
            for start in range(0, len(prompts), self.max_prompts_per_call):
                out += self._generate(model, prompts[start:start + self.max_prompts_per_call], n, sampling)
        return out

    def _generate(self, model, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        base = getattr(model, "model", None)
        if self.share_prompts and base is not None and shares_prompt_prefix(base):
            rows = self._decode_on_shared_prompts(model, base, prompts, n, sampling)
        else:
            rows = self._hf_generate(model, prompts, n, sampling)
        eos = self.policy.eos_token_ids
        tokenizer = self.policy.tokenizer
        groups = []
        for i in range(len(prompts)):
            group = []
            for row in rows[i * n:(i + 1) * n]:
                stop = next((k for k, tok in enumerate(row) if tok in eos), None)
                ids = row if stop is None else row[:stop + 1]
                group.append(Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True),
                                        finish_reason="length" if stop is None else "stop"))
            groups.append(group)
        return groups

    def _left_padded_inputs(self, prompts: list) -> dict:
        input_ids = left_pad([p.input_ids for p in prompts], self.policy.pad_token_id)
        lengths = torch.tensor([p.input_ids.numel() for p in prompts])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] >= (input_ids.shape[1] - lengths)[:, None]).long()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": None,
                  "pixel_values": None, "image_grid_thw": None}
        if prompts[0].mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = left_pad([p.mm_token_type_ids for p in prompts], 0)
        with_images = [p for p in prompts if p.pixel_values is not None]
        if with_images:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in with_images])
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in with_images])
        return inputs

    def _hf_generate(self, model, prompts: list, n: int, sampling: SamplingParams) -> list[list[int]]:
        """`generate(num_return_sequences=n)`: any model family. It copies each prompt n times
        before the prefill, so the prompt (its image included) runs n times."""
        inputs = {k: v for k, v in self._left_padded_inputs(prompts).items() if v is not None}
        sampling_kwargs = ({"do_sample": False} if sampling.greedy else
                           {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                            "top_k": sampling.top_k})
        generated = model.generate(**inputs, **sampling_kwargs, num_return_sequences=n,
                                   max_new_tokens=sampling.max_new_tokens, logits_processor=self.block,
                                   eos_token_id=self.policy.eos_token_ids, pad_token_id=self.policy.pad_token_id,
                                   use_cache=True)
        return generated[:, inputs["input_ids"].shape[1]:].tolist()

    def _decode_on_shared_prompts(self, model, base, prompts: list, n: int,
                                  sampling: SamplingParams) -> list[list[int]]:
        """Each prompt is prefilled once (`prefill_prompts`), its keys/values repeated n times, and
        the n continuations decoded in a plain loop. Same distribution as `_hf_generate` (blocked
        ids, then temperature, top-k, top-p, in `generate`'s order); with the same seed the same
        tokens (a test holds them equal), at a fraction of the prefill and per-token overhead."""
        lm_head = model.get_output_embeddings()
        device = lm_head.weight.device
        inputs = {k: None if v is None else v.to(device) for k, v in self._left_padded_inputs(prompts).items()}
        hidden, cache, next_position = prefill_prompts(base, **inputs)
        cache.batch_repeat_interleave(n)
        hidden = hidden[:, -1].repeat_interleave(n, 0)
        next_position = next_position.repeat_interleave(n)
        mask = inputs["attention_mask"].repeat_interleave(n, 0)
        rows = hidden.shape[0]
        blocked = self.policy.blocked_tokens.to(device)
        eos = torch.tensor(self.policy.eos_token_ids, device=device)
        pad = torch.full((rows,), self.policy.pad_token_id, device=device)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        tokens = []
        for j in range(sampling.max_new_tokens):
            logits = lm_head(hidden).float()
            logits = logits.masked_fill(blocked[: logits.shape[-1]], float("-inf"))
            token = torch.where(done, pad, next_token(logits, sampling))
            tokens.append(token)
            done = done | torch.isin(token, eos)
            if j == sampling.max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            positions = (next_position + j)[None, :, None].expand(3, rows, 1)
            hidden = base(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                          past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        return torch.stack(tokens, dim=1).tolist()


def next_token(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """[R, V] masked logits -> [R] next tokens, processed as `generate` does: temperature, then
    top-k (0: off), then top-p (1.0: off), then one multinomial draw per row."""
    if sampling.greedy:
        return logits.argmax(-1)
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = logits.topk(min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (the most likely
        # one always stays).
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p
        probs = probs.scatter(1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1).squeeze(1)
