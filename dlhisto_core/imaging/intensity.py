"""Intensity scaling of images for the networks and the filters: each channel stretched
between two percentiles of its values.
"""

from __future__ import annotations
import numpy as np


NORMALIZATION = (1.0, 99.8)
"""Percentiles of each channel mapped to 0 and 1 before the network sees an image."""


def normalize_for_network(data: np.ndarray, joint: bool = False) -> np.ndarray:
    """(Y, X[, C]) image -> (C, Y, X) float32, percentile-normalised per channel, or with
    ``joint`` over all channels together (keeps the colour of stains: tile classification)."""
    return scale_channels(data, *channel_range(data, joint))


def channel_range(data: np.ndarray, joint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The NORMALIZATION percentiles of each channel of a (Y, X[, C]) image (or a sample of one);
    with ``joint``, those of all channels together, repeated for each channel."""
    data = (data[..., None] if data.ndim == 2 else data).astype(np.float32, copy=False)
    low, high = NORMALIZATION
    if joint:
        repeat = np.ones(data.shape[-1], np.float32)
        return np.percentile(data, low) * repeat, np.percentile(data, high) * repeat
    return np.percentile(data, low, axis=(0, 1)), np.percentile(data, high, axis=(0, 1))


def scale_channels(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(Y, X[, C]) -> (C, Y, X) float32 with ``low`` and ``high`` of each channel mapped to 0 and 1."""
    data = (data[..., None] if data.ndim == 2 else data).astype(np.float32, copy=False)
    scaled = (data - low.astype(np.float32)) / np.maximum(high - low, 1e-12).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(scaled, -1, 0))
