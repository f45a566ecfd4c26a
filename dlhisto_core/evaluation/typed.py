"""Nuclei with types (cell classes) against typed ground truth, as PanNuke and CoNIC score them.

- Per class: the true and the predicted objects of that class alone are matched one-to-one at
  IoU 0.5 (:func:`metrics.match_instances`), giving the class's detection F1 and panoptic
  quality (PQ); over several images the counts and matched IoUs are summed before the ratio.
- mPQ: the mean of the per-class PQs (CoNIC's multi-class PQ, ``mPQ+``, pooled over images).
- Types of the matched objects: all objects matched at IoU 0.5 whatever their class, and the
  confusion of their true and predicted classes (HoVer-Net's classification of detected nuclei).

Objects without a class (in the truth or the prediction) count in no class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import metrics
from ..base.errors import InputError
from ..classic.object_classes import ObjectClasses

IOU = 0.5
ALL_CLASSES, MEAN = "all", "mean"
TYPED_COLUMNS = ("image", "class", "true_objects", "predicted_objects", "tp", "fp", "fn", "precision", "recall",
                 "f1", "panoptic_quality", "type_accuracy")


def class_image(labels: np.ndarray, classes: ObjectClasses, k: int) -> np.ndarray:
    """The objects of ``labels`` whose class is ``k`` (1..K), others set to 0."""
    chosen = classes.labels[classes.classes == k]
    return np.where(np.isin(labels, chosen), labels, 0)


def typed_rows(loaded: Sequence[tuple], class_names: Sequence[str]) -> tuple[list[dict], np.ndarray]:
    """Rows per image then pooled (image 'all'): one per class, one 'all' (every object matched
    whatever its class, with the accuracy of the types of the matched objects) and one 'mean'
    (mPQ and the mean F1 over classes); and the pooled confusion of the matched objects' types
    (rows: true class). ``loaded``: (true labels, true classes, predicted labels, predicted
    classes, name), classes numbered as ``class_names``."""
    n = len(class_names)
    per_class: list[list[metrics.Matching]] = [[] for _ in range(n)]
    agnostic, rows = [], []
    confusion = np.zeros((n, n), np.int64)
    for truth, true_classes, predicted, predicted_classes, name in loaded:
        if truth.shape != predicted.shape:
            raise InputError(f"'{name}': the prediction is {predicted.shape[1]} x {predicted.shape[0]} pixels, "
                             f"the truth {truth.shape[1]} x {truth.shape[0]}")
        image_rows = []
        for k in range(1, n + 1):
            matching = metrics.match_instances(class_image(truth, true_classes, k),
                                               class_image(predicted, predicted_classes, k), [IOU])[0]
            per_class[k - 1].append(matching)
            image_rows.append(_row(name, class_names[k - 1], matching))
        matching = metrics.match_instances(truth, predicted, [IOU])[0]
        agnostic.append(matching)
        image_confusion = _type_confusion(truth, true_classes, predicted, predicted_classes, n)
        confusion += image_confusion
        rows += image_rows + [_row(name, ALL_CLASSES, matching, image_confusion), _mean_row(name, image_rows)]
    pooled = [_row("all", class_names[k], metrics.pool_matchings(per_class[k])) for k in range(n)]
    rows += pooled + [_row("all", ALL_CLASSES, metrics.pool_matchings(agnostic), confusion), _mean_row("all", pooled)]
    return rows, confusion


def _type_confusion(truth, true_classes: ObjectClasses, predicted, predicted_classes: ObjectClasses, n: int
                    ) -> np.ndarray:
    """(n, n) counts of (true class, predicted class) over the objects matched at IoU 0.5 that
    both have a class."""
    true_ids, pred_ids = metrics.matched_objects(truth, predicted, IOU)
    true_of = _lookup(true_classes, true_ids)
    pred_of = _lookup(predicted_classes, pred_ids)
    both = (true_of > 0) & (pred_of > 0)
    return metrics.confusion_matrix(true_of[both] - 1, pred_of[both] - 1, n) if both.any() \
        else np.zeros((n, n), np.int64)


def _lookup(classes: ObjectClasses, ids: np.ndarray) -> np.ndarray:
    """The class (0: none) of each object id."""
    found = dict(zip(classes.labels.tolist(), classes.classes.tolist()))
    return np.array([found.get(i, 0) for i in ids.tolist()], np.int64)


def _row(image: str, class_name: str, matching: metrics.Matching, confusion: np.ndarray | None = None) -> dict:
    row = {"image": image, "class": class_name, "true_objects": matching.tp + matching.fn,
           "predicted_objects": matching.tp + matching.fp, "tp": matching.tp, "fp": matching.fp, "fn": matching.fn,
           "precision": matching.precision, "recall": matching.recall, "f1": matching.f1,
           "panoptic_quality": matching.panoptic_quality}
    if confusion is not None:
        row["type_accuracy"] = float(np.trace(confusion) / confusion.sum()) if confusion.sum() else None
    return row


def _mean_row(image: str, class_rows: list[dict]) -> dict:
    """mPQ and mean F1 over the classes that have objects in the truth or the prediction."""
    present = [r for r in class_rows if r["true_objects"] or r["predicted_objects"]]
    return {"image": image, "class": MEAN,
            "f1": float(np.mean([r["f1"] for r in present])) if present else None,
            "panoptic_quality": float(np.mean([r["panoptic_quality"] for r in present])) if present else None}
