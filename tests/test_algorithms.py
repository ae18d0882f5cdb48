"""Advantages, alpha and policy losses on tiny hand-worked tensors (working in comments)."""
import math

import pytest
import torch

from mm_gpg.algorithms import (ADVANTAGES, ALGORITHMS, AGGREGATIONS, POLICY_LOSSES, aggregation_normalizer,
                               correction_factor, group_mean_advantages, kl_k3, policy_loss, resolve_algorithm,
                               valid_groups)
from mm_gpg.trainer import Group, assemble_batch

GPG = ALGORITHMS.get("gpg")


def test_group_mean_advantage_hand_worked():
    # group 0: rewards 1,0,0,1 -> mean 0.5 -> A = +.5 -.5 -.5 +.5
    # group 1: rewards 1,1,1,1 -> all equal -> invalid -> A = 0
    # group 2: rewards 0.2, 1.1, 0, 0.1 -> mean 0.35 -> A = -.15, .75, -.35, -.25
    r = torch.tensor([[1., 0, 0, 1], [1, 1, 1, 1], [0.2, 1.1, 0, 0.1]])
    a = group_mean_advantages(r)
    expected = torch.tensor([[.5, -.5, -.5, .5], [0, 0, 0, 0], [-.15, .75, -.35, -.25]])
    assert torch.allclose(a, expected, atol=1e-6)
    assert valid_groups(r).tolist() == [True, False, True]


def test_std_scaling_uses_sample_std_and_leaves_invalid_groups_zero():
    # group 0: 1,0,0,1: centred +-.5; sample std = sqrt(4 * .25 / 3) = sqrt(1/3) = .57735
    # -> A = +-.5 / .57735 = +-.86603
    r = torch.tensor([[1., 0, 0, 1], [2, 2, 2, 2]])
    a = group_mean_advantages(r, scale_rewards="std")
    assert torch.allclose(a[0], torch.tensor([.86603, -.86603, -.86603, .86603]), atol=1e-4)
    assert torch.equal(a[1], torch.zeros(4))  # no 0/0 for the invalid group
    assert torch.isfinite(a).all()


def test_g_equals_one_is_never_valid():
    # A single sample has no group to compare with: std 0 -> invalid -> advantage 0.
    r = torch.tensor([[1.0], [0.0]])
    assert valid_groups(r).tolist() == [False, False]
    assert torch.equal(group_mean_advantages(r), torch.zeros(2, 1))
    assert torch.equal(group_mean_advantages(r, "std"), torch.zeros(2, 1))


def test_unknown_scale_rewards_rejected():
    with pytest.raises(ValueError, match="scale_rewards"):
        group_mean_advantages(torch.ones(1, 2), scale_rewards="max")


@pytest.mark.parametrize("n_valid,n_groups,alpha", [
    (16, 16, 1.0),    # all valid: 1/min(1, 1) = 1
    (8, 16, 2.0),     # half valid: 1/(8/16) = 2
    (6, 16, 16 / 6),  # 1/(6/16) = 2.667
    (0, 16, 1.0),     # none valid: guarded to 1 (the loss is 0 anyway)
    (20, 16, 1.0),    # more valid than groups (cannot exceed 1): min(1, 20/16) = 1
])
def test_correction_factor(n_valid, n_groups, alpha):
    assert correction_factor(n_valid, n_groups) == pytest.approx(alpha)


def test_alpha_equals_b_over_b_minus_m():
    # DESIGN: alpha = B / (B - M) with M the samples in invalid groups.
    # 4 groups of G=3, one invalid: B = 12 samples, M = 3 -> 12/9 = 4/3 = n_groups/n_valid.
    assert correction_factor(3, 4) == pytest.approx(12 / 9)


