"""Memory for real sizes, on the tiny model and the CPU: gradient checkpointing, the attention
kernel, bf16 throughout, and a `train.deepspeed` dict merged into the generated DeepSpeed config."""
import pytest
import torch

from mm_gpg.algorithms import ALGORITHMS
from mm_gpg.config import ConfigError, load_config
from mm_gpg.learner import Learner, merge_deepspeed_config
from mm_gpg.policy import load_policy
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import Completion, SamplingParams, build_engine

GPG = ALGORITHMS.get("gpg")
ADVANTAGES = torch.tensor([[0.5, -0.5], [1.0, -1.0]])


def _batch(policy):
    from data_prep.registry import load_source
    source = load_source("synthetic", size=4, seed=5)
    prompts = encode_prompts(policy.processor, [source[i] for i in range(2)], "r1", 112 * 112, 112 * 112)
    groups = [[Completion(token_ids=[30 + k, 40 + j, 50, 60 + j][: 2 + j + k], text="", finish_reason="length")
               for j in range(2)] for k in range(2)]
    return prompts, groups


def _learner(tiny_model_dir, dtype="float32", **kw):
    policy = load_policy(str(tiny_model_dir), dtype)
    kw.setdefault("zero_stage", 0)
    return policy, Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1e9, micro_batch_groups=2,
                           local_groups=2, group_size=2, **kw)


def _step(learner, prompts, groups):
    n_tokens = sum(len(c.token_ids) for g in groups for c in g)
    return learner.step(GPG, prompts, groups, ADVANTAGES, alpha=1.0, normalizer=float(n_tokens),
                        aggregation="token_mean", clip_eps=0.2)


def _captured_gradients(learner):
    seen = {}
    names = {id(p): n for n, p in learner.module.named_parameters()}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    seen[names[id(p)]] = p.grad.detach().clone()
    learner.engine.optimizer.register_step_pre_hook(hook)
    return seen


