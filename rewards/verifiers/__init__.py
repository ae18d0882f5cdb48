"""The built-in verifiers; importing this package registers them."""
from . import choice, formats, math, numeric  # noqa: F401
