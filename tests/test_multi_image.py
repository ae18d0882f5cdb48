"""Multi-image records end to end on the tiny Qwen2-VL: the prompt holds one placeholder run per
image in the order the question places them, the learner's forward gets every image, the engine
and the learner agree on the log-probs of a two-image prompt, and `mm-gpg train` on a two-image
`table` source completes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from data_prep.schema import Sample
from mm_gpg.learner import Learner
from mm_gpg.policy import load_policy
from mm_gpg.prompting import encode_prompts
from mm_gpg.rollout import SamplingParams, build_engine

REPO = Path(__file__).resolve().parent.parent
PIXELS = 112 * 112
T = 0.7


def squares(n: int, colour=(220, 40, 40)) -> Image.Image:
    image = Image.new("RGB", (112, 112), "white")
    draw = ImageDraw.Draw(image)
    for k in range(n):
        draw.rectangle((6 + 26 * k, 40, 26 + 26 * k, 60), fill=colour)
    return image


def sample(sid: str, images: list, question: str = "How many red squares are there in all the images?",
           answer: str = "3") -> Sample:
    return Sample(id=sid, images=images, question=question, answer=answer, answer_type="integer", task="pairs")


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompts(policy):
    """A two-image prompt and a three-image prompt."""
    return encode_prompts(policy.processor, [sample("two", [squares(1), squares(2)]),
                                             sample("three", [squares(1), squares(0), squares(2)])],
                          "r1", PIXELS, PIXELS)


def tokens(policy, name):
    return policy.tokenizer.convert_tokens_to_ids(name)


def test_the_prompt_holds_one_placeholder_run_per_image(policy, prompts):
    start, pad = tokens(policy, "<|vision_start|>"), tokens(policy, "<|image_pad|>")
    for prompt, n in zip(prompts, (2, 3)):
        ids = prompt.input_ids
        assert int((ids == start).sum()) == n
        # each 112x112 image: 14 px patches -> an 8x8 grid, merged 2x2 -> 16 placeholder tokens
        assert int((ids == pad).sum()) == 16 * n
        assert prompt.image_grid_thw.tolist() == [[1, 8, 8]] * n
        assert prompt.pixel_values.shape[0] == 64 * n  # 8*8 patches per image
        assert len(prompt.images) == n
        # the runs are whole: every image's 16 pads follow its own <|vision_start|>
        starts = (ids == start).nonzero().flatten().tolist()
        for s in starts:
            assert ids[s + 1:s + 17].eq(pad).all() and ids[s + 17] == tokens(policy, "<|vision_end|>")


def test_markers_place_the_images_in_the_question_order(policy):
    red, blue = squares(1), squares(1, colour=(50, 80, 220))
    marked = sample("m", [red, blue], question="Is <image 2> bluer than <image 1>?", answer="yes")
    prompt, = encode_prompts(policy.processor, [marked], "r1", PIXELS, PIXELS)
    # <image 2> comes first in the text, so the prompt shows the blue image first
    assert [im.getpixel((10, 45)) for im in prompt.images] == [(50, 80, 220), (220, 40, 40)]
    text = prompt.text
    assert text.index("<|vision_start|>") < text.index("bluer") < text.rindex("<|vision_start|>")


def _learner(policy, share_prompts: bool) -> Learner:
    learner = Learner(policy, lr=1e-3, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=0,
                      micro_batch_groups=2, local_groups=2, group_size=3, temperature=T)
    learner.share_prompts = share_prompts
    return learner


@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared_prompt", "full_sequence"])
def test_engine_and_learner_agree_on_multi_image_prompts(policy, prompts, dist, share_prompts):
    engine = build_engine("hf", policy=policy, share_prompts=share_prompts)
    groups = engine.generate(prompts, 3, SamplingParams(temperature=T, max_new_tokens=8, seed=4))
    learner = _learner(policy, share_prompts)
    seen = []  # the image grids the vision tower is run on
    hook = policy.model.model.visual.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs.get("grid_thw", args[1] if len(args) > 1 else None)),
        with_kwargs=True)
    try:
        ours, mask = learner.logprobs(prompts, groups)
    finally:
        hook.remove()
    # the learner's forward got all 2 + 3 images, each prompt's once
    assert sum(int(g.shape[0]) for g in seen) == 5
    rows = [c.logprobs for g in groups for c in g]
    theirs = torch.zeros_like(ours)
    for i, row in enumerate(rows):
        theirs[i, :len(row)] = torch.tensor(row)
    assert int(mask.sum()) == sum(len(r) for r in rows)
    assert torch.allclose(ours * mask, theirs, atol=1e-4), (ours * mask - theirs).abs().max()


@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared_prompt", "full_sequence"])
def test_every_image_reaches_the_learners_forward(policy, dist, share_prompts):
    """Changing only the last image of a prompt changes the learner's log-probs of the same
    completions: the last image is not dropped or replaced by the first."""
    a = encode_prompts(policy.processor, [sample("x", [squares(1), squares(0)])], "r1", PIXELS, PIXELS)
    b = encode_prompts(policy.processor, [sample("x", [squares(1), squares(4, colour=(40, 170, 60))])],
                       "r1", PIXELS, PIXELS)
    assert torch.equal(a[0].input_ids, b[0].input_ids)  # same text and placeholders, other pixels
    groups = build_engine("hf", policy=policy).generate(a, 3, SamplingParams(max_new_tokens=6, seed=1))
    learner = _learner(policy, share_prompts)
    with_a, mask = learner.logprobs(a, groups)
    with_b, _ = learner.logprobs(b, groups)
    assert (with_a - with_b).abs().mul(mask).max() > 1e-4


def test_train_runs_end_to_end_on_a_two_image_table(tmp_path, tiny_model_dir):
    """`mm-gpg train` on a JSON-lines table whose records each hold two images."""
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(6):
        counts = (1 + i % 3, 1 + (i * 2) % 3)
        names = []
        for k, n in enumerate(counts):
            name = f"images/{i}_{k}.png"
            squares(n).save(tmp_path / name)
            names.append(name)
        rows.append({"id": f"pair-{i}", "images": names, "answer": sum(counts),
                     "question": "How many red squares are there in the two images together?"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = "{source: table, options: {path: pairs.jsonl, answer_type: integer, task: pairs}}"
    result = subprocess.run(
        [sys.executable, "-m", "mm_gpg.cli", "train", "--config", str(REPO / "configs/tiny_synthetic.yaml"),
         f"model.path={tiny_model_dir}", "model.init_tiny=false", f"output_dir={tmp_path / 'run'}",
         "progress=false", "train.steps=2", "train.prompts_per_step=2", "train.micro_batch_groups=1",
         "rollout.group_size=2", "rollout.max_new_tokens=6", "eval.max_new_tokens=6", "warmstart.steps=2",
         "warmstart.batch_size=2", "reward_workers=1", "eval.temperature=0", f"data.train=[{source}]",
         "data.heldout=[{source: table, options: {path: pairs.jsonl, answer_type: integer, task: pairs, limit: 2}}]"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    steps = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    records = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["kind"] != "eval"]
    assert trained and {r["task"] for r in records} == {"pairs"}
    for record in records:  # every prompt the policy saw held both images
        assert record["prompt"].count("<|vision_start|><|image_pad|><|vision_end|>") == 2
        assert len(record["images"]) == 2
    assert "heldout/pairs/accuracy" in json.loads((run / "summary.json").read_text())["after"]
