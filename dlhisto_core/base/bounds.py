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
DEVICES = ("auto", "cpu", "cuda")
"""Where the deep-learning steps run: 'auto' (CUDA when present), 'cpu' or 'cuda'."""
PRECISIONS = ("auto", "fp32", "bf16")
"""How the networks compute: 'auto', mixed precision where it holds (float16 on CUDA), float32
elsewhere; 'fp32'; 'bf16', bfloat16 autocast, faster on AVX-512 CPUs but less exact
(:mod:`precision`)."""
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


def choice(default: Any, choices: tuple) -> Any:
    """A dataclass field whose value is one of ``choices`` (None meaning "not set")."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def check_choices(options: Any) -> None:
    """Refuse any :func:`choice` field of ``options`` whose value is not one of its choices."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if "choices" in field.metadata and value is not None and value not in field.metadata["choices"]:
            raise InputError(f"unknown {field.name.replace('_', ' ')} '{value}'; choose one of "
                             f"{', '.join(map(str, field.metadata['choices']))}")


def add_option(parser, options: Any, name: str, flag: str | None = None, **argparse_options):
    """Add the field ``name`` of the options dataclass instance ``options`` to an argparse parser,
    so that the field is the one source of the option's default, type, choices and bounds
    (kept on the argparse action as ``bounds``, for the tool XML check). A boolean field that is
    on by default becomes ``--no-NAME``. ``%(default)s`` in the help is the field's default."""
    field = next(f for f in dataclasses.fields(options) if f.name == name)
    default = getattr(options, name)
    flag = flag or "--" + name.replace("_", "-")
    settings: dict = {"dest": name, "default": default}
    if isinstance(default, bool):
        settings["action"] = "store_false" if default else "store_true"
        flag = flag.replace("--", "--no-", 1) if default else flag
    elif "choices" in field.metadata:
        settings["choices"] = field.metadata["choices"]
    elif not isinstance(default, tuple):
        settings["type"] = int if "int" in str(field.type) and "float" not in str(field.type) else float
    action = parser.add_argument(flag, **{**settings, **argparse_options})
    action.bounds = field.metadata.get("bounds")
    return action


def options_from(namespace: Any, options_class: type, **values: Any) -> Any:
    """An ``options_class`` from the attributes of an argparse namespace named like its fields,
    and the given ``values`` (which take precedence)."""
    known = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(options_class) if hasattr(namespace, f.name)}
    return options_class(**{**known, **values})


MAX_IN_CHANNELS = 64
"""Most input channels a model may take."""
