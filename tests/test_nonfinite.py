"""The non-finite guard: a non-finite loss or gradient skips the update (weights, optimizer state
and LR schedule untouched), is logged with its step, K in a row stop the run with a clear message,
and a checkpoint is never written from non-finite weights. One process, in the test process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_distributed import FakeEngine, FakeScorer, build_trainer, fixed_global_batch, make_learner


def _step(learner, prompts, groups, advantages):
    from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
    n_tokens = sum(len(c.token_ids) for grp in groups for c in grp)
    return learner.step(ALGORITHMS.get("gpg"), prompts, groups, advantages, alpha=1.0,
                        normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                        aggregation="token_mean", clip_eps=0.2)


def _snapshot(learner):
    return {n: p.detach().clone() for n, p in learner.module.named_parameters()}


@pytest.mark.parametrize("zero", [0, 2])
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_update_is_skipped_and_the_next_one_applies(tiny_model_dir, dist, zero, poison,
                                                                  monkeypatch):
    """A NaN loss with finite gradients (the all-ranks loss check refuses it), or an inf
    gradient with a finite loss (the optimizer guard under ZeRO 0, DeepSpeed's own overflow
    check under ZeRO 2): the update is refused, nothing moves, the next update applies."""
    import mm_gpg.learner
    from mm_gpg.policy import load_policy
    policy = load_policy(str(tiny_model_dir))
    prompts, groups, advantages = fixed_global_batch(policy, n_groups=2)
    learner = make_learner(policy, world_size=1, local_groups=2, micro=1, group_size=2, zero=zero, lr=1e-3)
    before = _snapshot(learner)
    lr_before = learner.scheduler.get_last_lr()
    if poison == "loss":
        real = mm_gpg.learner.policy_loss
        monkeypatch.setattr(mm_gpg.learner, "policy_loss",
                            lambda *a, **k: real(*a, **k) + torch.tensor(float("nan")))  # no gradient
        bad = _step(learner, prompts, groups, advantages)
        monkeypatch.setattr(mm_gpg.learner, "policy_loss", real)
    else:
        param = next(p for n, p in learner.module.named_parameters() if "lm_head" in n or "embed_tokens" in n)
        handle = param.register_hook(lambda g: g * float("inf"))
        bad = _step(learner, prompts, groups, advantages)
        handle.remove()
    assert bad.skipped
    assert not (torch.isfinite(torch.tensor(bad.loss)) and torch.isfinite(torch.tensor(bad.grad_norm)))
    after = _snapshot(learner)
    assert all(torch.equal(before[n], after[n]) for n in before), "a refused update moved a weight"
    assert learner.scheduler.get_last_lr() == lr_before and learner.updates_skipped == 1
    good = _step(learner, prompts, groups, advantages)
    assert not good.skipped and learner.updates_applied == 1
    assert any(not torch.equal(before[n], p) for n, p in learner.module.named_parameters())
    assert all(bool(torch.isfinite(p).all()) for p in learner.module.parameters())


class PoisonedSteps:
    """The learner, with the advantages of chosen steps made NaN (so their loss is NaN)."""

    def __init__(self, learner, trainer, bad_steps):
        self._learner, self._trainer, self._bad = learner, trainer, set(bad_steps)

    def step(self, algorithm, prompts, groups, advantages, **kw):
        if self._trainer.state.step + 1 in self._bad:
            advantages = advantages * float("nan")
        return self._learner.step(algorithm, prompts, groups, advantages, **kw)

    def __getattr__(self, name):
        return getattr(self._learner, name)


def test_non_finite_steps_are_logged_and_k_in_a_row_stop_the_run(tiny_model_dir, dist, tmp_path):
    """Steps 2, 4 and 5 are poisoned, max_nonfinite = 2: step 2 is skipped, step 3 trains,
    steps 4 and 5 are skipped and the run stops at 5 with a message naming them; the weights
    are those after step 3, and the LR schedule advanced only on applied updates."""
    from mm_gpg.checkpoint import NonFiniteError, complete_checkpoints
    trainer = build_trainer(dist, tiny_model_dir, tmp_path, steps=8, max_nonfinite=2, checkpoint_every=1,
                            keep_checkpoints=0, warmup_steps=10, lr=1e-3)
    trainer.config.algorithm.min_valid_fraction = 0.0
    trainer.learner = PoisonedSteps(trainer.learner, trainer, {2, 4, 5})
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)
    assert "stopping at step 5" in message and "[4, 5]" in message and "after step 3" in message
    assert isinstance(info.value, ValueError)  # so `mm-gpg train` prints it as one error line
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["nonfinite/skipped"] for r in records] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert [r["nonfinite/in_a_row"] for r in records] == [0, 1, 0, 1, 2]
    assert records[1]["loss"] is None and records[0]["loss"] is not None
    # lr used by each step: warm-up (applied + 1) / 10 of 1e-3; skipped updates do not advance it
    assert [round(r["lr"] / 1e-4, 6) for r in records] == [1.0, 2.0, 2.0, 3.0, 3.0]
    saved = complete_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in saved] == [f"step-{s:08d}" for s in (1, 2, 3, 4)]  # none after the stop
    weights = {}
    for name in ("step-00000003", "step-00000004"):
        state = torch.load(tmp_path / "checkpoints" / name / "deepspeed" / "mp_rank_00_model_states.pt",
                           weights_only=False)["module"]
        weights[name] = state
    live = trainer.learner.module.state_dict()
    for key, value in weights["step-00000003"].items():
        assert torch.equal(value, weights["step-00000004"][key]) and torch.equal(value, live[key]), key


def test_a_checkpoint_is_never_written_from_non_finite_weights(tiny_model_dir, dist, tmp_path):
    from mm_gpg.checkpoint import NonFiniteError, complete_checkpoints
    trainer = build_trainer(dist, tiny_model_dir, tmp_path, steps=1, checkpoint_every=1)
    trainer.fit()
    root = tmp_path / "checkpoints"
    assert [p.name for p in complete_checkpoints(root)] == ["step-00000001"]
    listing = sorted(p.name for p in root.iterdir())
    # (the good checkpoint exports to exactly the live weights: `mm-gpg export`, ZeRO stage 0)
    from safetensors.torch import load_file
    from mm_gpg.cli import main
    assert main(["export", str(root / "step-00000001"), str(tmp_path / "hf")]) == 0
    trainer.save_pretrained(tmp_path / "live")
    exported, live = (load_file(tmp_path / d / "model.safetensors") for d in ("hf", "live"))
    assert exported.keys() == live.keys() and all(torch.equal(v, live[k]) for k, v in exported.items())
    with torch.no_grad():
        next(trainer.learner.module.parameters())[0].fill_(float("nan"))
    trainer.state.step = 2
    with pytest.raises(NonFiniteError, match="not finite; refusing"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in root.iterdir()) == listing  # nothing written, not even a temp folder
