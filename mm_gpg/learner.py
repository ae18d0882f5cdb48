"""The learner: a DeepSpeed engine (CPU/gloo here, NCCL on GPUs) that applies one policy update
per batch, with micro-batches for gradient accumulation.

Loss scaling: every micro-batch loss is already this rank's share of the *global* objective
(`mm_gpg.algorithms` divides by global counts). DeepSpeed would divide by the accumulation steps
and average over ranks; we ask for no accumulation scaling and multiply by the world size, so
the applied gradient is exactly the gradient of the global-batch loss: N ranks equal one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .algorithms import Algorithm, policy_loss
from .policy import Policy, completion_logprobs, set_trainable


def collate(prompts: list, groups: list[list], pad_token_id: int) -> dict:
    """One micro-batch: `prompts[k]` with its completions `groups[k]` (see completion_logprobs)."""
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
    return batch


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    entropy: float
    lr: float


class Learner:
    def __init__(self, policy: Policy, *, lr: float, warmup_steps: int, weight_decay: float, grad_clip: float,
                 zero_stage: int, bf16: bool, micro_batch_groups: int, local_groups: int, group_size: int,
                 train_language_model: bool = True, train_projector: bool = False,
                 train_vision_tower: bool = False, kl_coef: float = 0.0, world_size: int = 1):
        import deepspeed

        if local_groups % micro_batch_groups:
            raise ValueError(f"learner: {local_groups} groups per rank do not split into micro-batches of "
                             f"{micro_batch_groups} groups")
        self.policy = policy
        self.trainable = set_trainable(policy.model, train_language_model, train_projector, train_vision_tower)
        self.micro_batch_groups = micro_batch_groups
        self.world_size = world_size
        self.zero_stage = zero_stage
        self.reference = None
        if kl_coef:
            import copy
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        self.kl_coef = kl_coef
        params = [p for p in policy.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
        gas = local_groups // micro_batch_groups
        config = {
            "train_micro_batch_size_per_gpu": micro_batch_groups * group_size,
            "gradient_accumulation_steps": gas,
            "gradient_clipping": grad_clip,
            "zero_optimization": {"stage": zero_stage},
            "bf16": {"enabled": bf16},
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False,
        }
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=policy.model, optimizer=optimizer, lr_scheduler=schedule, config=config,
            model_parameters=params)
        self.gas = gas

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def _grad_norm(self) -> float:
        norm = self.engine.get_global_grad_norm() if self.zero_stage else None
        if norm is None:
            grads = [p.grad.detach().float().norm() for p in self.module.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(grads)).item() if grads else 0.0
        return float(norm)

    def step(self, algorithm: Algorithm, prompts: list, groups: list[list], advantages: torch.Tensor, *,
             alpha: float, normalizer: float, aggregation: str, clip_eps: float) -> StepResult:
        """One optimizer update on this rank's groups. advantages: [groups, G]."""
        self.engine.train()
        total_loss, entropy_sum, token_count = 0.0, 0.0, 0.0
        grad_norm = float("nan")
        step_size = self.micro_batch_groups
        for m, start in enumerate(range(0, len(prompts), step_size)):
            batch = collate(prompts[start:start + step_size], groups[start:start + step_size],
                            self.policy.pad_token_id)
            logprobs, entropy = completion_logprobs(self.engine.module, batch,
                                                    self.policy.blocked_tokens)
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref, _ = completion_logprobs(self.reference, batch, self.policy.blocked_tokens,
                                                 with_entropy=False)
            loss = policy_loss(algorithm, logprobs, batch["completion_mask"],
                               advantages[start:start + step_size].reshape(-1),
                               normalizer=normalizer, alpha=alpha, aggregation=aggregation,
                               clip_eps=clip_eps, ref_logprobs=ref, kl_coef=self.kl_coef)
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            if m == self.gas - 1 and self.zero_stage == 0:
                grad_norm = self._grad_norm()  # stage 0 keeps plain .grad until step()
            self.engine.step()
            total_loss += loss.item()
            entropy_sum += float(entropy.sum())
            token_count += float(batch["completion_mask"].sum())
        if self.zero_stage:
            grad_norm = self._grad_norm()
        return StepResult(loss=total_loss, grad_norm=grad_norm, entropy=entropy_sum / max(1.0, token_count),
                          lr=self.scheduler.get_last_lr()[0])
