"""Predictions against ground truth, image by image and pooled: the tables of ``dlhisto evaluate``.

Instance mode compares label images (one id per object) with :func:`metrics.match_instances`
at every IoU threshold and the aggregated Jaccard index; semantic mode compares class maps
pixel by pixel. Pooled figures sum counts over the images (micro-average), so a large image
weighs more than a small one, as in the DSB2018 and StarDist evaluations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import metrics
from .errors import InputError
from .image_io import read_labels

ALL_IMAGES = "all"


def evaluate_instances(pairs: Sequence[tuple], thresholds: Sequence[float] = metrics.IOU_THRESHOLDS) -> list[dict]:
    """Rows (image, threshold, counts and scores, aji) for each (truth, prediction, truth name,
    prediction name) pair, then the pooled rows of image 'all'."""
    rows, per_threshold, aji_parts = [], {float(t): [] for t in thresholds}, []
    for truth, predicted, name in _load_pairs(pairs):
        intersection, union = metrics.aji_sums(truth, predicted)
        aji_parts.append((intersection, union))
        for matching in metrics.match_instances(truth, predicted, thresholds):
            per_threshold[matching.threshold].append(matching)
            rows.append({"image": name, **matching.to_dict(), "aji": _fraction(intersection, union)})
    pooled_aji = _fraction(sum(i for i, _ in aji_parts), sum(u for _, u in aji_parts))
    for matchings in per_threshold.values():
        rows.append({"image": ALL_IMAGES, **metrics.pool_matchings(matchings).to_dict(), "aji": pooled_aji})
    return rows


def evaluate_classes(pairs: Sequence[tuple], class_names: Sequence[str] | None = None) -> tuple[list[dict], np.ndarray]:
    """Rows (image, class, pixels, IoU, Dice, precision, recall) per image and pooled, and the
    pooled confusion matrix. Classes are the values 0..K-1 of the class maps."""
    loaded = list(_load_pairs(pairs))
    n_classes = max(len(class_names or []), max(int(max(t.max(), p.max())) for t, p, _ in loaded) + 1)
    names = list(class_names or []) + [str(k) for k in range(len(class_names or []), n_classes)]
    rows, pooled = [], np.zeros((n_classes, n_classes), np.int64)
    for truth, predicted, name in loaded:
        confusion = metrics.confusion_matrix(truth, predicted, n_classes)
        pooled += confusion
        rows += [{"image": name, **s, "class": names[s["class"]]} for s in metrics.per_class_scores(confusion)]
    rows += [{"image": ALL_IMAGES, **s, "class": names[s["class"]]} for s in metrics.per_class_scores(pooled)]
    return rows, pooled


def _load_pairs(pairs: Sequence[tuple]):
    if not pairs:
        raise InputError("nothing to evaluate: give at least one prediction and its ground truth")
    for truth_path, predicted_path, truth_name, predicted_name in pairs:
        truth = read_labels(truth_path, truth_name).data
        predicted = read_labels(predicted_path, predicted_name).data
        if truth.shape != predicted.shape:
            raise InputError(f"prediction '{predicted_name}' ({predicted.shape[1]}x{predicted.shape[0]}) and ground "
                             f"truth '{truth_name}' ({truth.shape[1]}x{truth.shape[0]}) differ in size")
        yield truth.astype(np.int64), predicted.astype(np.int64), predicted_name


def _fraction(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
