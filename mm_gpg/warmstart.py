"""Supervised warm-start: teach a fresh policy the answer format and some of the skill.

RL needs a policy that is sometimes right: a group whose samples all fail carries no signal. The
embedded tiny model starts from random weights, so the default run first fits it briefly on the
gold answers of the training data and stops while the tasks are only *partly* learned (a fully
learned task leaves RL nothing to do). The result is cached next to the run and reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from data_prep.mixture import build_mixture

from .config import Config
from .device import module_device
from .distributed import Dist
from .learner import collate
from .policy import Policy, completion_logprobs
from .progress import drawing, progress_bar
from .prompting import encode_prompts
from .rollout import Completion

TARGET_TEMPLATES = {
    "r1": "<think>{answer}</think><answer>{answer}</answer>",
    "boxed": "\\boxed{{{answer}}}",
    "direct": "{answer}",
}


def sft_target(answer, style: str) -> str:
    return TARGET_TEMPLATES[style].format(answer=answer)


def warmstart_dir(config: Config) -> Path:
    """Where this configuration's warm-started weights are cached (keyed by everything that
    changes them)."""
    key = json.dumps({"model": config.model.path, "warmstart": vars(config.warmstart),
                      "train": config.data.train, "style": config.data.prompt_style,
                      "pixels": [config.data.min_pixels, config.data.max_pixels],
                      "system": config.data.system_prompt, "seed": config.train.seed}, sort_keys=True)
    return Path(config.output_dir) / f"warmstart-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def run_warmstart(config: Config, policy: Policy, dist: Dist, log=print) -> None:
    """Fit `policy.model` in place on gold answers for `config.warmstart.steps` steps.

    Every rank runs the same deterministic steps on the same data, so all ranks end identical."""
    ws, data = config.warmstart, config.data
    torch.manual_seed(config.train.seed)
    mixture = build_mixture(data.train, seed=config.train.seed + 7919)  # not the RL stream's order
    tokenizer = policy.tokenizer
    eos = policy.eos_token_ids[0]
    model = policy.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ws.lr, weight_decay=0.0)
    bar = progress_bar(ws.steps, "warm-start", config.progress and dist.is_main, unit="step")
    for step in range(1, ws.steps + 1):
        samples = mixture.draw(ws.batch_size)
        prompts = encode_prompts(policy.processor, samples, data.prompt_style, data.min_pixels,
                                 data.max_pixels, data.system_prompt)
        groups = []
        for s in samples:
            ids = tokenizer(sft_target(s.answer, data.prompt_style), add_special_tokens=False)["input_ids"] + [eos]
            groups.append([Completion(token_ids=ids, text="", finish_reason="stop")])
        batch = collate(prompts, groups, policy.pad_token_id, module_device(model))
        logprobs, _ = completion_logprobs(model, batch, policy.blocked_tokens, with_entropy=False)
        loss = -logprobs.sum() / batch["completion_mask"].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        bar.update(1)
        if drawing(bar):
            bar.set_postfix(loss=f"{loss.item():.4f}")
        # the last loss always; in a log file (no bar) a line every 50 steps too
        if dist.is_main and (step == ws.steps or (step % 50 == 0 and not drawing(bar))):
            log(f"warm-start step {step}/{ws.steps}: loss {loss.item():.4f}")
    bar.close()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
