"""Model families beyond Qwen2-VL, each a tiny model of its real architecture loaded through the
Auto classes: the learner's log-probs are the hf engine's sampling log-probs, the parts left
frozen do not move, and the default recipe runs end to end on each."""
import json

import pytest
import torch

from PIL import Image, ImageDraw

from data_prep.registry import load_source
from data_prep.schema import Sample
from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
from mm_gpg.learner import Learner
from mm_gpg.policy import load_policy, model_part
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import SamplingParams, build_engine
from mm_gpg.tiny import TINY_FAMILIES, build_tiny
from test_cli_train import REPO, run_cli, tiny_overrides

FAMILIES = {
    # family: (model class, processor class, whether it takes the Qwen fast paths)
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", True),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor", False),
}
T = 0.7


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    return request.param, build_tiny(tmp_path_factory.mktemp("models") / request.param, family=request.param)


@pytest.fixture(scope="module")
def policy(family_dir):
    return load_policy(str(family_dir[1]))


def _prompts(policy, n=2):
    source = load_source("synthetic", size=4)
    return encode_prompts(policy.processor, [source[i] for i in range(n)], "r1", 112 * 112, 112 * 112)


def _learner(policy, **kw):
    return Learner(policy, lr=1e-2, warmup_steps=1, weight_decay=0.0, grad_clip=1e9, zero_stage=0, bf16=False,
                   micro_batch_groups=2, local_groups=2, group_size=3, temperature=T, **kw)


def test_every_family_is_buildable_by_name():
    assert set(FAMILIES) <= set(TINY_FAMILIES) and "qwen2_vl" in TINY_FAMILIES
    with pytest.raises(ValueError, match=r"unknown tiny model family 'qwen25_vl' \(did you mean 'qwen2_5_vl'\?\)"):
        build_tiny("/nonexistent", family="qwen25_vl")


def test_the_tiny_model_loads_through_the_auto_classes_as_its_real_classes(family_dir, policy):
    family, _ = family_dir
    model_class, processor_class, _ = FAMILIES[family]
    assert type(policy.model).__name__ == model_class
    assert type(policy.processor).__name__ == processor_class
    prompt = _prompts(policy, 1)[0]
    # the chat template put the family's image placeholders in, and the processor expanded them
    image_token = policy.model.config.image_token_id
    assert int((prompt.input_ids == image_token).sum()) > 1
    # the end of a turn is never blocked, every special token the model must not write is
    assert not policy.blocked_tokens[policy.eos_token_ids[0]]
    assert policy.blocked_tokens[image_token]


@pytest.mark.parametrize("share_prompts", [True, False], ids=["engine_loop", "generate"])
def test_engine_sampling_logprobs_equal_the_learners(policy, dist, share_prompts):
    prompts = _prompts(policy)
    engine = build_engine("hf", policy=policy, share_prompts=share_prompts)
    groups = engine.generate(prompts, 3, SamplingParams(temperature=T, max_new_tokens=8, seed=3))
    ours, mask = _learner(policy).logprobs(prompts, groups)
    rows = [c.logprobs for g in groups for c in g]
    theirs = torch.zeros_like(ours)
    for i, row in enumerate(rows):
        theirs[i, :len(row)] = torch.tensor(row)
    assert int(mask.sum()) == sum(len(r) for r in rows) > 0
    assert torch.allclose(ours * mask, theirs, atol=1e-4), (ours * mask - theirs).abs().max()


def squares(n: int) -> Image.Image:
    image = Image.new("RGB", (96, 80), "white")  # not square: the whole-image tile is padded
    draw = ImageDraw.Draw(image)
    for k in range(n):
        draw.rectangle((6 + 26 * k, 30, 26 + 26 * k, 50), fill=(220, 40, 40))
    return image


def test_a_two_image_prompt_and_a_text_only_prompt_in_one_batch(policy, dist):
    """Prompts with different numbers of images (two, none) batched together: the engine pads the
    image tensors per prompt, the learner gives each row its own prompt's features."""
    question = "How many red squares are there in all the images?"
    samples = [Sample(id="two", images=[squares(1), squares(2)], question=question, answer="3",
                      answer_type="integer", task="pairs"),
               Sample(id="none", images=[], question="What is 2 + 1?", answer="3", answer_type="integer",
                      task="sums")]
    prompts = encode_prompts(policy.processor, samples, "r1", 112 * 112, 112 * 112)
    image_token = policy.model.config.image_token_id
    assert int((prompts[1].input_ids == image_token).sum()) == 0
    groups = build_engine("hf", policy=policy).generate(prompts, 2, SamplingParams(temperature=T, max_new_tokens=6,
                                                                                   seed=5))
    ours, mask = _learner(policy).logprobs(prompts, groups)
    rows = [c.logprobs for g in groups for c in g]
    theirs = torch.zeros_like(ours)
    for i, row in enumerate(rows):
        theirs[i, :len(row)] = torch.tensor(row)
    assert torch.allclose(ours * mask, theirs, atol=1e-4), (ours * mask - theirs).abs().max()


