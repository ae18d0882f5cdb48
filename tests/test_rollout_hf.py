"""The hf rollout engine on the tiny model: groups, finish reasons, blocked tokens, sampling knobs."""
import pytest
import torch

from data_prep.registry import load_source
from mm_gpg.policy import load_policy
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import SamplingParams, build_engine


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir))
    source = load_source("synthetic", size=4)
    prompts = encode_prompts(policy.processor, [source[i] for i in range(3)], "r1", 112 * 112, 112 * 112)
    return policy, prompts, build_engine("hf", policy=policy)


def test_tiny_model_is_a_real_qwen2vl_checkpoint(tiny_model_dir):
    import json
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"]
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == config["image_token_id"]


def test_prompt_encoding_expands_image_tokens(setup):
    policy, prompts, _ = setup
    image_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for p in prompts:
        # 112x112 image, 14px patches merged 2x2: (112/28)^2 = 16 image tokens
        assert int((p.input_ids == image_id).sum()) == 16
        assert p.image_grid_thw.tolist() == [[1, 8, 8]]
        assert p.pixel_values.shape[0] == 64


def test_groups_finish_reasons_and_no_special_tokens(setup):
    policy, prompts, engine = setup
    groups = engine.generate(prompts, 4, SamplingParams(max_new_tokens=8, seed=1))
    assert len(groups) == 3 and all(len(g) == 4 for g in groups)
    eos = policy.eos_token_ids[0]
    for group in groups:
        for c in group:
            assert 1 <= len(c.token_ids) <= 8
            assert c.finish_reason == ("stop" if c.token_ids[-1] == eos else "length")
            body = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
            assert not any(policy.blocked_tokens[t] for t in body)
            assert eos not in body


def test_seeded_sampling_is_reproducible_and_greedy_is_deterministic(setup):
    _, prompts, engine = setup
    a = engine.generate(prompts, 2, SamplingParams(max_new_tokens=6, seed=5))
    b = engine.generate(prompts, 2, SamplingParams(max_new_tokens=6, seed=5))
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    g1 = engine.generate(prompts, 1, SamplingParams(max_new_tokens=6, greedy=True, seed=1))
    g2 = engine.generate(prompts, 1, SamplingParams(max_new_tokens=6, greedy=True, seed=2))
    assert [g[0].token_ids for g in g1] == [g[0].token_ids for g in g2]


def test_low_temperature_approaches_greedy(setup):
    _, prompts, engine = setup
    greedy = engine.generate(prompts, 1, SamplingParams(max_new_tokens=4, greedy=True))
    cold = engine.generate(prompts, 3, SamplingParams(max_new_tokens=4, temperature=1e-4, seed=3))
    for g, c in zip(greedy, cold):
        assert all(x.token_ids == g[0].token_ids for x in c)


def test_unknown_engine():
    with pytest.raises(KeyError, match="supported"):
        build_engine("trt", policy=None)


@pytest.mark.parametrize("sampling", [
    SamplingParams(greedy=True, max_new_tokens=6),
    SamplingParams(temperature=1.0, max_new_tokens=6, seed=11),
    SamplingParams(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=6, seed=3),
], ids=["greedy", "sampled", "top_k_top_p"])
def test_shared_prompt_decoding_gives_generates_tokens(setup, sampling):
    """The engine's own loop (each prompt prefilled once, its keys/values shared by the group)
    draws the very tokens `generate(num_return_sequences=n)` draws from the same seed."""
    from mm_gpg.policy import shares_prompt_prefix
    policy, prompts, shared = setup
    assert shared.share_prompts and shares_prompt_prefix(policy.model.model)
    reference = build_engine("hf", policy=policy, share_prompts=False)
    n = 1 if sampling.greedy else 3
    ours, theirs = shared.generate(prompts, n, sampling), reference.generate(prompts, n, sampling)
    assert [[c.token_ids for c in g] for g in ours] == [[c.token_ids for c in g] for g in theirs]
    assert [[c.finish_reason for c in g] for g in ours] == [[c.finish_reason for c in g] for g in theirs]
    assert [[c.text for c in g] for g in ours] == [[c.text for c in g] for g in theirs]


def test_prompts_keep_the_configured_image_size(setup):
    """data.min_pixels/max_pixels decide the image tokens, not the checkpoint's processor (whose
    own bounds are 112x112 for the tiny model)."""
    policy, _, _ = setup
    source = load_source("synthetic", size=2)
    image_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for pixels, grid, tokens in ((112 * 112, [1, 8, 8], 16), (224 * 224, [1, 16, 16], 64)):
        # 224x224 in 14-px patches is 16x16 = 256 patches, merged 2x2 into 64 image tokens
        (prompt,) = encode_prompts(policy.processor, [source[0]], "r1", pixels, pixels)
        assert prompt.image_grid_thw.tolist() == [grid]
        assert int((prompt.input_ids == image_id).sum()) == tokens
        assert prompt.pixel_values.shape[0] == grid[1] * grid[2]
