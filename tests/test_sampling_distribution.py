"""One sampling distribution: what the hf engine samples from is what the learner's log-probs use
(blocked ids masked, logits / T), and a checkpoint's generation_config.json changes neither."""
import pytest
import torch

from data_prep.registry import load_source
from mm_gpg.algorithms import ALGORITHMS
from mm_gpg.learner import Learner
from mm_gpg.policy import load_policy
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import SamplingParams, build_engine
from mm_gpg.rollout.hf import warp_logits

T = 0.7


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompts(policy):
    source = load_source("synthetic", size=4)
    return encode_prompts(policy.processor, [source[i] for i in range(2)], "r1", 112 * 112, 112 * 112)


def _padded(groups, width):
    rows = [c.logprobs for g in groups for c in g]
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("share_prompts", [True, False], ids=["engine_loop", "generate"])
def test_engine_sampling_logprobs_equal_the_learners_at_temperature_0_7(policy, prompts, dist, share_prompts):
    engine = build_engine("hf", policy=policy, share_prompts=share_prompts)
    groups = engine.generate(prompts, 3, SamplingParams(temperature=T, max_new_tokens=8, seed=3))
    assert all(len(c.logprobs) == len(c.token_ids) for g in groups for c in g)
    learner = Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=0,
                      micro_batch_groups=2, local_groups=2, group_size=3, temperature=T)
    ours, mask = learner.logprobs(prompts, groups)
    theirs = _padded(groups, ours.shape[1])
    assert int(mask.sum()) == sum(len(c.token_ids) for g in groups for c in g)
    # Same distribution: equal up to float noise (the engine decodes token by token on a cache,
    # the learner runs each completion at once).
    assert torch.allclose(ours * mask, theirs, atol=1e-4), (ours * mask - theirs).abs().max()
    # ... and the test can tell: the T = 1 log-probs (what the learner used before) are far off.
    untempered = Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=0,
                         micro_batch_groups=2, local_groups=2, group_size=3, temperature=1.0)
    at_one, _ = untempered.logprobs(prompts, groups)
    assert (at_one * mask - theirs).abs().max() > 0.05


def test_greedy_reports_no_sampling_logprobs(policy, prompts):
    groups = build_engine("hf", policy=policy).generate(prompts, 1, SamplingParams(greedy=True, max_new_tokens=4))
    assert all(c.logprobs is None for g in groups for c in g)


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.7), SamplingParams(top_k=3),
                                      SamplingParams(top_p=0.6), SamplingParams(temperature=1.3, top_k=5, top_p=0.8)],
                         ids=["temperature", "top_k", "top_p", "all"])
def test_warp_logits_is_generates_own_temperature_top_k_top_p(sampling):
    """The engine applies its own warper in both paths (to record log-probs); it must be exactly
    the one `generate` would have applied."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    logits[:, 7] = float("-inf")  # a blocked id
    hf = LogitsProcessorList()
    if sampling.temperature != 1.0:
        hf.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        hf.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        hf.append(TopPLogitsWarper(sampling.top_p))
    expected = hf(torch.zeros(4, 1, dtype=torch.long), logits.clone())
    assert torch.equal(warp_logits(logits, sampling), expected)


def test_warp_logits_small_case():
    # logits [2, 1, 0, -inf] at T = 0.5 -> [4, 2, 0, -inf]; softmax ~ [0.867, 0.117, 0.016, 0].
    # top_p = 0.9: ascending cumulative mass [0, 0.016, 0.133, 1.0]; removed where <= 0.1, so the
    # blocked id (0) and id 2 (0.016) go, ids 0 and 1 stay (0.867 + 0.117 >= 0.9).
    out = warp_logits(torch.tensor([[2.0, 1.0, 0.0, float("-inf")]]), SamplingParams(temperature=0.5, top_p=0.9))
    assert out.tolist() == [[4.0, 2.0, float("-inf"), float("-inf")]]


def test_a_checkpoints_generation_config_changes_nothing(tiny_model_dir, prompts):
    """The generic `generate` path samples exactly as with a blank generation_config, whatever the
    checkpoint's says (Qwen2-VL-Instruct ships temperature 0.01 / top_k 1; Qwen2.5-VL a
    repetition_penalty of 1.05)."""
    policy = load_policy(str(tiny_model_dir))
    engine = build_engine("hf", policy=policy, share_prompts=False)
    cases = [SamplingParams(temperature=1.0, max_new_tokens=8, seed=4), SamplingParams(greedy=True, max_new_tokens=8)]
    clean = [engine.generate(prompts, 3 if not s.greedy else 1, s) for s in cases]
    config = policy.model.generation_config
    checkpoint_says = {"repetition_penalty": 50.0, "no_repeat_ngram_size": 1, "temperature": 0.01, "top_k": 1,
                       "top_p": 0.001, "min_new_tokens": 8, "suppress_tokens": list(range(14, 200)),
                       "bad_words_ids": [[i] for i in range(200, 400)]}
    for key, value in checkpoint_says.items():
        setattr(config, key, value)
    dirty = [engine.generate(prompts, 3 if not s.greedy else 1, s) for s in cases]
    for a, b in zip(clean, dirty):
        assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    # The checkpoint's settings are back afterwards (they are the model's, not ours to drop).
    assert {k: getattr(config, k) for k in checkpoint_says} == checkpoint_says


def test_the_config_refuses_a_non_positive_temperature():
    from mm_gpg.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=r"'rollout.temperature': must be > 0"):
        load_config(overrides=["rollout.temperature=0"])


def test_grpo_is_the_only_algorithm_with_a_kl_term():
    assert [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).kl] == ["grpo"]
