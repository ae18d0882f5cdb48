"""Rollouts with Hugging Face `generate`, on the learner's own module (works anywhere).

One sampling distribution everywhere: blocked ids masked, then `warp_logits` (temperature, top-k,
top-p, in `generate`'s order). The engine's own decoding loop and its `generate` path both apply
it, and report each sampled token's log-prob under it (`Completion.logprobs`); with top-k and
top-p off it is the distribution the learner's log-probs use (logits / T, same mask).
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ..device import module_device
from ..policy import prefill_prompts, shares_prompt_prefix
from .base import Completion, RolloutEngine, SamplingParams, register_engine


class BlockTokens(LogitsProcessor):
    """Sets the logits of blocked ids to -inf, the same mask the learner applies."""

    def __init__(self, blocked: torch.Tensor):
        self.blocked = blocked

    def __call__(self, input_ids, scores):
        blocked = self.blocked[: scores.shape[-1]].to(scores.device)
        return scores.masked_fill(blocked, float("-inf"))


class WarpAndRecord(LogitsProcessor):
    """`warp_logits` inside `generate`, recording each sampled token's log-prob under the warped
    distribution: a call sees the token drawn after the previous call in `input_ids[:, -1]`;
    `finish` takes the last one from the returned sequences."""

    def __init__(self, sampling: SamplingParams):
        self.sampling = sampling
        self.logprobs: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        if self._last is not None:
            self.logprobs.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        warped = warp_logits(scores.float(), self.sampling)
        self._last = torch.log_softmax(warped, dim=-1)
        return warped

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """[R, T] log-probs of `new_tokens` [R, T] (the sequences after the prompt)."""
        if self._last is not None:
            self.logprobs.append(self._last.gather(1, new_tokens[:, -1:]).squeeze(1))
            self._last = None
        return torch.stack(self.logprobs, dim=1)


def hf_generation_config(sampling: SamplingParams, n: int, eos_token_ids: list[int],
                         pad_token_id: int) -> GenerationConfig:
    """A complete `GenerationConfig` for one `generate` call: every setting that shapes the
    distribution is set here, neutral unless `sampling` asks for it, so a checkpoint's
    generation_config.json (Qwen2-VL-Instruct's temperature 0.01 / top_k 1, Qwen2.5-VL's
    repetition_penalty 1.05, ...) cannot change what is sampled. Temperature, top-k and top-p
    are applied by `WarpAndRecord`, so generate's own are off."""
    return GenerationConfig(
        do_sample=not sampling.greedy, num_beams=1, num_return_sequences=n,
        max_new_tokens=sampling.max_new_tokens, min_new_tokens=0,
        temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, length_penalty=1.0, renormalize_logits=False,
        remove_invalid_values=False, eos_token_id=list(eos_token_ids), pad_token_id=pad_token_id,
        use_cache=True, output_scores=False, output_logits=False, return_dict_in_generate=False)


@contextlib.contextmanager
def checkpoint_generation_defaults_off(model):
    """For the duration, `model.generation_config` (the checkpoint's generation_config.json) is a
    blank one. `generate` fills every setting its `generation_config` argument leaves at None
    from it, and some settings (bad_words_ids, suppress_tokens, forced_eos_token_id, min_p, ...)
    have no neutral value but None; blanking it is the only way none of them applies. Changed in
    place, so a wrapper that forwards attribute reads to the module (the learner's ZeRO-3 view)
    works too."""
    config = model.generation_config
    saved = dict(vars(config))
    vars(config).clear()
    vars(config).update(vars(GenerationConfig()))
    try:
        yield
    finally:
        vars(config).clear()
        vars(config).update(saved)


