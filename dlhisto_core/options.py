"""Bounds of the steps' numeric parameters, declared once beside each default.

An options dataclass declares a numeric field with :func:`bounded` and calls
:func:`check_bounds` in ``__post_init__``, so that the Python API and the command line refuse
the same values with the same one-line message (NaN and infinities included).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from .errors import InputError

MAX_SEED = 2**32 - 1
"""Random seeds are what NumPy's generators accept: 0 to 2**32 - 1."""
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1024
MAX_PATCH_SIZE = 2048
MAX_PATCHES_PER_IMAGE = 100_000
MAX_TREES = 10_000
"""Limits shared by several steps (training, cross-validation, prediction); a step's own limits
are declared where its defaults are."""


def bounded(default: Any, low: float, high: float) -> Any:
    """A dataclass field with a default and the closed range [low, high] of its values; a
    tuple's values are each checked, and None means "not set"."""
    return dataclasses.field(default=default, metadata={"bounds": (low, high)})


def check_bounds(options: Any) -> None:
    """Refuse any :func:`bounded` field of ``options`` that is not a finite number in its range."""
    for field in dataclasses.fields(options):
        if "bounds" in field.metadata:
            check_number(getattr(options, field.name), field.name.replace("_", " "), *field.metadata["bounds"])


def check_number(value: Any, what: str, low: float, high: float) -> None:
    """Refuse ``value`` (or each value of a tuple or list) unless it is a finite number in [low, high]."""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, numbers.Real) or not math.isfinite(item) or item < low:
            wanted = "zero or positive" if low == 0 else f"at least {low:g}"
            raise InputError(f"{what} must be {wanted}, got {item!r}")
        if item > high:
            raise InputError(f"{what} must be at most {high:g}, got {item!r}")
