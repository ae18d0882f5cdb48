"""One GPG step at real sizes: rollout and learner throughput, learner MFU and peak memory.

    python bench/gpu_step.py --out runs/gpu_step               # on a GPU: both architectures
    python bench/gpu_step.py --device cpu --tiny --out DIR     # the same code at tiny sizes (CI)

For each architecture in `configs/arch/` (Qwen2-VL-2B and Qwen2.5-VL-3B, their public
dimensions, random init, bf16, the embedded tiny tokenizer and processor) it builds the model on
the device, then through the project's own engine and learner (`HFRolloutEngine`, `Learner`,
ZeRO stage 0, one process):

- rollout: B prompts (one synthetic chart, resized to 448x448: 256 image tokens) x G samples,
  `max_new_tokens` each. End-of-turn is blocked, so every completion has exactly that length;
  tokens/s = B x G x max_new_tokens / time.
- learner: one GPG update on those completions (random non-zero advantages), after one untimed
  warm-up update; timed with and without gradient checkpointing.
  tokens = the tokens the language model runs (every completion token, plus each prompt once per
  group, or once per completion under gradient checkpointing, which turns prompt sharing off); MFU = 6 x language-model parameters x tokens / time / the GPU's dense bf16 peak (the
  table below; unknown GPUs and the CPU get none).
- peak memory: `torch.cuda.max_memory_allocated` over each phase.

Writes `gpu_step.json` and `gpu_step.md` under --out and prints the table. A phase that runs out
of memory is recorded as such, and the others still run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

# Dense bf16 peak, FLOP/s, by a substring of `torch.cuda.get_device_name()` (vendor data sheets,
# SXM parts; PCIe H100 is lower, 756 TFLOP/s).
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def build_model(arch: dict | None, tiny_dir: Path, device: torch.device, dtype: torch.dtype):
    """The architecture's model, random init, on `device` in `dtype`, with the tiny model's special
    token ids (so the tiny tokenizer and processor drive it). arch None: the tiny model itself."""
    from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2VLConfig

    tiny = AutoConfig.from_pretrained(tiny_dir)
    if arch is None:
        config = tiny
    else:
        text = dict(arch["text"])
        rope = {"rope_type": "default", "rope_theta": text.pop("rope_theta"), "mrope_section": text.pop("mrope_section")}
        ids = {k: getattr(tiny, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                             "vision_end_token_id")}
        t = tiny.text_config
        config_class = {"qwen2_vl": Qwen2VLConfig, "qwen2_5_vl": Qwen2_5_VLConfig}[arch["model_type"]]
        config = config_class(text_config=dict(**text, rope_parameters=rope, bos_token_id=t.bos_token_id,
                                               eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id),
                              vision_config=dict(arch["vision"]), tie_word_embeddings=text["tie_word_embeddings"],
                              **ids)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config)
    return model.to(dtype)


def language_model_parameters(model) -> int:
    from mm_gpg.policy import VISION_KEYS
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) not in seen and not any(k in name for k in VISION_KEYS):
            seen.add(id(p))
            total += p.numel()
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_arch(name: str, arch: dict | None, args, tiny_dir: Path, device: torch.device) -> list[dict]:
    from data_prep.registry import load_source
    from mm_gpg.algorithms import ALGORITHMS, aggregation_normalizer
    from mm_gpg.learner import Learner
    from mm_gpg.policy import Policy, blocked_token_mask
    from mm_gpg.prompting import encode_prompts
    from mm_gpg.rollout import SamplingParams, build_engine
    from transformers import AutoProcessor

    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    started = time.perf_counter()
    model = build_model(arch, tiny_dir, device, dtype)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    blocked = blocked_token_mask(tokenizer, model.get_output_embeddings().weight.shape[0], eos)
    blocked[eos] = True  # every completion runs to max_new_tokens: fixed, comparable work
    policy = Policy(model=model, processor=processor, blocked_tokens=blocked, eos_token_ids=[eos],
                    pad_token_id=tokenizer.pad_token_id)
    lm_params = language_model_parameters(model)
    build_s = time.perf_counter() - started
    samples = list(load_source("synthetic", size=args.prompts, tasks=["bar_compare"]))
    prompts = encode_prompts(processor, samples, "r1", args.image ** 2, args.image ** 2)
    prompt_tokens = sum(p.input_ids.numel() for p in prompts)
    common = {"arch": name, "device": str(device), "dtype": args.dtype, "prompts": args.prompts,
              "group_size": args.group_size, "image": f"{args.image}x{args.image}",
              "image_tokens_per_prompt": int((prompts[0].input_ids == model.config.image_token_id).sum()),
              "prompt_tokens_per_prompt": round(prompt_tokens / len(prompts), 1),
              "new_tokens": args.new_tokens, "lm_parameters": lm_params,
              "parameters": sum(p.numel() for p in model.parameters()), "build_s": round(build_s, 1)}
    records = []
    peak = peak_flops(device)
    groups = None
    for checkpointing in args.checkpointing:
        record = {**common, "gradient_checkpointing": checkpointing}
        learner = None
        try:
            learner = Learner(policy, lr=1e-6, warmup_steps=1, weight_decay=0.0, grad_clip=1.0, zero_stage=0,
                              bf16=dtype == torch.bfloat16, micro_batch_groups=args.micro_batch_groups,
                              local_groups=args.prompts, group_size=args.group_size, train_projector=True,
                              gradient_checkpointing=checkpointing)
            engine = build_engine("hf", policy=policy, model_context=learner.generation_context)
            if groups is None:  # the rollout does not depend on checkpointing: run it once
                reset_peak(device)
                sampling = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=0)
                engine.generate(prompts[:1], 1, SamplingParams(max_new_tokens=2, seed=0))  # warm-up
                sync(device)
                t0 = time.perf_counter()
                groups = engine.generate(prompts, args.group_size, sampling)
                sync(device)
                rollout_s = time.perf_counter() - t0
                new_tokens = sum(len(c.token_ids) for g in groups for c in g)
                common.update(rollout_s=round(rollout_s, 3), rollout_tokens=new_tokens,
                              rollout_tokens_per_s=round(new_tokens / rollout_s, 1), rollout_peak_gib=peak_gib(device))
                record.update({k: common[k] for k in ("rollout_s", "rollout_tokens", "rollout_tokens_per_s",
                                                      "rollout_peak_gib")})
            completion_tokens = sum(len(c.token_ids) for g in groups for c in g)
            algorithm = ALGORITHMS.get("gpg")
            generator = torch.Generator().manual_seed(1)
            advantages = torch.randn(args.prompts, args.group_size, generator=generator)
            normalizer = aggregation_normalizer("token_mean", completion_tokens, args.prompts * args.group_size,
                                                args.new_tokens)

            def update():
                return learner.step(algorithm, prompts, groups, advantages, alpha=1.0, normalizer=normalizer,
                                    aggregation="token_mean", clip_eps=0.2)

            update()  # warm-up: allocator, kernels, optimizer states
            reset_peak(device)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.learner_steps):
                update()
            sync(device)
            step_s = (time.perf_counter() - t0) / args.learner_steps
            # What the language model runs: each prompt once per group when the learner shares its
            # keys/values, else once per completion (gradient checkpointing turns sharing off).
            tokens = completion_tokens + prompt_tokens * (1 if learner.share_prompts else args.group_size)
            record.update(learner_step_s=round(step_s, 3), learner_tokens=tokens,
                          learner_tokens_per_s=round(tokens / step_s, 1), learner_peak_gib=peak_gib(device),
                          mfu=round(6 * lm_params * tokens / step_s / peak, 4) if peak else None)
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            record["error"] = "out of memory"
        finally:
            del learner
            reset_peak(device)
        records.append(record)
        print(json.dumps(record), flush=True)
    del policy, model
    reset_peak(device)
    return records


def markdown(records: list[dict], device_name: str) -> str:
    cols = [("arch", "architecture"), ("gradient_checkpointing", "grad. ckpt"), ("rollout_tokens_per_s", "rollout tok/s"),
            ("rollout_peak_gib", "rollout peak GiB"), ("learner_tokens_per_s", "learner tok/s"),
            ("learner_step_s", "learner step s"), ("mfu", "learner MFU"), ("learner_peak_gib", "learner peak GiB"),
            ("error", "error")]
    lines = [f"Device: {device_name}. B x G = {records[0]['prompts']} x {records[0]['group_size']}, "
             f"{records[0]['image']} image ({records[0]['image_tokens_per_prompt']} image tokens), "
             f"{records[0]['new_tokens']} new tokens, {records[0]['dtype']}.", "",
             "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        cells = []
        for key, _ in cols:
            v = r.get(key, "")
            cells.append(f"{100 * v:.1f} %" if key == "mfu" and v is not None and v != "" else str(v if v is not None else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the embedded tiny model at tiny sizes (CPU, CI)")
    parser.add_argument("--arch", nargs="*", default=["qwen2vl_2b", "qwen25vl_3b"],
                        help="architectures from configs/arch/ (ignored with --tiny)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--image", type=int, default=448, help="image side in pixels")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--micro-batch-groups", type=int, default=2)
    parser.add_argument("--learner-steps", type=int, default=2, help="timed updates (after one warm-up)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--checkpointing", default="both", choices=["both", "on", "off"])
    parser.add_argument("--out", required=True, help="folder for gpu_step.json and gpu_step.md")
    args = parser.parse_args(argv)
    if args.tiny:
        args.prompts, args.group_size, args.image, args.new_tokens = 2, 2, 56, 8
        args.micro_batch_groups, args.learner_steps = 1, 1
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.checkpointing = {"both": [False, True], "on": [True], "off": [False]}[args.checkpointing]

    from mm_gpg.device import resolve_device
    from mm_gpg.distributed import init_distributed
    from mm_gpg.tiny import build_tiny

    device = resolve_device(args.device)
    init_distributed(device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny_dir = out / "tiny-qwen2vl"
    if not (tiny_dir / "config.json").exists():
        build_tiny(tiny_dir, seed=0)
    archs = {"tiny": None} if args.tiny else {
        name: json.loads((REPO / "configs" / "arch" / f"{name}.json").read_text()) for name in args.arch}
    records = []
    for name, arch in archs.items():
        records += run_arch(name, arch, args, tiny_dir, device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {"device_name": device_name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "cuda": torch.version.cuda, "peak_bf16_flops": peak_flops(device)}
    import transformers
    meta["transformers"] = transformers.__version__
    (out / "gpu_step.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    table = markdown(records, device_name)
    (out / "gpu_step.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
