"""The learner's prompt-sharing forward computes
the same log-probs, entropies and gradients as the full forward over every prompt + completion."""

import pytest
import torch

from data_prep.registry import load_source
from data_prep.schema import Sample
from mm_gpg.learner import collate
from mm_gpg.policy import completion_logprobs, load_policy, set_trainable, shares_prompt_prefix
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import Completion


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


def _batch(policy, lengths_per_group, text_only=False):
    source = load_source("synthetic", size=8, seed=3)
    samples = [source[i] for i in range(len(lengths_per_group))]
    if text_only:  # a prompt without an image, of another length, in the same micro-batch
        samples[-1] = Sample(id="text", question="What is 2 + 3 plus four?", answer="9", answer_type="integer",
                             task="text")
    prompts = encode_prompts(policy.processor, samples, "r1", 112 * 112, 112 * 112)
    gen = torch.Generator().manual_seed(7)
    groups = [[Completion(token_ids=torch.randint(14, 300, (n,), generator=gen).tolist(), text="",
                          finish_reason="length") for n in lengths] for lengths in lengths_per_group]
    return collate(prompts, groups, policy.pad_token_id)


def _logprobs_and_grads(policy, batch, share):
    policy.model.zero_grad(set_to_none=True)
    logprobs, entropy = completion_logprobs(policy.model, batch, policy.blocked_tokens, share_prompts=share)
    weights = torch.linspace(-1.0, 1.0, logprobs.shape[0])[:, None]  # advantages of both signs
    (-(weights * logprobs).sum() / batch["completion_mask"].sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    return logprobs.detach(), entropy, grads


@pytest.mark.parametrize("text_only", [False, True])
@pytest.mark.parametrize("projector", [False, True])
def test_shared_prompt_forward_equals_full_forward(policy, text_only, projector):
    set_trainable(policy.model, language_model=True, projector=projector, vision_tower=False)
    # Groups of different sizes and completion lengths, one empty completion.
    batch = _batch(policy, [[3, 5, 1], [4, 0, 2, 6], [2, 2]], text_only=text_only)
    assert shares_prompt_prefix(policy.model.model, batch)
    full = _logprobs_and_grads(policy, batch, share=False)
    shared = _logprobs_and_grads(policy, batch, share=True)
    assert torch.allclose(full[0], shared[0], atol=1e-5), (full[0] - shared[0]).abs().max()
    assert torch.allclose(full[1], shared[1], atol=1e-4)
    assert (shared[0][batch["completion_mask"] == 0] == 0).all()
    assert full[2].keys() == shared[2].keys() and len(full[2]) > 10
    if projector:
        assert any("merger" in n for n in full[2])
    for name in full[2]:
        assert torch.allclose(full[2][name], shared[2][name], atol=1e-7, rtol=1e-4), name


def test_shared_prompt_forward_is_used_only_for_known_families(policy):
    class Other(torch.nn.Module):
        config = type("C", (), {"model_type": "llava"})()
    assert not shares_prompt_prefix(Other())
    assert shares_prompt_prefix(policy.model.model)
    no_types = {"pixel_values": torch.zeros(1), "mm_token_type_ids": None}
    assert not shares_prompt_prefix(policy.model.model, no_types)