def test_gpg_token_mean_loss_hand_worked():
    # Two completions: lengths 2 and 1 (mask), advantages +1 and -0.5, alpha 2.
    # logprobs: [-1, -2], [-0.5, (pad)]
    # sum_i sum_t A_i logp = 1*(-1) + 1*(-2) + (-0.5)*(-0.5) = -3 + 0.25 = -2.75
    # token mean over 3 tokens: -2.75/3; loss = -alpha * that = 2 * 2.75 / 3 = 1.8333
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -0.5])
    loss = policy_loss(GPG, logp, mask, adv, normalizer=3, alpha=2.0)
    assert loss.item() == pytest.approx(2 * 2.75 / 3)


def test_seq_mean_aggregation_hand_worked():
    # Same as above, seq_mean: completion 0: (1*-1 + 1*-2)/2 = -1.5; completion 1: 0.25/1 = .25
    # mean over 2 completions: (-1.5 + .25)/2 = -.625; loss = -alpha * (-.625) = 1.25 (alpha 2)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss = policy_loss(GPG, logp, mask, torch.tensor([1.0, -0.5]), normalizer=2, alpha=2.0,
                       aggregation="seq_mean")
    assert loss.item() == pytest.approx(1.25)


def test_reinforce_ignores_alpha():
    logp = torch.tensor([[-1.0]])
    mask = torch.ones(1, 1)
    reinforce = ALGORITHMS.get("reinforce")
    # -A*logp/1 = -(1)(-1) = 1 regardless of the alpha passed in
    assert policy_loss(reinforce, logp, mask, torch.tensor([1.0]), normalizer=1, alpha=5.0).item() == 1.0


def test_gpg_gradient_equals_minus_alpha_sum_a_grad_logp_over_tokens():
    """Autograd check: d loss / d theta = -alpha * sum_i A_i sum_t d log pi(o_it) / sum_i |o_i|."""
    torch.manual_seed(0)
    vocab, hidden = 5, 3
    theta = torch.randn(hidden, vocab, requires_grad=True)
    features = torch.randn(2, 4, hidden)          # N=2 completions, T=4 positions
    tokens = torch.randint(0, vocab, (2, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = torch.tensor([0.7, -0.3])
    alpha, n_tokens = 1.6, 5.0

    def logprobs(th):
        return torch.log_softmax(features @ th, -1).gather(-1, tokens[..., None]).squeeze(-1)

    loss = policy_loss(GPG, logprobs(theta), mask, adv, normalizer=n_tokens, alpha=alpha)
    (grad,) = torch.autograd.grad(loss, theta)
    expected = torch.zeros_like(theta)
    for i in range(2):
        for t in range(4):
            if mask[i, t]:
                (g,) = torch.autograd.grad(logprobs(theta)[i, t], theta)
                expected += -alpha * adv[i] * g / n_tokens
    assert torch.allclose(grad, expected, atol=1e-6)


def test_clipped_loss_on_policy_has_the_pg_gradient():
    # With old = current (one update per batch), rho = 1 and the clipped surrogate's gradient is
    # the plain policy gradient: d(-rho A)/d logp = -A.
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([0.5])
    clipped = POLICY_LOSSES.get("clipped")(logp, adv)
    clipped.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5]]))


def test_clipped_loss_clips_a_far_ratio():
    # rho = exp(0 - log .5) = 2 > 1.2 and A > 0: min(2A, 1.2A) = 1.2A -> loss -1.2 * 1 = -1.2
    logp = torch.tensor([[0.0]])
    old = torch.log(torch.tensor([[0.5]]))
    out = POLICY_LOSSES.get("clipped")(logp, torch.tensor([1.0]), old, 0.2)
    assert out.item() == pytest.approx(-1.2)


def test_kl_k3_hand_worked():
    # delta = ref - pi = log(0.5) - log(1) = -0.6931: exp(delta) - delta - 1 = .5 + .6931 - 1 = .1931
    assert kl_k3(torch.tensor([0.0]), torch.log(torch.tensor([0.5]))).item() == pytest.approx(0.19315, abs=1e-4)