def test_only_the_qwen_path_sizes_images_to_min_max_pixels(family_dir, policy):
    family, _ = family_dir
    sample = load_source("synthetic", size=1)[0]  # a 112 x 112 image
    small = encode_prompts(policy.processor, [sample], "r1", 56 * 56, 56 * 56)[0]
    large = encode_prompts(policy.processor, [sample], "r1", 224 * 224, 224 * 224)[0]
    if FAMILIES[family][2]:
        # qwen-vl-utils: 56 x 56 is a 4 x 4 grid of 14-pixel patches, 224 x 224 a 16 x 16 grid
        assert small.image_grid_thw.tolist() == [[1, 4, 4]] and large.image_grid_thw.tolist() == [[1, 16, 16]]
    else:
        # the processor's own rule, whatever data.min_pixels/max_pixels say: the longest edge goes
        # to 128, cut into 2 x 2 tiles of 64 plus the whole image at 64: 5 tiles
        assert torch.equal(small.input_ids, large.input_ids)
        assert small.image_inputs["pixel_values"].shape == (1, 5, 3, 64, 64)
        assert all(torch.equal(small.image_inputs[k], large.image_inputs[k]) for k in small.image_inputs)


def test_frozen_parts_do_not_move_and_trained_parts_do(policy, dist):
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    learner = _learner(policy, train_projector=True, train_vision_tower=False)
    assert learner.trainable["projector"] > 0 and learner.trainable["vision_tower"] == 0
    prompts = _prompts(policy)
    groups = build_engine("hf", policy=policy).generate(prompts, 3, SamplingParams(temperature=T, max_new_tokens=6,
                                                                                   seed=1))
    n_tokens = sum(len(c.token_ids) for g in groups for c in g)
    learner.step(ALGORITHMS.get("gpg"), prompts, groups, torch.tensor([[1.0, -0.5, -0.5], [0.3, -0.3, 0.0]]),
                 alpha=1.0, normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                 aggregation="token_mean", clip_eps=0.2)
    moved = {part: [] for part in ("language_model", "projector", "vision_tower")}
    for name, p in learner.module.named_parameters():
        moved[model_part(name)].append(not torch.equal(before[name], p.detach()))
    assert moved["vision_tower"] and not any(moved["vision_tower"])
    assert any(moved["projector"]) and any(moved["language_model"])
    # and the tower trains when asked to
    learner = _learner(policy, train_projector=False, train_vision_tower=True, train_language_model=False)
    assert learner.trainable["vision_tower"] > 0 and learner.trainable["projector"] == 0


def test_lora_adapters_go_on_the_language_model_only(family_dir, dist):
    from mm_gpg.config import LoraConfig

    policy = load_policy(str(family_dir[1]))  # its own copy: adapters go in in place
    learner = _learner(policy, train_projector=True, lora=LoraConfig(r=4))
    assert learner.trainable["lora"] > 0 and learner.trainable["vision_tower"] == 0
    before = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    prompts = _prompts(policy)
    groups = build_engine("hf", policy=policy).generate(prompts, 3, SamplingParams(temperature=T, max_new_tokens=6,
                                                                                   seed=2))
    n_tokens = sum(len(c.token_ids) for g in groups for c in g)
    learner.step(ALGORITHMS.get("gpg"), prompts, groups, torch.tensor([[1.0, -0.5, -0.5], [0.3, -0.3, 0.0]]),
                 alpha=1.0, normalizer=aggregation_normalizer("token_mean", n_tokens, 0, 0),
                 aggregation="token_mean", clip_eps=0.2)
    moved = {(model_part(n), "lora_" in n) for n, p in learner.module.named_parameters()
             if not torch.equal(before[n], p.detach())}
    assert moved == {("language_model", True), ("projector", False)}


def test_the_default_recipe_runs_end_to_end(family_dir, tmp_path):
    family, _ = family_dir
    model_dir = tmp_path / "model"  # built by the run itself (model.init_tiny)
    result = run_cli("train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
                     *tiny_overrides(tmp_path, model_dir), "model.init_tiny=true", f"model.tiny_family={family}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"built the embedded tiny {family} model" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    final = load_policy(str(tmp_path / "run" / "final"))
    assert type(final.model).__name__ == FAMILIES[family][0]
