"""Low-rank adapters (peft's LoRA) on the policy's language model (`model.lora`, docs/lora.md).

The adapters are injected into the model in place (`peft.inject_adapter_in_model`), so the policy
keeps its transformers class: the learner's forward (`completion_logprobs`), the `hf` rollout
engine, DeepSpeed and the checkpoints see the same module with a few more parameters. Each
adapted linear layer `X` becomes `X.base_layer` (the frozen weight) plus `X.lora_A.default` and
`X.lora_B.default`; only those two (and the vision projector when `model.train_projector` is on,
fully) train.

Where the weights leave the learner they are merged: `merged_named_tensors` folds every adapter
into its base weight (W + alpha/r * B @ A) under the original Hugging Face name, which is what the
vLLM engine loads after each step, what `final/` and `mm-gpg export` write as the merged model,
and what `from_pretrained` reads without peft. `write_adapter` writes the adapter alone in peft's
own folder format (`adapter_config.json`, `adapter_model.safetensors`), for
`peft.PeftModel.from_pretrained(base, folder)`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

import torch

from data_prep.registry import did_you_mean

from .policy import PROJECTOR_KEYS, VISION_KEYS

ADAPTER_NAME = "default"
"""peft's adapter name; it appears in the injected parameters' names (`lora_A.default.weight`)."""

_BASE_PART = re.compile(r"^(?P<layer>.+)\.base_layer\.(?P<part>weight|bias)$")
_ADAPTER_PART = re.compile(rf"^(?P<layer>.+)\.lora_(?P<part>[AB])\.{ADAPTER_NAME}\.weight$")
# peft's file format names the adapter weights without the adapter name, under the PeftModel's
# own prefix.
PEFT_FILE_PREFIX = "base_model.model."


def is_adapter_parameter(name: str) -> bool:
    return _ADAPTER_PART.match(name) is not None


def _is_vision(name: str) -> bool:
    return any(k in name for k in VISION_KEYS + PROJECTOR_KEYS)


def target_regex(target_modules: Iterable[str]) -> str:
    """The regex peft matches (with `re.fullmatch`) against module names: a module whose name
    ends in one of `target_modules` and lies outside the vision tower and projector.

    E.g. ["q_proj"] matches `model.language_model.layers.0.self_attn.q_proj` and not
    `model.visual.blocks.0.mlp.up_proj` (Qwen2.5-VL's vision blocks reuse the language model's
    MLP names, so a plain list of names would put adapters on the vision tower too)."""
    excluded = "|".join(re.escape(k) for k in VISION_KEYS + PROJECTOR_KEYS)
    names = "|".join(re.escape(n) for n in target_modules)
    return rf"^(?!.*(?:{excluded})).*\.(?:{names})$"


def language_model_linear_names(model: torch.nn.Module) -> list[str]:
    """Every linear layer of the language model (vision tower and projector left out)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not _is_vision(name)]


def lora_spec(lora, train_projector: bool, train_vision_tower: bool) -> dict:
    """What a checkpoint records of the adapter set-up (to rebuild the module for resume/export)."""
    return {"r": int(lora.r), "alpha": float(lora.alpha), "dropout": float(lora.dropout),
            "target_modules": [str(n) for n in lora.target_modules],
            "train_projector": bool(train_projector), "train_vision_tower": bool(train_vision_tower)}


def apply_lora(model: torch.nn.Module, spec: dict) -> dict[str, int]:
    """Inject LoRA adapters into `model`'s language model in place and set what trains: the
    adapters, plus the projector and the vision tower (fully) when `spec` says so. Every other
    parameter is frozen. Returns the trainable parameter count per part. `spec`: `lora_spec`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    if spec["r"] <= 0:
        raise ValueError(f"model.lora.r: expected > 0 to train adapters, got {spec['r']}")
    targets = list(spec["target_modules"])
    if not targets:
        raise ValueError("model.lora.target_modules: empty; name at least one linear layer of the language model")
    linear = language_model_linear_names(model)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in linear):
            raise ValueError(f"model.lora.target_modules: {target!r} names no linear layer of the language model "
                             f"(its layers: {leaves}){did_you_mean(target, leaves)}")
    config = PeftLoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                            target_modules=target_regex(targets), bias="none")
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    counts = {"lora": 0, "projector": 0, "vision_tower": 0}
    for name, param in model.named_parameters():
        if is_adapter_parameter(name):
            part, flag = "lora", True
        elif any(k in name for k in PROJECTOR_KEYS):
            part, flag = "projector", spec["train_projector"]
        elif any(k in name for k in VISION_KEYS):
            part, flag = "vision_tower", spec["train_vision_tower"]
        else:
            part, flag = None, False
        param.requires_grad_(flag)
        if flag:
            counts[part] += param.numel()
    return counts


def has_lora(module: torch.nn.Module) -> bool:
    """Whether `module` carries injected adapters (`apply_lora`)."""
    return ADAPTER_NAME in (getattr(module, "peft_config", None) or {})


def scaling(module: torch.nn.Module) -> float:
    """alpha / r: the factor of the adapter's update B @ A."""
    config = module.peft_config[ADAPTER_NAME]
    return float(config.lora_alpha) / float(config.r)


