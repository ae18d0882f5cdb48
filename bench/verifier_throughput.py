"""Verifier throughput: 10,000 mixed responses through the rewards scorer.

    python bench/verifier_throughput.py [--n 10000] [--batch 128] [--workers 2]

Prints (1) the pool path the trainer uses (`build_scorer([...accuracy, format_r1...])`,
`score()` on batches of `--batch`): responses/s and p50/p99 latency per batch call; and
(2) in-process per-response latency (one verifier call, no pool) overall and per route:
p50/p99 and responses/s. Not a pass/fail test.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import Sample  # noqa: E402
from rewards import build_scorer, get_verifier, route  # noqa: E402


def make_corpus(n: int, seed: int = 0) -> list[tuple[str, Sample]]:
    """A mix close to a training run on the synthetic tasks, plus benchmark-style and hostile
    responses (about 70 % synthetic r1 answers, 30 % other)."""
    rng = random.Random(seed)
    choices = ["blue", "green", "red"]
    out = []
    for i in range(n):
        kind = rng.random()
        think = "<think>" + " ".join(rng.choice(["count", "the", "bars", "3", "so", "red", "+"])
                                     for _ in range(rng.randint(5, 60))) + "</think>"
        if kind < 0.25:      # count_shapes: integer
            gold = rng.randint(1, 6)
            s = Sample(id=f"c{i}", answer=str(gold), answer_type="integer", task="count_shapes")
            ans = str(gold if rng.random() < 0.6 else rng.randint(1, 6))
            r = f"{think}<answer>{rng.choice([ans, ans + ' shapes', 'There are ' + ans])}</answer>"
        elif kind < 0.50:    # bar_compare: multiple choice
            g = rng.randrange(3)
            s = Sample(id=f"b{i}", answer="ABC"[g], answer_type="multiple_choice", choices=choices,
                       task="bar_compare")
            r = f"{think}<answer>{rng.choice(['A', 'B', 'C', '(B)', 'green', 'C. red'])}</answer>"
        elif kind < 0.70:    # segment_sum: math with plain numbers
            gold = rng.randint(2, 10)
            s = Sample(id=f"s{i}", answer=str(gold), answer_type="math", task="segment_sum")
            ans = rng.choice([str(gold), str(gold + 1), f"{gold} cm", "\\frac{%d}{2}" % (2 * gold)])
            r = f"{think}<answer>{ans}</answer>"
        elif kind < 0.78:    # symbolic math (math-verify path)
            s = Sample(id=f"m{i}", answer="\\frac{\\sqrt{3}}{2}", answer_type="math")
            ans = rng.choice(["\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}", "x^2+1"])
            r = f"{think}<answer>{ans}</answer>"
        elif kind < 0.85:    # VQAv2
            s = Sample(id=f"v{i}", answer="2", answer_type="vqa", task="vqav2",
                       meta={"answers": ["2"] * 6 + ["two"] * 2 + ["3"] * 2})
            r = f"<answer>{rng.choice(['2', 'two', 'Two.', '3', 'a dog'])}</answer>"
        elif kind < 0.92:    # ChartQA
            s = Sample(id=f"q{i}", answer="12.5", answer_type="text", task="chartqa", meta={"labels": ["12.5"]})
            r = f"{think}<answer>{rng.choice(['12.5', '12', '12.5%', '13', 'twelve'])}</answer>"
        else:                # hostile: shotguns, junk, huge, injection, power towers
            s = Sample(id=f"h{i}", answer="3", answer_type="math")
            r = rng.choice(["<answer>1 2 3 4</answer>", "\\boxed{1}\\boxed{3}", "A B C D",
                            "x" * rng.randint(1000, 50_000), "\\boxed{9^{9^{9^{9}}}}",
                            "<answer>__import__('os').system('true')</answer>",
                            "{" * 2000 + "3" + "}" * 2000])
        out.append((r, s))
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    corpus = make_corpus(args.n)
    responses, samples = [r for r, _ in corpus], [s for _, s in corpus]

    specs = [{"name": "accuracy", "weight": 1.0}, {"name": "format_r1", "weight": 0.5}]
    t0 = time.perf_counter()
    with build_scorer(specs, timeout_s=args.timeout, num_workers=args.workers) as scorer:
        scorer.wait_ready()
        startup = time.perf_counter() - t0
        batch_times = []
        start = time.perf_counter()
        for k in range(0, args.n, args.batch):
            t = time.perf_counter()
            scorer.score(responses[k:k + args.batch], samples[k:k + args.batch])
            batch_times.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        stats = dict(scorer.stats)
        synthetic = [(r, s) for r, s in corpus if s.task in ("count_shapes", "bar_compare", "segment_sum")]
        synth_times = []
        for k in range(0, len(synthetic) - args.batch + 1, args.batch):
            part = synthetic[k:k + args.batch]
            t = time.perf_counter()
            scorer.score([r for r, _ in part], [s for _, s in part])
            synth_times.append(time.perf_counter() - t)
    print(f"pool ({args.workers} workers, accuracy + format_r1, batches of {args.batch}, "
          f"{os.cpu_count()} CPUs): {args.n / total:,.0f} responses/s; per batch call "
          f"p50 {1e3 * statistics.median(batch_times):.1f} ms, p99 {1e3 * pct(batch_times, 99):.1f} ms; "
          f"worker start-up {startup:.1f} s; timeouts {stats['timeouts']}, "
          f"parse failures {stats['parse_failures']}")
    print(f"pool, synthetic-task responses only ({len(synth_times)} batches of {args.batch}): "
          f"p50 {1e3 * statistics.median(synth_times):.1f} ms, p99 {1e3 * pct(synth_times, 99):.1f} ms per call")

    # in-process: one routed verifier call per response (warm caches first with a pass)
    per_route: dict[str, list[float]] = {}
    for r, s in corpus[:200]:
        get_verifier(route(s))(r, s)
    all_times = []
    start = time.perf_counter()
    for r, s in corpus:
        name = route(s)
        fn = get_verifier(name)
        t = time.perf_counter()
        fn(r, s)
        dt = time.perf_counter() - t
        all_times.append(dt)
        per_route.setdefault(name, []).append(dt)
    total = time.perf_counter() - start
    print(f"in-process, one verifier call per response: {args.n / total:,.0f} responses/s; "
          f"p50 {1e6 * statistics.median(all_times):.0f} us, p99 {1e3 * pct(all_times, 99):.2f} ms, "
          f"max {1e3 * max(all_times):.1f} ms")
    for name, times in sorted(per_route.items()):
        print(f"  {name:16s} n={len(times):5d}  p50 {1e6 * statistics.median(times):7.0f} us  "
              f"p99 {1e3 * pct(times, 99):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
