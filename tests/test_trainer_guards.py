"""Audit items of the training loop: the resampling cap counts draws as the official code does,
a KL coefficient is refused where the loss has no KL term, and a batch with no valid group takes
no optimizer step."""
from pathlib import Path

import pytest
import torch

from mm_gpg.config import Config, ConfigError, load_config
from mm_gpg.rollout import Completion, RolloutEngine
from mm_gpg.trainer import Group, Trainer
from rewards import build_scorer

LENGTH_REWARD = str(Path(__file__).parent / "fixtures" / "rewards" / "user_reward.py") + ":length_penalty"


class StubEngine(RolloutEngine):
    """Counts its `generate` calls (one per draw). Its completions' texts are all alike (every
    group invalid under a length reward) until call `valid_from` (1-based), from which on each
    group's texts differ in length (every group valid)."""

    def __init__(self, valid_from: int | None = None):
        self.calls = 0
        self.valid_from = valid_from

    def generate(self, prompts, n, sampling):
        self.calls += 1
        valid = self.valid_from is not None and self.calls >= self.valid_from
        return [[Completion(token_ids=[20, 21], text="x" * (1 + j if valid else 1), finish_reason="length")
                 for j in range(n)] for _ in prompts]

    def load_weights(self, named_tensors):
        pass


@pytest.fixture(scope="module")
def scorer():
    with build_scorer([{"fn": LENGTH_REWARD}], num_workers=0) as s:
        yield s


def _trainer(tiny_policy, scorer, engine, dist, tmp_path, algorithm="gpg", **algo) -> Trainer:
    config = Config()
    config.output_dir = str(tmp_path)
    config.progress = False
    config.data.train = [{"source": "synthetic", "options": {"split": "train", "size": 64}}]
    config.rollout.group_size = 2
    config.train.prompts_per_step = 2
    config.algorithm.name = algorithm
    for key, value in algo.items():
        setattr(config.algorithm, key, value)
    # collect() uses no learner: None stands for it here.
    return Trainer(config, tiny_policy, engine, None, scorer, dist)


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    from mm_gpg.policy import load_policy
    return load_policy(str(tiny_model_dir))


def test_no_valid_group_ever_stops_after_20_draws_in_all(tiny_policy, scorer, dist, tmp_path):
    """Official: `n_gen = 1; while n_gen <= 20`: the first draw and 19 more, 20 in all."""
    engine = StubEngine(valid_from=None)
    trainer = _trainer(tiny_policy, scorer, engine, dist, tmp_path)
    assert trainer.config.algorithm.max_draws == 20
    batch, sampled, metrics = trainer.collect()
    assert engine.calls == 20 and metrics["groups/draws"] == 20
    assert len(sampled) == 20 * 2 and len(batch) == 2  # 2 prompts per draw
    assert trainer.state.total_draws == 20


@pytest.mark.parametrize("max_draws,valid_from,expected", [
    (3, None, 3),   # the cap: 3 draws in all
    (1, None, 1),   # 1: never resample
    (20, 1, 1),     # enough valid groups on the first draw
    (20, 4, 4),     # ... on the fourth: draws 1-3 all invalid, draw 4 all valid
])
def test_draws_stop_at_the_cap_or_when_enough_groups_are_valid(tiny_policy, scorer, dist, tmp_path, max_draws,
                                                               valid_from, expected):
    engine = StubEngine(valid_from=valid_from)
    trainer = _trainer(tiny_policy, scorer, engine, dist, tmp_path, max_draws=max_draws)
    _, _, metrics = trainer.collect()
    assert engine.calls == expected and metrics["groups/draws"] == expected


def test_an_algorithm_that_does_not_resample_draws_once(tiny_policy, scorer, dist, tmp_path):
    engine = StubEngine(valid_from=None)
    _trainer(tiny_policy, scorer, engine, dist, tmp_path, algorithm="reinforce").collect()
    assert engine.calls == 1


def test_the_cap_is_named_for_what_it_counts():
    with pytest.raises(ConfigError, match=r"unknown config key 'algorithm.max_extra_draws' \(did you mean "
                                          r"'algorithm.max_draws'\?"):
        load_config(overrides=["algorithm.max_extra_draws=20"])
    with pytest.raises(ConfigError, match=r"'algorithm.max_draws': must be >= 1"):
        load_config(overrides=["algorithm.max_draws=0"])


@pytest.mark.parametrize("name", ["gpg", "reinforce", "dr_grpo"])
def test_kl_coef_is_an_error_where_the_loss_has_no_kl_term(name):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[f"algorithm.name={name}", "algorithm.kl_coef=0.05"])
    assert str(info.value) == (f"config key 'algorithm.kl_coef': must be 0 for {name}, whose loss has no KL term "
                               f"(algorithms with one: grpo)")


def test_kl_coef_is_accepted_for_grpo():
    assert load_config(overrides=["algorithm.name=grpo", "algorithm.kl_coef=0.05"]).algorithm.kl_coef == 0.05


def _groups(policy, valid: list[bool]):
    """Hand-made groups of 2: a valid one has rewards [1, 0], an invalid one [0, 0]."""
    from data_prep.registry import load_source
    from mm_gpg.prompting import encode_prompts
    source = load_source("synthetic", size=8, seed=5)
    prompts = encode_prompts(policy.processor, [source[i] for i in range(len(valid))], "r1", 112 * 112, 112 * 112)
    return [Group(p, [Completion(token_ids=[30 + k, 40 + j, 50], text="", finish_reason="length") for j in range(2)],
                  torch.tensor([1.0, 0.0]) if v else torch.zeros(2), {})
            for k, (p, v) in enumerate(zip(prompts, valid))]


def test_a_batch_with_no_valid_group_takes_no_optimizer_step(tiny_model_dir, dist, tmp_path):
    """Its policy gradient is zero, but an optimizer step would still move the weights (Adam's
    momentum from the step before) and advance the LR schedule."""
    from mm_gpg.learner import Learner
    from mm_gpg.policy import load_policy
    policy = load_policy(str(tiny_model_dir))
    learner = Learner(policy, lr=1e-2, warmup_steps=4, weight_decay=0.0, grad_clip=1e9, zero_stage=0,
                      micro_batch_groups=2, local_groups=2, group_size=2)
    config = Config()
    config.output_dir = str(tmp_path)
    config.rollout.group_size = 2
    config.train.prompts_per_step = 2
    trainer = Trainer(config, policy, StubEngine(), learner, None, dist)

    first = trainer.update(_groups(policy, [True, False]))
    assert first["update/no_valid_group"] == 0.0 and learner.updates_applied == 1
    after_first = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    lr = learner.lr  # warm-up: (1 + 1) / 4 of 1e-2 after one applied update
    assert lr == pytest.approx(5e-3)

    second = trainer.update(_groups(policy, [False, False]))
    assert second["update/no_valid_group"] == 1.0
    assert second["groups/valid_fraction"] == 0.0 and second["loss"] == 0.0 and second["lr"] == lr
    assert learner.updates_applied == 1 and learner.updates_skipped == 0
    assert learner.lr == lr  # the schedule did not advance
    moved = [n for n, p in learner.module.named_parameters() if not torch.equal(after_first[n], p.detach())]
    assert not moved, f"{len(moved)} parameters moved on a batch without signal, e.g. {moved[:3]}"