def test_kl_needs_reference():
    with pytest.raises(ValueError, match="reference"):
        policy_loss(ALGORITHMS.get("grpo"), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1), normalizer=1,
                    kl_coef=0.1)


def test_empty_completion_contributes_nothing():
    # Completion 1 has no tokens (mask all 0): token_mean counts 2 tokens, seq_mean counts it as 0.
    logp = torch.tensor([[-1.0, -1.0], [-5.0, -5.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    adv = torch.tensor([1.0, 3.0])
    # token_mean: -(1*-1 + 1*-1)/2 = 1
    assert policy_loss(GPG, logp, mask, adv, normalizer=2).item() == pytest.approx(1.0)
    # seq_mean: (2/2 + 0)/2 completions = .5
    assert policy_loss(GPG, logp, mask, adv, normalizer=2, aggregation="seq_mean").item() == pytest.approx(0.5)


def test_all_groups_invalid_gives_zero_loss_and_alpha_one():
    r = torch.full((3, 4), 0.5)
    adv = group_mean_advantages(r).reshape(-1)
    alpha = correction_factor(int(valid_groups(r).sum()), 3)
    loss = policy_loss(GPG, torch.randn(12, 5), torch.ones(12, 5), adv, normalizer=60, alpha=alpha)
    assert alpha == 1.0 and loss.item() == 0.0


def test_normalizers():
    # token_mean: tokens; seq_mean: completions; Dr. GRPO: completions * max_new_tokens
    assert aggregation_normalizer("token_mean", 37, 8, 24) == 37
    assert aggregation_normalizer("seq_mean", 37, 8, 24) == 8
    assert aggregation_normalizer("seq_sum_const", 37, 8, 24) == 8 * 24
    assert aggregation_normalizer("token_mean", 0, 8, 24) == 1  # guarded


@pytest.mark.parametrize("registry", [ADVANTAGES, POLICY_LOSSES, AGGREGATIONS, ALGORITHMS])
def test_unknown_name_lists_supported(registry):
    with pytest.raises(KeyError, match="supported"):
        registry.get("nope")


def test_unknown_algorithm_suggests_nearest():
    with pytest.raises(KeyError, match="did you mean 'gpg'"):
        ALGORITHMS.get("gpgg")


def test_resolve_algorithm_puts_the_config_overrides_in_the_registry_entry():
    # No override: the entry itself (grpo: std-scaled advantages, per-sequence mean).
    assert resolve_algorithm("grpo") == ALGORITHMS.get("grpo")
    grpo = resolve_algorithm("grpo", scale_rewards="none", aggregation="token_mean")
    assert (grpo.scale_rewards, grpo.aggregation) == ("none", "token_mean")
    assert (grpo.policy_loss, grpo.uses_alpha, grpo.kl) == ("clipped", False, True)  # the rest is grpo's
    gpg = resolve_algorithm("gpg", scale_rewards="std")
    assert (gpg.scale_rewards, gpg.aggregation, gpg.uses_alpha) == ("std", "token_mean", True)
    assert ALGORITHMS.get("gpg").scale_rewards == "none"  # the registry entry is not changed
    with pytest.raises(ValueError, match="scale_rewards must be one of"):
        resolve_algorithm("gpg", scale_rewards="mad")
    with pytest.raises(KeyError, match="did you mean 'seq_mean'"):
        resolve_algorithm("gpg", aggregation="seq_man")


def test_assemble_batch_puts_valid_groups_first():
    def group(rewards):
        return Group(prompt=None, completions=[], rewards=torch.tensor(rewards), components={})
    draws = [group([1., 1]), group([0., 1]), group([0., 0]), group([1., 0]), group([1., 1])]
    batch = assemble_batch(draws, 3)
    assert [g.rewards.tolist() for g in batch] == [[0., 1], [1., 0], [1., 1]]
