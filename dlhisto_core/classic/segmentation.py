"""The classic segmentation workflow: smooth, threshold, remove small objects, split by watershed.

It is the pipeline taught in every bio-image analysis course (and used as the baseline the
machine-learning steps are compared against):

1. Gaussian smoothing (sigma 3 by default) so that noise does not cut objects apart;
2. a global threshold: 2-class k-means on the intensities by default, or Otsu, Li, triangle
   or a value given by hand;
3. removal of objects smaller than a minimum area (60 pixels by default);
4. watershed on the distance transform, seeded by its local maxima, to split touching objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, segmentation

from ..base.errors import InputError
from ..base.bounds import bounded, check_bounds, check_choices, check_number, choice
from ..imaging.preprocessing import MAX_SIGMA, gaussian_smooth

THRESHOLD_METHODS = ("kmeans", "otsu", "li", "triangle", "manual")
MAX_AREA = 10**9
"""Largest object area in pixels."""
MAX_DISTANCE = 10**4
"""Largest distance between watershed seeds in pixels."""


@dataclass
class ClassicOptions:
    """Parameters of the classic pipeline, with the defaults of the course material."""

    sigma: float = bounded(3.0, 0, MAX_SIGMA)
    threshold: str = choice("kmeans", THRESHOLD_METHODS)
    manual_threshold: float | None = bounded(None, -1e30, 1e30)
    """Threshold on the smoothed image, used when ``threshold == 'manual'``."""
    dark_objects: bool = False
    """Objects darker than the background (brightfield) instead of brighter (fluorescence)."""
    min_area: int = bounded(60, 0, MAX_AREA)
    """Objects smaller than this many pixels are removed."""
    fill_holes: bool = False
    watershed: bool = True
    min_distance: int = bounded(5, 1, MAX_DISTANCE)
    """Smallest distance in pixels between two watershed seeds (object centres)."""
    exclude_border: bool = False
    """Drop objects touching the image border (for unbiased counts)."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)


@dataclass
class ClassicResult:
    labels: np.ndarray
    threshold: float
    """Threshold applied to the smoothed image."""


def kmeans_threshold(values: np.ndarray, max_iter: int = 100) -> float:
    """Threshold separating two k-means clusters of 1-D intensities.

    Lloyd's iterations in one dimension: the threshold is the midpoint of the two cluster
    means, recomputed until it stops moving (the Ridler-Calvard / ISODATA fixpoint), on the
    exact values rather than a histogram.
    """
    values = np.asarray(values).ravel()
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise InputError("the image is uniform: there is nothing to threshold")
    total, count = float(values.sum(dtype=np.float64)), values.size
    threshold = (low + high) / 2
    for _ in range(max_iter):
        above = values > threshold
        n_above = int(np.count_nonzero(above))
        sum_above = float(np.sum(values, where=above, dtype=np.float64))
        new = (sum_above / n_above + (total - sum_above) / (count - n_above)) / 2
        if abs(new - threshold) <= 1e-9 * (high - low):
            break
        threshold = new
    return float(threshold)


def threshold_value(smoothed: np.ndarray, method: str, manual: float | None = None) -> float:
    """Global threshold of ``smoothed`` by the named method."""
    if method == "manual":
        if manual is None or not np.isfinite(manual):
            raise InputError("the manual threshold method needs a threshold value")
        return float(manual)
    if smoothed.min() == smoothed.max():
        raise InputError("the image is uniform: there is nothing to threshold")
    if method == "kmeans":
        return kmeans_threshold(smoothed)
    functions = {"otsu": filters.threshold_otsu, "li": filters.threshold_li,
                 "triangle": filters.threshold_triangle}
    if method not in functions:
        raise InputError(f"unknown threshold method '{method}'; choose one of {', '.join(THRESHOLD_METHODS)}")
    return float(functions[method](smoothed))


def split_touching(components: np.ndarray, min_distance: int) -> np.ndarray:
    """Split touching objects: watershed of the distance transform from its local maxima.

    ``components`` labels the connected foreground regions; seeds are looked for in each.
    """
    if min_distance < 1:
        raise InputError(f"the minimum seed distance must be at least 1 pixel, got {min_distance}")
    mask = components > 0
    # outside the image counts as background, so an object cut by the border keeps one centre
    distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peaks = feature.peak_local_max(distance, min_distance=min_distance, labels=components,
                                   exclude_border=False)
    seeds = np.zeros(mask.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    markers = measure.label(seeds)  # a flat maximum (several adjacent peaks) is one seed
    return segmentation.watershed(-distance, markers, mask=mask)


def segment_classic(plane: np.ndarray, options: ClassicOptions | None = None) -> ClassicResult:
    """Run the classic pipeline on one 2-D plane: smooth, threshold, fill holes, drop small
    objects, split touching ones by watershed (``dlhisto segment_classic``).

    Parameters
    ----------
    plane : (Y, X) ndarray
        One channel (:func:`dlhisto_core.io.images.single_channel` picks it from an image).
    options : ClassicOptions, optional
        Defaults when not given.

    Returns
    -------
    ClassicResult
        ``labels`` 1..N in raster order (0 = background) and the ``threshold`` applied.

    Examples
    --------
    >>> from dlhisto_core import ClassicOptions, read_image, segment_classic
    >>> image = read_image("test-data/nuclei.tif")
    >>> result = segment_classic(image.data, ClassicOptions(sigma=3, min_area=60))
    >>> int(result.labels.max()), round(result.threshold, 2)
    (112, 45.04)
    """
    options = options or ClassicOptions()
    smoothed = gaussian_smooth(plane, options.sigma)
    threshold = threshold_value(smoothed, options.threshold, options.manual_threshold)
    mask = smoothed < threshold if options.dark_objects else smoothed > threshold
    if options.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    labels = objects_from_mask(mask, options.min_area, options.min_distance if options.watershed else None,
                               options.exclude_border)
    return ClassicResult(labels=labels, threshold=threshold)


def objects_from_mask(mask: np.ndarray, min_area: int, min_distance: int | None = 5,
                      exclude_border: bool = False) -> np.ndarray:
    """Label the objects of a foreground mask: connected components, or split by watershed
    when ``min_distance`` is given; objects below ``min_area`` pixels are dropped."""
    check_number(min_area, "min area", 0, MAX_AREA)
    check_number(min_distance, "min distance", 1, MAX_DISTANCE)
    components = _drop_smaller_than(measure.label(mask), min_area)
    labels = split_touching(components, min_distance) if min_distance is not None else components
    if exclude_border:
        labels = segmentation.clear_border(labels)
    labels = _drop_smaller_than(labels, min_area)  # watershed can cut off small pieces
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels


def _drop_smaller_than(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Set objects of fewer than ``min_area`` pixels to background."""
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)
