"""Intensity scaling: each channel stretched between two percentiles of its values, by one rule
everywhere (the networks' inputs and targets, the preprocess step, registration, the report's
pictures, and the ``scale_range`` a model package declares).

The rule is bioimage.io's ``scale_range``: ``(x - low) / (high - low + EPS)``, so that dlhisto
and any other consumer of dlhisto's packages compute the same input; a flat image (``high ==
low``) becomes 0.
"""

from __future__ import annotations

import numpy as np

NORMALIZATION = (1.0, 99.8)
"""Percentiles of each channel mapped to 0 and 1 before the network sees an image."""
EPS = 1e-12
"""Added to the range, as bioimage.io's scale_range does (the ``eps`` dlhisto's packages declare): too
small to change a float32 range, it only keeps a flat image at 0."""


def channel_range(data: np.ndarray, joint: bool = False,
                  percentiles: tuple[float, float] = NORMALIZATION) -> tuple[np.ndarray, np.ndarray]:
    """The ``percentiles`` of each channel of a (Y, X[, C]) image (or a sample of one); with
    ``joint``, those of all channels together, repeated for each channel."""
    data = (data[..., None] if data.ndim == 2 else data).astype(np.float32, copy=False)
    low, high = percentiles
    if joint:
        repeat = np.ones(data.shape[-1], np.float32)
        return np.percentile(data, low) * repeat, np.percentile(data, high) * repeat
    return np.percentile(data, low, axis=(0, 1)), np.percentile(data, high, axis=(0, 1))


def stretch(data: np.ndarray, low, high) -> np.ndarray:
    """``low`` mapped to 0 and ``high`` to 1 (float32, not clipped); ``low`` and ``high``
    broadcast on ``data`` (one value per channel, channels last)."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return ((data.astype(np.float32, copy=False) - low) / (high - low + np.float32(EPS))).astype(np.float32, copy=False)


def scale_channels(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(Y, X[, C]) -> (C, Y, X) float32 with ``low`` and ``high`` of each channel mapped to 0 and 1."""
    data = data[..., None] if data.ndim == 2 else data
    return np.ascontiguousarray(np.moveaxis(stretch(data, low, high), -1, 0))


def normalize_for_network(data: np.ndarray, joint: bool = False) -> np.ndarray:
    """(Y, X[, C]) image -> (C, Y, X) float32, percentile-normalised per channel, or with
    ``joint`` over all channels together (keeps the colour of stains: tile classification)."""
    return scale_channels(data, *channel_range(data, joint))