def _step_keeping_count(learner, prompts, groups):
    """`_step`, and the bytes of the tensors autograd keeps for the backward outside checkpointed
    layers (a checkpointed layer keeps its own inputs only, and recomputes the rest)."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _step(learner, prompts, groups)
    return out, sum(kept)


# ---------------------------------------------------------------- gradient checkpointing

def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(tiny_model_dir, dist):
    results = {}
    for checkpointing in (False, True):
        policy, learner = _learner(tiny_model_dir, gradient_checkpointing=checkpointing)
        prompts, groups = _batch(policy)
        grads = _captured_gradients(learner)
        out, kept = _step_keeping_count(learner, prompts, groups)
        results[checkpointing] = (out, grads, kept)
    (plain, g_plain, kept_plain), (ckpt, g_ckpt, kept_ckpt) = results[False], results[True]
    # About 9.7 MB kept for the backward without, 1.4 MB with (the rest is recomputed), although
    # with checkpointing every completion row carries its prompt (no shared prompt forward).
    assert kept_ckpt < kept_plain / 3, (kept_ckpt, kept_plain)
    assert ckpt.loss == pytest.approx(plain.loss, rel=1e-4)
    assert g_ckpt.keys() == g_plain.keys() and len(g_plain) > 10
    for name in g_plain:
        assert torch.allclose(g_ckpt[name], g_plain[name], atol=1e-6, rtol=1e-3), name


def test_checkpointing_is_really_on_and_rollouts_still_use_the_cache(tiny_model_dir, dist):
    policy, learner = _learner(tiny_model_dir, gradient_checkpointing=True)
    layers = learner.module.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    prompts, groups = _batch(policy)
    _step(learner, prompts, groups)
    # The learner leaves the module in train mode, where checkpointed layers switch the KV cache
    # off; the engine generates in eval mode (and puts train mode back), so decoding on the
    # cache gives the tokens an eval-mode module gives.
    assert learner.module.training
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2)
    in_train_mode = build_engine("hf", policy=policy).generate(prompts, 2, sampling)
    assert learner.module.training
    learner.module.eval()
    in_eval_mode = build_engine("hf", policy=policy).generate(prompts, 2, sampling)
    assert [[c.token_ids for c in g] for g in in_train_mode] == [[c.token_ids for c in g] for g in in_eval_mode]


# ---------------------------------------------------------------- attention kernel

def test_attention_implementation_auto_is_sdpa_here_and_explicit_choices_load(tiny_model_dir):
    assert load_policy(str(tiny_model_dir)).model.config._attn_implementation == "sdpa"
    assert load_policy(str(tiny_model_dir), attn_implementation="eager").model.config._attn_implementation == "eager"
    assert load_config().model.attn_implementation == "auto"
    with pytest.raises(ConfigError, match=r"'model.attn_implementation': must be one of auto, sdpa, eager, "
                                          r"flash_attention_2"):
        load_config(overrides=["model.attn_implementation=flash"])


# ---------------------------------------------------------------- bf16

def test_bf16_throughout_bf16_weights_fp32_master_copy(tiny_model_dir, dist):
    policy, learner = _learner(tiny_model_dir, dtype="bfloat16")  # train.bf16 null: follows the dtype
    assert learner.engine.bfloat16_enabled()
    assert {p.dtype for p in learner.module.parameters()} == {torch.bfloat16}
    # The optimizer updates fp32 master weights (bf16 alone cannot hold a 1e-3-sized step of a
    # weight near 1: its spacing there is 2^-7).
    masters = [p for group in learner.optimizer.param_groups for p in group["params"]]
    assert masters and {p.dtype for p in masters} == {torch.float32}
    before = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    prompts, groups = _batch(policy)
    out = _step(learner, prompts, groups)
    assert not out.skipped and torch.isfinite(torch.tensor(out.loss))
    assert any(not torch.equal(before[n], p.detach()) for n, p in learner.module.named_parameters())
    # The rollout runs on the same bf16 module.
    groups = build_engine("hf", policy=policy).generate(prompts, 2, SamplingParams(max_new_tokens=4, seed=1))
    assert all(c.token_ids for g in groups for c in g)


def test_dtype_auto_is_float32_on_the_cpu_and_bf16_can_be_forced_off(tiny_model_dir, dist):
    assert load_config().model.dtype == "auto" and load_config().train.bf16 is None
    assert next(load_policy(str(tiny_model_dir)).model.parameters()).dtype == torch.float32
    _, learner = _learner(tiny_model_dir, dtype="bfloat16", bf16=False)
    assert not learner.engine.bfloat16_enabled()
    with pytest.raises(ConfigError, match=r"'train.bf16': must be true, false or null"):
        load_config(overrides=["train.bf16=maybe"])


# ---------------------------------------------------------------- train.deepspeed

def test_merge_is_key_by_key_and_refuses_what_the_learner_owns():
    generated = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    extra = {"zero_optimization": {"offload_optimizer": {"device": "cpu"}, "reduce_bucket_size": 5e7},
             "bf16": {"check_grad_overflow": False}}
    # nested dicts merge: the generated stage stays beside the new keys
    assert merge_deepspeed_config(generated, extra) == {
        "train_micro_batch_size_per_gpu": 4,
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}, "reduce_bucket_size": 5e7},
        "bf16": {"enabled": True, "check_grad_overflow": False}}
    assert generated["zero_optimization"] == {"stage": 2}  # not modified in place
    for owned, instead in [({"zero_optimization": {"stage": 3}}, "train.zero_stage"),
                           ({"gradient_clipping": 0.5}, "train.grad_clip"),
                           ({"optimizer": {"type": "Adam"}}, "train.lr"),
                           ({"train_micro_batch_size_per_gpu": 8}, "train.micro_batch_groups")]:
        with pytest.raises(ValueError, match=rf"^train\.deepspeed\.\S+: set by .*{instead}"):
            merge_deepspeed_config(generated, owned)


def test_deepspeed_dict_reaches_the_engine(tiny_model_dir, dist):
    extra = {"zero_optimization": {"reduce_bucket_size": 12345, "offload_optimizer": {"device": "cpu"}}}
    policy, learner = _learner(tiny_model_dir, zero_stage=2, deepspeed_config=extra)
    assert learner.engine.zero_optimization_stage() == 2
    assert learner.engine.zero_reduce_bucket_size() == 12345
    assert learner.engine.zero_offload_optimizer() is not None
    assert learner.deepspeed_config["gradient_clipping"] == 1e9  # the generated keys are kept
    prompts, groups = _batch(policy)
    assert not _step(learner, prompts, groups).skipped  # the guarded optimizer still runs under offload


@pytest.mark.parametrize("extra,message", [
    ({"zero_optimization": {"reduce_bucket_sise": 1}},
     "train.deepspeed: DeepSpeed rejected the merged config (reduce_bucket_sise: Extra inputs are not permitted)"),
    ({"zero_optimisation": {"stage": 1}},
     "train.deepspeed.zero_optimisation: not a DeepSpeed config key (did you mean 'zero_optimization'?)"),
], ids=["unknown_in_a_section", "unknown_section"])
def test_unknown_deepspeed_keys_are_one_line_errors(tiny_model_dir, dist, extra, message):
    with pytest.raises(ValueError) as info:
        _learner(tiny_model_dir, zero_stage=2, deepspeed_config=extra)
    assert str(info.value) == message


def test_train_deepspeed_comes_from_the_config():
    config = load_config(overrides=["train.deepspeed={zero_optimization: {offload_optimizer: {device: cpu}}}",
                                    "train.gradient_checkpointing=true"])
    assert config.train.deepspeed == {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}
    assert config.train.gradient_checkpointing is True
    with pytest.raises(ConfigError, match=r"key 'train.deepspeed' expects dict"):
        load_config(overrides=["train.deepspeed=3"])
