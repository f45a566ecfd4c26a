"""How good a segmentation or classification is, measured the way the field measures it.

- Pixels, per class: confusion matrix, IoU (Jaccard), Dice (F1), precision, recall.
- Instances: predicted objects matched one-to-one to true objects at IoU thresholds (optimal
  assignment, as StarDist's ``matching`` does), giving true/false positives and negatives,
  precision, recall, F1, the DSB2018 "average precision" TP / (TP + FP + FN), mean matched
  IoU and panoptic quality; and the aggregated Jaccard index (Kumar et al. 2017).
- Classes of images or tiles: accuracy, balanced accuracy, per-class precision/recall/F1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError

IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class; values outside 0..K-1 refused."""
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    if truth.shape != predicted.shape:
        raise InputError(f"truth and prediction differ in size ({truth.size} and {predicted.size} values)")
    for name, values in (("truth", truth), ("prediction", predicted)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise InputError(f"the {name} holds class {int(values.max())}; expected classes 0 to {n_classes - 1}")
    return np.bincount(truth.astype(np.int64) * n_classes + predicted, minlength=n_classes ** 2
                       ).reshape(n_classes, n_classes)


def per_class_scores(confusion: np.ndarray) -> list[dict]:
    """IoU, Dice, precision and recall of each class from a confusion matrix (None where undefined)."""
    tp = np.diag(confusion).astype(float)
    fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
    return [{"class": k, "true_pixels": int(tp[k] + fn[k]), "predicted_pixels": int(tp[k] + fp[k]),
             "iou": _ratio(tp[k], tp[k] + fp[k] + fn[k]), "dice": _ratio(2 * tp[k], 2 * tp[k] + fp[k] + fn[k]),
             "precision": _ratio(tp[k], tp[k] + fp[k]), "recall": _ratio(tp[k], tp[k] + fn[k])}
            for k in range(len(tp))]


def classification_scores(confusion: np.ndarray) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present) and per-class F1."""
    scores = per_class_scores(confusion)
    recalls = [s["recall"] for s in scores if s["recall"] is not None]
    return {"accuracy": _ratio(np.trace(confusion), confusion.sum()),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
            "f1": [s["dice"] for s in scores]}


def iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, int, int]:
    """IoU of every (true object, predicted object) pair, background (0) excluded; and the
    numbers of true and predicted objects. Labels need not be consecutive."""
    overlap, true_areas, pred_areas = _overlaps(truth, predicted)
    union = true_areas[:, None] + pred_areas[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0), len(true_areas), len(pred_areas)


def _overlaps(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels shared by each (true, predicted) object pair, and the objects' areas."""
    if truth.shape != predicted.shape:
        raise InputError(f"truth {truth.shape[1]}x{truth.shape[0]} and prediction "
                         f"{predicted.shape[1]}x{predicted.shape[0]} differ in size")
    true_ids, true_index = np.unique(truth, return_inverse=True)
    pred_ids, pred_index = np.unique(predicted, return_inverse=True)
    overlap = np.bincount(true_index.ravel() * len(pred_ids) + pred_index.ravel(),
                          minlength=len(true_ids) * len(pred_ids)).reshape(len(true_ids), len(pred_ids))
    true_areas, pred_areas = overlap.sum(axis=1), overlap.sum(axis=0)
    keep_true, keep_pred = true_ids != 0, pred_ids != 0
    return overlap[keep_true][:, keep_pred], true_areas[keep_true], pred_areas[keep_pred]


@dataclass
class Matching:
    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    average_precision: float
    """TP / (TP + FP + FN): the DSB2018 and StarDist 'accuracy'."""
    mean_matched_iou: float
    panoptic_quality: float

    def to_dict(self) -> dict:
        return asdict(self)