def fold(base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, factor: float) -> torch.Tensor:
    """base + factor * B @ A, computed in float32 and returned in base's dtype.

    Worked case: base = [[1, 0], [0, 1]], A = [[1, 2]] (r=1, in=2), B = [[1], [0]] (out=2, r=1),
    factor 0.5: B @ A = [[1, 2], [0, 0]], so the result is [[1.5, 1], [0, 1]]."""
    delta = lora_b.float() @ lora_a.float()
    return (base.float() + factor * delta).to(base.dtype)


def merged_named_tensors(named_tensors: Iterable[tuple[str, torch.Tensor]], factor: float
                         ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) with every adapter folded into its layer's weight, under the names the
    model has without adapters (`X.base_layer.weight` + `X.lora_A/B` -> `X.weight`, and
    `X.base_layer.bias` -> `X.bias`); every other tensor passes through unchanged.

    Streams: a layer's merged weight is yielded as soon as its three tensors have been seen (in
    module order, the base weight comes first and lora_B last), so a ZeRO-3 gather of one
    parameter at a time holds at most one layer's parts."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in named_tensors:
        match = _BASE_PART.match(name) or _ADAPTER_PART.match(name)
        if match is None:
            yield name, tensor
            continue
        layer, part = match["layer"], match["part"]
        if part == "bias":
            yield f"{layer}.bias", tensor
            continue
        parts = pending.setdefault(layer, {})
        parts[part] = tensor
        if len(parts) == 3:
            del pending[layer]
            yield f"{layer}.weight", fold(parts["weight"], parts["A"], parts["B"], factor)
    if pending:
        raise RuntimeError(f"adapter parts missing for {len(pending)} layer(s), e.g. {sorted(pending)[0]}: "
                           f"have {sorted(pending[sorted(pending)[0]])}")


def fully_trained_modules(module: torch.nn.Module) -> list[str]:
    """The modules outside the adapters that train (the projector, the vision tower), by name:
    peft's `modules_to_save`, whose weights the adapter folder carries whole."""
    found = set()
    for name, param in module.named_parameters():
        if not param.requires_grad or is_adapter_parameter(name):
            continue
        key = next((k for k in PROJECTOR_KEYS if k in name), None) \
            or next((k.rstrip(".") for k in VISION_KEYS if k in name), None)
        if key is None:
            continue
        found.add(name[:name.index(key) + len(key)])
    # A module inside another one listed is saved with it.
    return sorted(m for m in found if not any(m != o and m.startswith(o + ".") for o in found))


def write_adapter(module: torch.nn.Module, state: dict[str, torch.Tensor], out_dir: str | Path) -> Path:
    """Write the adapter of `module` (weights from `state`, its full state dict with the
    adapters' names) to `out_dir` in peft's format: `adapter_config.json` and
    `adapter_model.safetensors`, loadable with `peft.PeftModel.from_pretrained(base, out_dir)`
    over the model the run started from (recorded as `base_model_name_or_path`)."""
    from peft import LoraConfig as PeftLoraConfig
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = module.peft_config[ADAPTER_NAME]
    modules_to_save = fully_trained_modules(module)
    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=config.target_modules, bias=config.bias,
                                 modules_to_save=modules_to_save or None, inference_mode=True,
                                 base_model_name_or_path=getattr(module.config, "_name_or_path", None) or None)
    peft_config.save_pretrained(str(out))
    tensors = {}
    for name, tensor in state.items():
        match = _ADAPTER_PART.match(name)
        if match is not None:
            key = f"{match['layer']}.lora_{match['part']}.weight"
        elif any(name.startswith(m + ".") for m in modules_to_save):
            key = name
        else:
            continue
        tensors[PEFT_FILE_PREFIX + key] = tensor.detach().to("cpu").contiguous().clone()
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out
