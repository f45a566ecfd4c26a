"""Multi-scale filter bank for pixel classification (the ilastik feature set).

For every channel and every scale sigma the bank computes, with Gaussian derivative filters:

- ``gaussian``: smoothed intensity;
- ``log``: Laplacian of Gaussian (blobs);
- ``dog``: difference of Gaussians, G(sigma) - G(1.6 sigma);
- ``gradient``: Gaussian gradient magnitude (edges);
- ``structure_tensor``: the two eigenvalues of the structure tensor (derivatives at sigma,
  averaged over 2 sigma): texture and orientation coherence;
- ``hessian``: the two eigenvalues of the Hessian of Gaussian (ridges, tubes, fibres).

The filters only look ``halo`` pixels around a pixel, so features computed on a tile read with
that margin are identical to those computed on the whole image: :func:`compute_features_tiled`
uses this to process slides of any size in bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from ..base.errors import InputError

FEATURES = ("gaussian", "log", "dog", "gradient", "structure_tensor", "hessian")
CHANNELS_PER_FEATURE = {"gaussian": 1, "log": 1, "dog": 1, "gradient": 1, "structure_tensor": 2, "hessian": 2}
DOG_RATIO = 1.6
STRUCTURE_TENSOR_OUTER = 2.0
MAX_SCALE = 64.0
"""Largest Gaussian scale of the filters, in pixels."""
MAX_SCALES = 16
TRUNCATE = 4.0
"""Gaussian kernels are cut at TRUNCATE sigma (scipy's default)."""


@dataclass(frozen=True)
class FeatureSettings:
    """Which filters at which scales; recorded in every trained classifier."""

    features: tuple[str, ...] = FEATURES
    scales: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0)
    include_raw: bool = True
    """Also use the unfiltered intensity of each channel."""

    def __post_init__(self):
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise InputError(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
        # one canonical order, the order of the feature stack
        object.__setattr__(self, "features", tuple(f for f in FEATURES if f in self.features))
        if not self.features and not self.include_raw:
            raise InputError("choose at least one feature")
        if self.features and not self.scales:
            raise InputError("choose at least one scale")
        if any(not math.isfinite(s) or not 0 < s <= MAX_SCALE for s in self.scales):
            raise InputError(f"scales must be positive and at most {MAX_SCALE:g} pixels, got "
                             f"{', '.join(map(str, self.scales))}")
        if len(self.scales) > MAX_SCALES:
            raise InputError(f"at most {MAX_SCALES} scales, got {len(self.scales)}")

    @property
    def halo(self) -> int:
        """Margin in pixels beyond which no filter looks."""
        radius = 0
        for sigma in self.scales:
            for feature in self.features:
                radius = max(radius, _radius(feature, sigma))
        return radius

    def names(self, n_channels: int) -> list[str]:
        """One name per feature channel, in the order :func:`compute_features` stacks them."""
        names = []
        for c in range(1, n_channels + 1):
            if self.include_raw:
                names.append(f"c{c} raw")
            for sigma in self.scales:
                for feature in self.features:
                    n = CHANNELS_PER_FEATURE[feature]
                    names += [f"c{c} {feature}{'' if n == 1 else f' e{i + 1}'} s={sigma:g}" for i in range(n)]
        return names

    def to_dict(self) -> dict:
        return asdict(self) | {"features": list(self.features), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSettings":
        return cls(features=tuple(data["features"]), scales=tuple(float(s) for s in data["scales"]),
                   include_raw=bool(data["include_raw"]))


def compute_features(image: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Feature stack (Y, X, F) in float32 for a (Y, X) or (Y, X, C) image."""
    channels = image[..., None] if image.ndim == 2 else image
    stack = []
    for c in range(channels.shape[2]):
        plane = channels[..., c].astype(np.float32)
        if settings.include_raw:
            stack.append(plane)
        for sigma in settings.scales:
            stack.extend(_features_at_scale(plane, sigma, settings.features))
    return np.stack(stack, axis=-1)


def _features_at_scale(plane: np.ndarray, sigma: float, features: tuple[str, ...]) -> list[np.ndarray]:
    """The requested features at one scale, in FEATURES order.

    Filters are shared between features: the Laplacian is the trace of the Hessian, the
    gradient magnitude and the structure tensor use the same first derivatives, and the
    difference of Gaussians reuses the smoothed image.
    """
    def gauss(data, s, order=0):
        return ndi.gaussian_filter(data, s, order=order, truncate=TRUNCATE)

    smoothed = gauss(plane, sigma) if {"gaussian", "dog"} & set(features) else None
    if {"gradient", "structure_tensor"} & set(features):
        dr, dc = gauss(plane, sigma, (1, 0)), gauss(plane, sigma, (0, 1))
    if {"log", "hessian"} & set(features):
        hrr, hcc = gauss(plane, sigma, (2, 0)), gauss(plane, sigma, (0, 2))
    out: list[np.ndarray] = []
    for feature in FEATURES:
        if feature not in features:
            continue
        if feature == "gaussian":
            out.append(smoothed)
        elif feature == "log":
            out.append(hrr + hcc)
        elif feature == "dog":
            out.append(smoothed - gauss(plane, DOG_RATIO * sigma))
        elif feature == "gradient":
            out.append(np.sqrt(dr * dr + dc * dc))
        elif feature == "structure_tensor":
            outer = STRUCTURE_TENSOR_OUTER * sigma
            out.extend(symmetric_eigenvalues(gauss(dr * dr, outer), gauss(dr * dc, outer), gauss(dc * dc, outer)))
        elif feature == "hessian":
            out.extend(symmetric_eigenvalues(hrr, gauss(plane, sigma, (1, 1)), hcc))
    return out


def symmetric_eigenvalues(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (largest first) of the 2x2 symmetric matrices [[a, b], [b, c]], per pixel."""
    mean = (a + c) / 2
    spread = np.sqrt(((a - c) / 2) ** 2 + b**2)
    return mean + spread, mean - spread


def _kernel_radius(sigma: float) -> int:
    return int(TRUNCATE * sigma + 0.5)  # scipy.ndimage's rule


def _radius(feature: str, sigma: float) -> int:
    if feature == "dog":
        return _kernel_radius(DOG_RATIO * sigma)
    if feature == "structure_tensor":
        return _kernel_radius(sigma) + _kernel_radius(STRUCTURE_TENSOR_OUTER * sigma)
    return _kernel_radius(sigma)


def features_of_tile(reader, tile, settings: FeatureSettings) -> np.ndarray:
    """Features of one tile of an image read by ``reader``, identical to the whole-image ones.

    The tile is read with a margin of ``settings.halo`` pixels (cut at the image border, where
    the filters mirror the image exactly as they do on the whole image) and the margin dropped.
    """
    grown = tile.with_halo(settings.halo)
    region = reader.read_region(grown.y, grown.x, grown.height, grown.width)
    top, left = tile.y - max(grown.y, 0), tile.x - max(grown.x, 0)
    features = compute_features(region, settings)
    return features[top:top + tile.height, left:left + tile.width]