def match_instances(truth: np.ndarray, predicted: np.ndarray,
                    thresholds: Sequence[float] = IOU_THRESHOLDS) -> list[Matching]:
    """One-to-one matching of predicted to true objects at each IoU threshold, maximising the
    number of matches, then their IoU (StarDist's criterion)."""
    scores, n_true, n_pred = iou_matrix(truth, predicted)
    results = []
    for threshold in thresholds:
        rows, cols = _assign(scores, threshold)
        matched = scores[rows, cols]
        tp = len(matched)
        fp, fn = n_pred - tp, n_true - tp
        results.append(Matching(
            threshold=float(threshold), tp=tp, fp=fp, fn=fn, precision=_ratio(tp, tp + fp, 0.0),
            recall=_ratio(tp, tp + fn, 0.0), f1=_ratio(2 * tp, 2 * tp + fp + fn, 0.0),
            average_precision=_ratio(tp, tp + fp + fn, 0.0), mean_matched_iou=_ratio(matched.sum(), tp, 0.0),
            panoptic_quality=_ratio(matched.sum(), tp + fp / 2 + fn / 2, 0.0)))
    return results


def matched_objects(truth: np.ndarray, predicted: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Label ids of the true and of the predicted objects matched at ``threshold`` (for
    pictures of the errors: the other objects are misses and false positives)."""
    rows, cols = _assign(iou_matrix(truth, predicted)[0], threshold)
    true_ids, pred_ids = np.unique(truth), np.unique(predicted)
    return true_ids[true_ids != 0][rows], pred_ids[pred_ids != 0][cols]


def _assign(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the IoU matrix matched one-to-one with IoU >= threshold: as many
    matches as possible, then the highest IoU."""
    if not scores.size or not (scores >= threshold).any():
        return np.zeros(0, int), np.zeros(0, int)
    costs = -(scores >= threshold).astype(float) - scores / (2 * min(scores.shape))
    rows, cols = linear_sum_assignment(costs)
    keep = scores[rows, cols] >= threshold
    return rows[keep], cols[keep]


def aggregated_jaccard_index(truth: np.ndarray, predicted: np.ndarray) -> float:
    """AJI (Kumar et al. 2017): each true object with the predicted object of highest IoU;
    intersections over unions summed, unmatched predicted objects added to the union."""
    return _ratio(*aji_sums(truth, predicted), 0.0)


def aji_sums(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int]:
    """The summed intersection and union of the AJI, to pool several images."""
    overlap, true_areas, pred_areas = _overlaps(truth, predicted)
    union_of_pairs = true_areas[:, None] + pred_areas[None, :] - overlap
    intersection = union = 0
    used = np.zeros(len(pred_areas), bool)
    for i in range(len(true_areas)):
        j = int(np.argmax(overlap[i] / union_of_pairs[i])) if len(pred_areas) else -1
        if j >= 0 and overlap[i, j] > 0:
            intersection += int(overlap[i, j])
            union += int(union_of_pairs[i, j])
            used[j] = True
        else:
            union += int(true_areas[i])
    return intersection, union + int(pred_areas[~used].sum())


def pool_matchings(matchings: Sequence[Matching]) -> Matching:
    """One Matching over several images at the same threshold: counts and matched IoUs summed."""
    tp, fp, fn = (sum(getattr(m, k) for m in matchings) for k in ("tp", "fp", "fn"))
    iou = float(sum(m.mean_matched_iou * m.tp for m in matchings))
    return Matching(threshold=matchings[0].threshold, tp=tp, fp=fp, fn=fn, precision=_ratio(tp, tp + fp, 0.0),
                    recall=_ratio(tp, tp + fn, 0.0), f1=_ratio(2 * tp, 2 * tp + fp + fn, 0.0),
                    average_precision=_ratio(tp, tp + fp + fn, 0.0), mean_matched_iou=_ratio(iou, tp, 0.0),
                    panoptic_quality=_ratio(iou, tp + fp / 2 + fn / 2, 0.0))


def _ratio(numerator, denominator, undefined=None):
    return float(numerator / denominator) if denominator else undefined
