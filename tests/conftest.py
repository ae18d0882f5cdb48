import os

import pytest
import torch

from mm_gpg.distributed import configure_environment

os.environ.setdefault("DS_ACCELERATOR", "cpu")
configure_environment()  # DeepSpeed's op cache under the project's cache root (mm_gpg.paths)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The embedded tiny Qwen2-VL, built once per test session."""
    from mm_gpg.tiny import build_tiny
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny-qwen2vl", seed=0)


@pytest.fixture(scope="session")
def dist():
    from mm_gpg.distributed import init_distributed
    return init_distributed()
