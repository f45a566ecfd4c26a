"""Objects from the probabilities of an instance model (background / interior / boundary), and
the thresholds that make them, tuned on annotated images as StarDist's ``optimize_thresholds``
tunes its own.

An object is a connected piece of pixels whose interior probability is above ``interior`` (a
seed), grown by at most ``growth`` pixels over the pixels that are foreground (interior plus
boundary probability above ``foreground``); where two seeds grow towards each other, each pixel
goes to the nearer one. A low interior threshold merges touching nuclei, a high one splits or
loses faint ones; growth gives back the boundary ring the seeds leave out. ``dl_predict`` makes
the same objects tile by tile on slides; :func:`label_objects` makes them in memory for tuning.

Examples
--------
>>> import numpy as np
>>> probabilities = np.zeros((8, 8, 3), np.float32)
>>> probabilities[..., 0] = 1
>>> probabilities[2:6, 2:6] = (0, 0.2, 0.8)    # an object's boundary ring ...
>>> probabilities[3:5, 3:5] = (0, 0.9, 0.1)    # ... around its interior
>>> labels = label_objects(probabilities, InstanceThresholds())
>>> int(labels.max()), int((labels > 0).sum())
(1, 16)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from ..evaluation import metrics
from ..base.errors import InputError
from ..models.spec import InstanceThresholds

TUNING_GRID = {"interior": tuple(round(0.3 + 0.05 * k, 2) for k in range(14)),
               "foreground": tuple(round(0.3 + 0.05 * k, 2) for k in range(10)),
               "growth": tuple(range(7))}
"""The values :func:`tune_thresholds` tries for each threshold."""
MIN_GAIN = 0.02
"""Tuning keeps the default thresholds unless others gain at least this much F1 on the tuning
images: about two standard errors of an F1 near 0.9 on 400 objects. Smaller gains are noise
(measured on mnfinder's nuclei: +0.014 on the tuning images, -0.015 on held-out ones), while a
blurry model's thresholds gain 0.1 or more."""


def seeds(probabilities: np.ndarray, thresholds: InstanceThresholds) -> np.ndarray:
    """The seed pixels (bool) of (..., 3) probabilities."""
    return probabilities[..., 1] > thresholds.interior


def foreground(probabilities: np.ndarray, thresholds: InstanceThresholds) -> np.ndarray:
    """The pixels (bool) that seeds may grow over."""
    return probabilities[..., 0] < 1 - thresholds.foreground


def grow(labels: np.ndarray, mask: np.ndarray, growth: int) -> np.ndarray:
    """Labels grown by at most ``growth`` pixels, kept inside ``mask`` (and their seeds)."""
    if not growth:
        return labels
    return np.where(mask | (labels > 0), expand_labels(labels, growth), 0).astype(labels.dtype)


def label_objects(probabilities: np.ndarray, thresholds: InstanceThresholds, min_area: int = 0) -> np.ndarray:
    """The label image (int32) of (H, W, 3) probabilities; seeds smaller than ``min_area`` pixels are dropped."""
    labels, _ = ndi.label(seeds(probabilities, thresholds))
    if min_area > 1:
        small = np.bincount(labels.ravel()) < min_area
        small[0] = False
        labels[small[labels]] = 0
        labels, _ = ndi.label(labels > 0)
    return grow(labels.astype(np.int32), foreground(probabilities, thresholds), thresholds.growth)


def objects_f1(pairs: Sequence[tuple[np.ndarray, np.ndarray]], thresholds: InstanceThresholds,
               min_area: int = 0) -> metrics.Matching:
    """The matching at IoU 0.5, pooled over (probabilities, true labels) pairs, of the objects
    these thresholds make."""
    return metrics.pool_matchings([metrics.match_instances(truth, label_objects(p, thresholds, min_area), [0.5])[0]
                                   for p, truth in pairs])


@dataclass
class Tuning:
    """The tuned thresholds and what they scored on the tuning images."""

    thresholds: InstanceThresholds
    f1: float
    """Pooled F1 at IoU 0.5 over the tuning images."""
    default_f1: float
    """... with the default thresholds."""
    panoptic_quality: float
    n_objects: int
    """True objects in the tuning images."""
    images: str = ""
    """Which images they were (recorded in the package)."""


def tune_thresholds(pairs: Sequence[tuple[np.ndarray, np.ndarray]], min_area: int = 0) -> Tuning:
    """Thresholds that maximise the pooled F1 at IoU 0.5 (ties: panoptic quality) of the objects
    of (probabilities, true labels) pairs: each threshold in turn over its values in
    :data:`TUNING_GRID`, the others fixed, twice round, starting from the defaults; the defaults
    if the best gain less than :data:`MIN_GAIN`."""
    if not pairs:
        raise InputError("tuning the object thresholds needs at least one annotated image")
    cache: dict[InstanceThresholds, tuple[float, float]] = {}

    def score(thresholds: InstanceThresholds) -> tuple[float, float]:
        if thresholds not in cache:
            pooled = objects_f1(pairs, thresholds, min_area)
            cache[thresholds] = (pooled.f1 or 0.0, pooled.panoptic_quality or 0.0)
        return cache[thresholds]

    best = default = InstanceThresholds()
    for _, name in itertools.product(range(2), TUNING_GRID):
        best = max((replace(best, **{name: value}) for value in TUNING_GRID[name]), key=score)
    if score(best)[0] < score(default)[0] + MIN_GAIN:
        best = default
    f1, quality = score(best)
    return Tuning(best, float(f1), float(score(default)[0]), float(quality),
                  sum(len(np.unique(truth)) - 1 for _, truth in pairs))
