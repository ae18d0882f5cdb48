"""The learner: a DeepSpeed engine (CPU/gloo here, NCCL on GPUs) that applies one policy update
per batch, with micro-batches for gradient accumulation.

Loss scaling: every micro-batch loss is already this rank's share of the *global* objective
(`mm_gpg.algorithms` divides by global counts). DeepSpeed would divide by the accumulation steps
and average over ranks; we ask for no accumulation scaling and multiply by the world size, so
the applied gradient is exactly the gradient of the global-batch loss: N ranks equal one.

Non-finite guard: an update whose loss (on any rank) or gradient is not finite is not applied.
DeepSpeed's ZeRO optimizers already skip a step whose global gradient norm is inf/NaN; the client
optimizer (`GuardedAdamW`) refuses the rest (ZeRO stage 0, and a non-finite loss with finite
gradients), so no stage can take a partial or poisoned step. The learning-rate schedule advances
only on applied updates (the learner steps it, not DeepSpeed), identically under every stage.

ZeRO-3: each rank holds a slice of every parameter. Generation (`generation_context`), weight
sync (`full_named_parameters`) and HF export (`full_state_dict`) gather whole parameters.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch

from data_prep.registry import did_you_mean

from .algorithms import Algorithm, policy_loss
from .device import module_device, to_device
from .policy import Policy, completion_logprobs, set_trainable


def collate(prompts: list, groups: list[list], pad_token_id: int, device: torch.device | str | None = None) -> dict:
    """One micro-batch: `prompts[k]` with its completions `groups[k]` (see completion_logprobs),
    every tensor on `device` (the policy's; None: where the prompts' tensors are)."""
    rows, types, comp, owner = [], [], [], []
    prompt_images, pixel_values, grids = [], [], []
    n_images = 0
    for k, (prompt, group) in enumerate(zip(prompts, groups)):
        if prompt.pixel_values is not None:
            count = prompt.image_grid_thw.shape[0]
            prompt_images.append(list(range(n_images, n_images + count)))
            pixel_values.append(prompt.pixel_values)
            grids.append(prompt.image_grid_thw)
            n_images += count
        else:
            prompt_images.append([])
        for completion in group:
            ids = torch.tensor(completion.token_ids, dtype=torch.long)
            rows.append(torch.cat([prompt.input_ids, ids]))
            if prompt.mm_token_type_ids is not None:
                types.append(torch.cat([prompt.mm_token_type_ids, torch.zeros_like(ids)]))
            comp.append((prompt.input_ids.numel(), ids))
            owner.append(k)
    n, width = len(rows), max(r.numel() for r in rows)
    t_max = max(1, max(ids.numel() for _, ids in comp))
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    positions = torch.zeros((n, t_max), dtype=torch.long)
    completion_ids = torch.full((n, t_max), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((n, t_max), dtype=torch.float32)
    for i, (row, (start, ids)) in enumerate(zip(rows, comp)):
        input_ids[i, :row.numel()] = row
        attention_mask[i, :row.numel()] = 1
        positions[i] = start  # padding slots point at a real position; the mask drops them
        positions[i, :ids.numel()] = torch.arange(start, start + ids.numel())
        completion_ids[i, :ids.numel()] = ids
        completion_mask[i, :ids.numel()] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_positions": positions,
             "completion_ids": completion_ids, "completion_mask": completion_mask,
             "image_owner": torch.tensor(owner), "prompt_images": prompt_images,
             "pixel_values": torch.cat(pixel_values) if pixel_values else None,
             "image_grid_thw": torch.cat(grids) if grids else None}
    if types:
        mm = torch.zeros((n, width), dtype=types[0].dtype)
        for i, t in enumerate(types):
            mm[i, :t.numel()] = t
        batch["mm_token_type_ids"] = mm
    if any(getattr(p, "image_inputs", None) is not None for p in prompts):
        # non-Qwen families: each unique prompt's image tensors (see Prompt.image_inputs)
        batch["image_inputs"] = [None if p.image_inputs is None else
                                 (p.image_inputs if device is None else to_device(p.image_inputs, device))
                                 for p in prompts]
    return batch if device is None else to_device(batch, device)


def micro_batches(prompts: list, groups: list[list], advantages: torch.Tensor, size: int, pad_token_id: int,
                  device: torch.device | str) -> Iterator[tuple[dict, torch.Tensor]]:
    """(collated batch, its completions' advantages [size*G]) for each micro-batch of `size`
    groups, every tensor on `device`. advantages: [groups, G], on any device."""
    for start in range(0, len(prompts), size):
        batch = collate(prompts[start:start + size], groups[start:start + size], pad_token_id, device)
        yield batch, advantages[start:start + size].reshape(-1).to(device)


@dataclass
class StepResult:
    loss: float
    """This rank's share of the global loss (sum over ranks = the global-batch loss)."""
    grad_norm: float
    """Global gradient norm before clipping (inf/NaN when the update was refused)."""
    entropy: float
    lr: float
    """Learning rate the update used."""
    skipped: bool = False
    """True when the update was refused (non-finite loss on some rank, or non-finite gradient)."""


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that refuses a non-finite update.

    `force_skip` (set by the learner from the all-ranks loss check) refuses the next step; a
    non-finite gradient in the parameters handed to `step` refuses it too. Under ZeRO these are
    the rank's fp32 partitions, after DeepSpeed's own global overflow check has already skipped
    any step with a non-finite global norm; under stage 0 they are the whole, all-reduced
    gradients, identical on every rank, so every rank decides alike. `applied` records whether
    the last step went through."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.force_skip = False
        self.applied = False

    @torch.no_grad()
    def step(self, closure=None):
        if self.force_skip:
            return None
        for group in self.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
                return None
        self.applied = True
        return super().step(closure)


@contextlib.contextmanager
def zero3_whole_parameters(engine):
    """Under ZeRO-3: every parameter of `engine.module` gathered (read-only) for the duration,
    with ZeRO's per-module fetch/release hooks taken off, so that a many-forward loop such as
    `generate` runs on whole weights instead of re-gathering each layer for every token (the
    hooks would release the gathered weights after each module's forward). The hooks are put
    back and the parameters re-partitioned on exit. Every rank must enter it together."""
    import deepspeed

    module = engine.module
    offload = getattr(engine.optimizer, "parameter_offload", None)
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        hooks_known = offload is not None and all(
            hasattr(offload, a) for a in ("forward_hooks", "backward_hooks", "_register_deepspeed_module"))
        if not hooks_known:  # another DeepSpeed layout: still correct, only slower
            yield module
            return
        for param in module.parameters():
            param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield module
        finally:
            offload._register_deepspeed_module(offload.module, count=[0])


def _declare_zero_supported(cls) -> bool:
    """Tell DeepSpeed that `cls` (torch's AdamW plus the guard) is as ZeRO-ready as AdamW, which
    spares every run the "untested optimizer" warning. False if this DeepSpeed has no such list."""
    try:
        from deepspeed.runtime.zero.utils import ZERO_SUPPORTED_OPTIMIZERS
    except ImportError:
        return False
    if cls not in ZERO_SUPPORTED_OPTIMIZERS:
        ZERO_SUPPORTED_OPTIMIZERS.append(cls)
    return True


# Keys of the generated DeepSpeed config that the learner derives from its own settings: a
# `train.deepspeed` entry may not override them (the loss scaling, the schedule and the
# non-finite guard depend on them).
LEARNER_OWNED_DEEPSPEED_KEYS = {
    "train_batch_size": "train.prompts_per_step and rollout.group_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_groups and rollout.group_size",
    "gradient_accumulation_steps": "train.prompts_per_step / train.micro_batch_groups",
    "gradient_clipping": "train.grad_clip",
    "zero_optimization.stage": "train.zero_stage",
    "bf16.enabled": "train.bf16",
    "fp16": "model.dtype (fp16 loss scaling is not supported; use bfloat16)",
    "optimizer": "the learner's own AdamW (train.lr, train.weight_decay)",
    "scheduler": "train.warmup_steps (the learner steps its own schedule)",
}


def merge_deepspeed_config(generated: dict, extra: dict | None, where: str = "train.deepspeed") -> dict:
    """`generated` with `extra` merged in, nested dicts key by key (so `{"zero_optimization":
    {"offload_optimizer": {...}}}` keeps the generated stage). Keys the learner owns
    (`LEARNER_OWNED_DEEPSPEED_KEYS`) are refused with the setting to use instead; everything else
    passes through unchanged, so DeepSpeed's own validation still rejects unknown keys."""
    import copy

    merged = copy.deepcopy(generated)

    def merge(into: dict, more: dict, prefix: str) -> None:
        if not isinstance(more, dict):
            raise ValueError(f"{where}{'.' + prefix.rstrip('.') if prefix else ''}: expected a mapping, got {more!r}")
        for key, value in more.items():
            dotted = prefix + str(key)
            if dotted in LEARNER_OWNED_DEEPSPEED_KEYS:
                raise ValueError(f"{where}.{dotted}: set by {LEARNER_OWNED_DEEPSPEED_KEYS[dotted]}; "
                                 f"change that instead")
            if isinstance(into.get(key), dict) and not isinstance(value, dict):
                raise ValueError(f"{where}.{dotted}: expected a mapping (a DeepSpeed config section), got {value!r}")
            if isinstance(value, dict):
                merge(into.setdefault(key, {}), value, dotted + ".")
            else:
                into[key] = value

    merge(merged, extra or {}, "")
    return merged


def unknown_deepspeed_keys(extra: dict, merged: dict, where: str = "train.deepspeed") -> None:
    """Raise for a top-level key of `extra` that DeepSpeed's config parser never reads (its
    sections, `zero_optimization`, `bf16`, ..., reject unknown keys themselves, but a misspelt
    section name would be ignored without a word). The keys read are recorded while DeepSpeed
    parses `merged`; when nothing can be recorded (another DeepSpeed), nothing is refused."""
    import copy

    from deepspeed.runtime.config import DeepSpeedConfig

    class Recording(dict):
        def __init__(self, data):
            super().__init__(data)
            self.read: set = set()

        def get(self, key, *default):
            self.read.add(key)
            return super().get(key, *default)

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            self.read.add(key)
            return super().__contains__(key)

    recording = Recording(copy.deepcopy(merged))
    try:
        DeepSpeedConfig(recording)
    except Exception:  # invalid in another way: deepspeed.initialize says how
        return
    if not recording.read:
        return
    for key in extra:
        if key not in recording.read:
            raise ValueError(f"{where}.{key}: not a DeepSpeed config key{did_you_mean(key, recording.read, cutoff=0.6)}")


class Learner:
    def __init__(self, policy: Policy, *, lr: float, warmup_steps: int, weight_decay: float, grad_clip: float,
                 zero_stage: int, bf16: bool | None = None, micro_batch_groups: int, local_groups: int,
                 group_size: int, train_language_model: bool = True, train_projector: bool = False,
                 train_vision_tower: bool = False, kl_coef: float = 0.0, world_size: int = 1,
                 temperature: float = 1.0, gradient_checkpointing: bool = False,
                 deepspeed_config: dict | None = None, lora=None):
        """`bf16`: DeepSpeed's bf16 mode (fp32 master weights and optimizer states, bf16 compute);
        None follows the policy's dtype. `temperature`: the rollout's sampling temperature, which
        the log-probs use (`completion_logprobs`). `gradient_checkpointing`: recompute each
        decoder layer's activations in the backward pass. `deepspeed_config`: merged into the
        generated DeepSpeed config (`merge_deepspeed_config`). `lora`: a `config.LoraConfig`;
        with `r > 0` peft adapters on the language model train instead of its weights
        (`mm_gpg.lora`), and the weights handed out (`full_state`, `full_state_dict`) are merged."""
        import deepspeed

        if zero_stage == 3:  # DeepSpeed's own calls to since-renamed torch collectives, twice a step
            for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
                warnings.filterwarnings("ignore", message=f".*{name}` is deprecated", category=FutureWarning)
        if local_groups % micro_batch_groups:
            raise ValueError(f"learner: {local_groups} groups per rank do not split into micro-batches of "
                             f"{micro_batch_groups} groups")
        self.policy = policy
        self.micro_batch_groups = micro_batch_groups
        self.world_size = world_size
        self.zero_stage = zero_stage
        self.reference = None
        if kl_coef:  # copied before any adapter goes in: the reference is the plain starting model
            import copy
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        self.lora_spec = None
        """The adapter set-up (`mm_gpg.lora.lora_spec`) when LoRA is on, else None; checkpoints
        record it."""
        if lora is not None and lora.r > 0:
            from .lora import apply_lora, lora_spec
            if not train_language_model:
                raise ValueError("model.lora.r > 0 trains adapters on the language model; "
                                 "model.train_language_model=false contradicts it (set model.lora.r=0)")
            self.lora_spec = lora_spec(lora, train_projector, train_vision_tower)
            self.trainable = apply_lora(policy.model, self.lora_spec)
        else:
            self.trainable = set_trainable(policy.model, train_language_model, train_projector, train_vision_tower)
        self.kl_coef = kl_coef
        if not temperature > 0:
            raise ValueError(f"learner: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        # The shared-prompt forward carries the prompts' keys/values from one forward into the
        # next, which checkpointed layers drop (transformers turns the cache off under
        # checkpointing): with checkpointing every completion row runs its prompt itself.
        self.share_prompts = not gradient_checkpointing
        if gradient_checkpointing:
            # Non-reentrant: correct when the layer inputs need no grad (frozen embeddings).
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if bf16 is None:
            bf16 = next(policy.model.parameters()).dtype == torch.bfloat16
        params = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = GuardedAdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
        # Stepped here, on applied updates only (see the module docstring), not by DeepSpeed.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
        gas = local_groups // micro_batch_groups
        config = {
            "train_micro_batch_size_per_gpu": micro_batch_groups * group_size,
            "gradient_accumulation_steps": gas,
            "gradient_clipping": grad_clip,
            "zero_optimization": {"stage": zero_stage},
            "bf16": {"enabled": bf16, "check_grad_overflow": True},
            "zero_allow_untested_optimizer": not _declare_zero_supported(GuardedAdamW),
            # The client optimizer (the non-finite guard) is kept under optimizer offload too.
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False,
        }
        self.deepspeed_config = merge_deepspeed_config(config, deepspeed_config)
        if deepspeed_config:
            unknown_deepspeed_keys(deepspeed_config, self.deepspeed_config)
        import pydantic  # DeepSpeed validates its config sections with it

        try:
            self.engine, _, _, _ = deepspeed.initialize(model=policy.model, optimizer=self.optimizer,
                                                        config=self.deepspeed_config, model_parameters=params)
        except pydantic.ValidationError as exc:
            if not deepspeed_config:
                raise
            # pydantic's report, on one line: which key DeepSpeed refused and why.
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"train.deepspeed: DeepSpeed rejected the merged config ({detail})") from None
        if self.reference is not None:
            self.reference.to(self.device)
        self.gas = gas
        self.updates_applied = 0
        self.updates_skipped = 0
        self._generation_depth = 0  # nesting of `generation_context`

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def lr(self) -> float:
        """The learning rate the next applied update will use."""
        return self.scheduler.get_last_lr()[0]

    @property
    def device(self) -> torch.device:
        """Where the module lives (DeepSpeed's device): every tensor the learner builds goes here."""
        return module_device(self.engine.module)

    @contextlib.contextmanager
    def generation_context(self) -> Iterator[torch.nn.Module]:
        """The module to generate with, for the duration: under ZeRO-3 with every parameter
        gathered whole and ZeRO's per-module hooks off (`zero3_whole_parameters`), so that no
        forward inside runs a collective and ranks may decode different numbers of tokens (or
        call `generate` different numbers of times); otherwise the module as it is. Entering it
        is a collective under ZeRO-3: every rank enters it together. Reentrant: an entry inside
        another costs nothing. Pass as the `hf` engine's `model_context`."""
        if self.zero_stage != 3 or self._generation_depth:
            self._generation_depth += 1
            try:
                yield self.engine.module
            finally:
                self._generation_depth -= 1
            return
        with zero3_whole_parameters(self.engine) as module:
            self._generation_depth = 1
            try:
                yield module
            finally:
                self._generation_depth = 0

    def _gathered(self, params: list):
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed
        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def full_named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, whole tensor) for every parameter, trainable or frozen, in module order.

        Under ZeRO-3 each parameter is gathered (a collective: every rank must iterate to the end)
        and a copy is yielded; otherwise the live tensor is yielded (consume it before the next
        update). Used by `Trainer.sync_weights` and the HF export."""
        for name, param in self.module.named_parameters():
            with self._gathered([param]):
                yield name, (param.detach().clone() if self.zero_stage == 3 else param.detach())

    def full_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The weights a rollout engine loads after an update (see `full_named_parameters`),
        named as in the HF checkpoint: with LoRA, each adapter folded into its base weight."""
        if self.lora_spec is None:
            return self.full_named_parameters()
        from .lora import merged_named_tensors, scaling
        return merged_named_tensors(self.full_named_parameters(), scaling(self.module))

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The module's whole state dict (parameters gathered under ZeRO-3, tied aliases and
        persistent buffers included), for `save_pretrained(state_dict=...)`. Every rank must
        call it. With LoRA the adapters keep their own entries (`checkpoint.save_hf` merges
        them and writes the adapter)."""
        if self.zero_stage != 3:
            return self.module.state_dict()
        keys = self.module.state_dict().keys()  # parameters appear there as empty placeholders
        state, seen = {}, {}
        for name, param in self.module.named_parameters(remove_duplicate=False):
            if id(param) not in seen:
                with self._gathered([param]):
                    seen[id(param)] = param.detach().clone()
            state[name] = seen[id(param)]
        for name, buf in self.module.named_buffers():
            if name in keys:
                state[name] = buf.detach().clone()
        return state

    def local_params_finite(self) -> bool:
        """Whether this rank's share of the weights is finite (its partitions under ZeRO-3)."""
        for param in self.module.parameters():
            data = param.ds_tensor if hasattr(param, "ds_tensor") else param.data
            if data.numel() and not bool(torch.isfinite(data).all()):
                return False
        return True

    def client_state(self) -> dict:
        """What the DeepSpeed checkpoint does not hold: the learner-owned LR schedule, counters."""
        return {"scheduler": self.scheduler.state_dict(), "updates_applied": self.updates_applied,
                "updates_skipped": self.updates_skipped}

    def load_client_state(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.updates_applied = int(state["updates_applied"])
        self.updates_skipped = int(state["updates_skipped"])

    def _grad_norm(self) -> float:
        """Stage 0: the global norm of the (already all-reduced) gradients, before clipping."""
        grads = [p.grad.detach().float().norm() for p in self.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads)).item()) if grads else 0.0

    def _forward_prologue(self) -> None:
        """What `DeepSpeedEngine.forward` does before each micro-batch's forward.

        The learner calls the module's parts directly (the vision tower once per prompt, the
        vocabulary projection only at completion positions), not through `engine(...)`, so it
        must do this itself: ZeRO optimizers count accumulation micro-steps here. Without it
        ZeRO-3 overwrites, instead of adding, the gradients of earlier micro-batches."""
        from deepspeed.runtime.base_optimizer import ZeROOptimizer
        if isinstance(self.engine.optimizer, ZeROOptimizer):
            self.engine.optimizer.clear_backward_seen_flag()

    def _any_rank(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        from deepspeed.accelerator import get_accelerator
        t = torch.tensor([float(flag)], device=get_accelerator().current_device_name())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    @torch.no_grad()
    def logprobs(self, prompts: list, groups: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, T] log-probs of the completions in `groups` (N in order, T the longest) as `step`
        computes them (same forward, mask and temperature), and their [N, T] mask, on the CPU:
        to check them against an engine's `Completion.logprobs`. Under ZeRO-3 every rank must
        call it."""
        batch = collate(prompts, groups, self.policy.pad_token_id, self.device)
        logprobs, _ = completion_logprobs(self.engine.module, batch, self.policy.blocked_tokens, with_entropy=False,
                                          share_prompts=self.share_prompts, temperature=self.temperature)
        return logprobs.cpu(), batch["completion_mask"].cpu()

    def step(self, algorithm: Algorithm, prompts: list, groups: list[list], advantages: torch.Tensor, *,
             alpha: float, normalizer: float, aggregation: str, clip_eps: float) -> StepResult:
        """One optimizer update on this rank's groups. advantages: [groups, G].

        Every rank must call it with the same number of micro-batches (`local_groups`)."""
        if len(prompts) != self.gas * self.micro_batch_groups:
            raise ValueError(f"learner: got {len(prompts)} groups, expected {self.gas * self.micro_batch_groups} "
                             f"({self.gas} micro-batches of {self.micro_batch_groups})")
        self.engine.train()
        total_loss, entropy_sum, token_count = 0.0, 0.0, 0.0
        grad_norm = float("nan")
        bad_loss = False
        lr = self.scheduler.get_last_lr()[0]
        for m, (batch, micro_advantages) in enumerate(micro_batches(
                prompts, groups, advantages, self.micro_batch_groups, self.policy.pad_token_id, self.device)):
            self._forward_prologue()
            logprobs, entropy = completion_logprobs(self.engine.module, batch, self.policy.blocked_tokens,
                                                    share_prompts=self.share_prompts,
                                                    temperature=self.temperature)
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref, _ = completion_logprobs(self.reference, batch, self.policy.blocked_tokens,
                                                 with_entropy=False, share_prompts=self.share_prompts,
                                                 temperature=self.temperature)
            loss = policy_loss(algorithm, logprobs, batch["completion_mask"], micro_advantages,
                               normalizer=normalizer, alpha=alpha, aggregation=aggregation,
                               clip_eps=clip_eps, ref_logprobs=ref, kl_coef=self.kl_coef)
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            value = loss.item()
            bad_loss |= not math.isfinite(value)
            boundary = m == self.gas - 1
            if boundary:
                # Decided alike on every rank before the optimizer runs (see the module docstring).
                self.optimizer.force_skip = self._any_rank(bad_loss)
                self.optimizer.applied = False
                if self.zero_stage == 0:
                    grad_norm = self._grad_norm()  # stage 0 keeps plain .grad until step()
            self.engine.step()
            total_loss += value
            entropy_sum += float(entropy.sum())
            token_count += float(batch["completion_mask"].sum())
        if self.zero_stage:
            norm = self.engine.get_global_grad_norm()
            grad_norm = float("nan") if norm is None else float(norm)
        applied = self.optimizer.applied
        self.optimizer.force_skip = False
        if applied:
            self.scheduler.step()
            self.updates_applied += 1
        else:
            self.updates_skipped += 1
        return StepResult(loss=total_loss, grad_norm=grad_norm, entropy=entropy_sum / max(1.0, token_count),
                          lr=lr, skipped=not applied)