@contextlib.contextmanager
def eval_mode(model):
    """The module in eval mode for the duration (restored after): the learner leaves it in train
    mode, where checkpointed layers would switch the generation cache off."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(r.numel() for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, width - r.numel():] = r
    return out


def left_padded_inputs(prompts: list, pad_token_id: int, device: torch.device | str) -> dict:
    """The prompts as one left-padded batch (input_ids, attention_mask, mm_token_type_ids, and
    their images' pixel_values and image_grid_thw, None where absent), every tensor on `device`
    (the policy's)."""
    input_ids = left_pad([p.input_ids for p in prompts], pad_token_id)
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
    inputs.update(batch_image_inputs([getattr(p, "image_inputs", None) for p in prompts]))
    return {k: None if v is None else v.to(device) for k, v in inputs.items()}


def batch_image_inputs(per_prompt: list) -> dict:
    """Non-Qwen families: the prompts' image tensors (`Prompt.image_inputs`, each [1, images, ...])
    as one batch [B, most images, ...]: every tensor zero-padded to the largest in each dimension
    and stacked in prompt order. An all-zero image is padding to these models (Idefics3 drops it
    before the tower), and a text-only prompt gets only padding."""
    present = [x for x in per_prompt if x is not None]
    if not present:
        return {}
    out = {}
    for key in present[0]:
        tensors = [x[key] for x in present]
        shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
        batch = tensors[0].new_zeros((len(per_prompt), *shape))
        for i, x in enumerate(per_prompt):
            if x is not None:
                t = x[key][0]
                batch[(i, *(slice(0, n) for n in t.shape))] = t
        out[key] = batch
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
        with eval_mode(model):
            if self.share_prompts and base is not None and shares_prompt_prefix(base):
                rows, logprobs = self._decode_on_shared_prompts(model, base, prompts, n, sampling)
            else:
                rows, logprobs = self._hf_generate(model, prompts, n, sampling)
        eos = self.policy.eos_token_ids
        tokenizer = self.policy.tokenizer
        groups = []
        for i in range(len(prompts)):
            group = []
            for r in range(i * n, (i + 1) * n):
                row = rows[r]
                stop = next((k for k, tok in enumerate(row) if tok in eos), None)
                ids = row if stop is None else row[:stop + 1]
                group.append(Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True),
                                        finish_reason="length" if stop is None else "stop",
                                        logprobs=None if logprobs is None else logprobs[r][:len(ids)]))
            groups.append(group)
        return groups

    def _hf_generate(self, model, prompts: list, n: int, sampling: SamplingParams):
        """`generate(num_return_sequences=n)`: any model family. It copies each prompt n times
        before the prefill, so the prompt (its image included) runs n times. Returns the new
        tokens per row and, when sampling, their log-probs (None when greedy)."""
        device = module_device(model)
        inputs = {k: v for k, v in left_padded_inputs(prompts, self.policy.pad_token_id, device).items()
                  if v is not None}
        warp = None if sampling.greedy else WarpAndRecord(sampling)
        processors = LogitsProcessorList([*self.block, *([warp] if warp is not None else [])])
        config = hf_generation_config(sampling, n, self.policy.eos_token_ids, self.policy.pad_token_id)
        with checkpoint_generation_defaults_off(model):
            generated = model.generate(**inputs, generation_config=config, logits_processor=processors)
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        logprobs = None if warp is None else warp.finish(new_tokens).tolist()
        return new_tokens.tolist(), logprobs

    def _decode_on_shared_prompts(self, model, base, prompts: list, n: int, sampling: SamplingParams):
        """Each prompt is prefilled once (`prefill_prompts`), its keys/values repeated n times, and
        the n continuations decoded in a plain loop. Same distribution as `_hf_generate` (blocked
        ids, then `warp_logits`); with the same seed the same tokens (a test holds them equal), at
        a fraction of the prefill and per-token overhead. Returns the tokens per row and, when
        sampling, their log-probs (None when greedy)."""
        lm_head = model.get_output_embeddings()
        device = lm_head.weight.device
        inputs = left_padded_inputs(prompts, self.policy.pad_token_id, device)
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
        tokens, logprobs = [], []
        for j in range(sampling.max_new_tokens):
            logits = lm_head(hidden).float()
            logits = logits.masked_fill(blocked[: logits.shape[-1]], float("-inf"))
            drawn, logprob = sample_next(logits, sampling)
            token = torch.where(done, pad, drawn)
            tokens.append(token)
            logprobs.append(logprob)
            done = done | torch.isin(token, eos)
            if j == sampling.max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            positions = (next_position + j)[None, :, None].expand(3, rows, 1)
            hidden = base(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                          past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        token_rows = torch.stack(tokens, dim=1).tolist()
        return token_rows, None if sampling.greedy else torch.stack(logprobs, dim=1).tolist()


def warp_logits(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """[R, V] masked logits -> the logits of the distribution sampled from, as `generate`'s own
    warpers compute them: / temperature, then top-k (0: off), then top-p (1.0: off), removed ids
    at -inf. Top-p keeps the smallest set of most likely tokens whose mass reaches top_p (the
    most likely one always stays)."""
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    if sampling.top_k:
        kth = logits.topk(min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ascending, order = logits.sort(dim=-1, descending=False)
        remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - sampling.top_p
        remove[:, -1] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, sampling: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[R, V] masked logits -> [R] next tokens and their [R] log-probs under the distribution drawn
    from (None when greedy): `warp_logits`, then one multinomial draw per row, as `generate` does."""
    if sampling.greedy:
        return logits.argmax(-1), None
    probs = torch.softmax(warp_logits(logits, sampling), dim=-1)
    token = torch.multinomial(probs, 1)
    return token.squeeze(1), probs.gather(1, token).squeeze(1).log()
