"""The policy's log-probs and the DeepSpeed learner on the real tiny Qwen2-VL."""
import copy

import pytest
import torch

from data_prep.registry import load_source
from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
from mm_gpg.learner import Learner, collate
from mm_gpg.policy import PROJECTOR_KEYS, VISION_KEYS, completion_logprobs, load_policy, set_trainable
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import Completion

GPG = ALGORITHMS.get("gpg")


@pytest.fixture()
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


def _prompts(policy, n=2, seed=0):
    source = load_source("synthetic", size=8, seed=seed)
    return encode_prompts(policy.processor, [source[i] for i in range(n)], "r1", 112 * 112, 112 * 112)


def _groups(n_prompts, g, lengths=(3, 5, 1, 4)):
    gen = torch.Generator().manual_seed(1)
    return [[Completion(token_ids=torch.randint(14, 200, (lengths[(i + j) % len(lengths)],), generator=gen).tolist(),
                        text="", finish_reason="length") for j in range(g)] for i in range(n_prompts)]


def test_completion_logprobs_match_a_full_forward(policy):
    """Per-prompt vision features + completion-only projection give the same numbers as the plain
    model forward over every position with pixel values repeated per completion."""
    prompts = _prompts(policy)
    groups = _groups(2, 3)
    batch = collate(prompts, groups, policy.pad_token_id)
    with torch.no_grad():
        fast, _ = completion_logprobs(policy.model, batch, policy.blocked_tokens)
        per_sample = [i for i in batch["image_owner"].tolist()]
        logits = policy.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              mm_token_type_ids=batch["mm_token_type_ids"],
                              pixel_values=torch.cat([prompts[i].pixel_values for i in per_sample]),
                              image_grid_thw=torch.cat([prompts[i].image_grid_thw for i in per_sample])).logits
        logp = torch.log_softmax(logits.masked_fill(policy.blocked_tokens, float("-inf")), -1)
    for n in range(batch["input_ids"].shape[0]):
        for t in range(int(batch["completion_mask"][n].sum())):
            pos = int(batch["completion_positions"][n, t])
            token = int(batch["completion_ids"][n, t])
            assert fast[n, t].item() == pytest.approx(logp[n, pos - 1, token].item(), abs=1e-5)
    assert (fast[batch["completion_mask"] == 0] == 0).all()


def test_blocked_tokens_cover_special_ids_but_not_end_of_turn(policy):
    tok = policy.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert not policy.blocked_tokens[im_end]
    for name in ("<|image_pad|>", "<|vision_start|>", "<|endoftext|>", "<|im_start|>", "<|video_pad|>"):
        assert policy.blocked_tokens[tok.convert_tokens_to_ids(name)], name


def test_set_trainable_parts(policy):
    counts = set_trainable(policy.model, language_model=True, projector=True, vision_tower=False)
    assert counts["projector"] > 0 and counts["vision_tower"] == 0 and counts["language_model"] > 0
    for name, p in policy.model.named_parameters():
        if any(k in name for k in PROJECTOR_KEYS):
            assert p.requires_grad
        elif any(k in name for k in VISION_KEYS):
            assert not p.requires_grad, name
    with pytest.raises(ValueError, match="no trainable parameters"):
        set_trainable(policy.model, False, False, False)


def _learner(policy, micro, local_groups, g, **kw):
    return Learner(policy, lr=1e-2, warmup_steps=1, weight_decay=0.0, grad_clip=1e9, zero_stage=kw.pop("zero", 0),
                   bf16=False, micro_batch_groups=micro, local_groups=local_groups, group_size=g, **kw)


def _step(learner, prompts, groups, advantages):
    n_tokens = sum(len(c.token_ids) for grp in groups for c in grp)
    return learner.step(GPG, prompts, groups, advantages, alpha=1.5,
                        normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                        aggregation="token_mean", clip_eps=0.2)


def test_frozen_vision_tower_does_not_move_but_projector_and_lm_do(tiny_model_dir, dist):
    policy = load_policy(str(tiny_model_dir))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    learner = _learner(policy, 2, 2, 3, train_projector=True)
    prompts, groups = _prompts(policy), _groups(2, 3)
    _step(learner, prompts, groups, torch.tensor([[1.0, -0.5, -0.5], [0.3, -0.3, 0.0]]))
    moved = {n: not torch.equal(before[n], p.detach()) for n, p in learner.module.named_parameters()}
    tower = [n for n in moved if any(k in n for k in VISION_KEYS) and not any(k in n for k in PROJECTOR_KEYS)]
    projector = [n for n in moved if any(k in n for k in PROJECTOR_KEYS)]
    assert tower and not any(moved[n] for n in tower), "a frozen vision-tower weight moved"
    assert any(moved[n] for n in projector), "the trainable projector did not move"
    assert any(moved[n] for n in moved if n not in tower and n not in projector)


def _captured_gradients(learner):
    """The gradients the optimizer is handed (Adam would amplify float noise in the weights)."""
    seen = {}
    names = {id(p): n for n, p in learner.module.named_parameters()}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    seen[names[id(p)]] = p.grad.detach().clone()
    learner.engine.optimizer.register_step_pre_hook(hook)
    return seen


def test_gradient_accumulation_equals_one_big_batch(tiny_model_dir, dist):
    """4 groups as 4 micro-batches of 1 and as 1 micro-batch of 4 give the same update."""
    prompts_policy = load_policy(str(tiny_model_dir))
    prompts = _prompts(prompts_policy, n=4)
    groups = _groups(4, 2)
    adv = torch.tensor([[0.5, -0.5], [1.0, -1.0], [0.0, 0.0], [-0.25, 0.25]])
    results = []
    for micro in (1, 4):
        policy = load_policy(str(tiny_model_dir))
        learner = _learner(policy, micro, 4, 2)
        grads = _captured_gradients(learner)
        out = _step(learner, prompts, groups, adv)
        results.append((out, grads))
    (a, ga), (b, gb) = results
    assert a.loss == pytest.approx(b.loss, abs=1e-6)
    assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-7, rtol=1e-4), name
