"""The built-in verifiers; importing this package registers them."""
from . import benchmarks, chartqa, choice, formats, math, numeric, vqa  # noqa: F401
