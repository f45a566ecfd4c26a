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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..base.errors import InputError

MAX_GROUP_PAIRS = 4 * 10**7
"""Largest group of objects linked by overlaps above a threshold that is matched exactly (a
dense block of this many IoUs, 320 MB); above IoU 0.5 every group is a single pair."""
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


@dataclass
class Overlaps:
    """The (true object, predicted object) pairs that share pixels, as sparse lists: a whole
    slide holds a million nuclei, and a dense object-by-object matrix would not fit in memory.
    Background (0) is no object; labels need not be consecutive."""

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    rows: np.ndarray
    """Index (into ``true_ids``) of the true object of each overlapping pair."""
    cols: np.ndarray
    """Index (into ``pred_ids``) of its predicted object."""
    shared: np.ndarray
    """Pixels the pair shares."""

    @property
    def iou(self) -> np.ndarray:
        """Intersection over union of each pair."""
        return self.shared / (self.true_areas[self.rows] + self.pred_areas[self.cols] - self.shared)


def overlaps(truth: np.ndarray, predicted: np.ndarray) -> Overlaps:
    """The overlapping object pairs of two label images; memory follows the pixels, not the
    number of objects squared."""
    if truth.shape != predicted.shape:
        raise InputError(f"truth {truth.shape[1]}x{truth.shape[0]} and prediction "
                         f"{predicted.shape[1]}x{predicted.shape[0]} differ in size")
    true_ids, true_index, true_areas = _objects(truth)
    pred_ids, pred_index, pred_areas = _objects(predicted)
    both = (true_index >= 0) & (pred_index >= 0)
    pairs, shared = np.unique(true_index[both] * np.int64(len(pred_ids)) + pred_index[both], return_counts=True)
    rows, cols = np.divmod(pairs, max(len(pred_ids), 1))
    return Overlaps(true_ids, pred_ids, true_areas, pred_areas, rows, cols, shared)


def _objects(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object ids (background excluded), each pixel's index into them (-1 for background), areas."""
    ids, index, areas = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    index = index.astype(np.int64)
    if ids.size and ids[0] == 0:
        return ids[1:], index - 1, areas[1:]
    return ids, index, areas


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
    pairs = overlaps(truth, predicted)
    iou = pairs.iou
    n_true, n_pred = len(pairs.true_ids), len(pairs.pred_ids)
    results = []
    for threshold in thresholds:
        matched = iou[_assign(pairs, iou, threshold)]
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
    pairs = overlaps(truth, predicted)
    chosen = _assign(pairs, pairs.iou, threshold)
    return pairs.true_ids[pairs.rows[chosen]], pairs.pred_ids[pairs.cols[chosen]]


def _assign(pairs: Overlaps, iou: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the pairs matched one-to-one with IoU >= threshold: as many matches as
    possible, then the highest IoU.

    The pairs above the threshold form a bipartite graph; each connected group of objects is
    matched on its own (optimal assignment, as StarDist does on the whole matrix), so the work
    follows the size of the groups, which is one pair for almost every object (above IoU 0.5 a
    pair can share an object with no other pair).
    """
    candidates = np.flatnonzero(iou >= threshold)
    if not candidates.size:
        return candidates
    rows, cols = pairs.rows[candidates], pairs.cols[candidates]
    n_true = len(pairs.true_ids)
    graph = coo_matrix((np.ones(len(candidates)), (rows, cols + n_true)),
                       shape=(n_true + len(pairs.pred_ids),) * 2)
    group = connected_components(graph, directed=False)[1][rows]
    size = np.bincount(group)[group]
    chosen = [candidates[size == 1]]
    shared = np.flatnonzero(size > 1)
    order = shared[np.argsort(group[shared], kind="stable")]
    for members in np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if order.size else []:
        local_rows, r = np.unique(rows[members], return_inverse=True)
        local_cols, c = np.unique(cols[members], return_inverse=True)
        if len(local_rows) * len(local_cols) > MAX_GROUP_PAIRS:
            raise InputError(f"{len(local_rows)} true and {len(local_cols)} predicted objects overlap in one chain "
                             f"at IoU {threshold:g}, too many to match exactly; use IoU thresholds of 0.5 or more")
        scores = np.zeros((len(local_rows), len(local_cols)))
        scores[r, c] = iou[candidates[members]]
        costs = -(scores >= threshold).astype(float) - scores / (2 * min(scores.shape))
        best_r, best_c = linear_sum_assignment(costs)
        keep = scores[best_r, best_c] >= threshold
        lookup = {(a, b): k for a, b, k in zip(r, c, candidates[members])}
        chosen.append(np.array([lookup[(a, b)] for a, b in zip(best_r[keep], best_c[keep])], dtype=np.int64))
    return np.concatenate(chosen)


def aggregated_jaccard_index(truth: np.ndarray, predicted: np.ndarray) -> float:
    """AJI (Kumar et al. 2017): each true object with the predicted object of highest IoU;
    intersections over unions summed, unmatched predicted objects added to the union."""
    return _ratio(*aji_sums(truth, predicted), 0.0)


def aji_sums(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int]:
    """The summed intersection and union of the AJI, to pool several images."""
    pairs = overlaps(truth, predicted)
    iou = pairs.iou
    # for each true object, its pair of highest IoU (the first such predicted object on ties)
    order = np.lexsort((pairs.cols, -iou, pairs.rows))
    first = order[np.r_[True, np.diff(pairs.rows[order]) != 0]] if order.size else order
    best_rows, best_cols, best_shared = pairs.rows[first], pairs.cols[first], pairs.shared[first]
    union_of_best = pairs.true_areas[best_rows] + pairs.pred_areas[best_cols] - best_shared
    unmatched_true = np.ones(len(pairs.true_ids), bool)
    unmatched_true[best_rows] = False
    unused_pred = np.ones(len(pairs.pred_ids), bool)
    unused_pred[best_cols] = False
    intersection = int(best_shared.sum())
    union = int(union_of_best.sum()) + int(pairs.true_areas[unmatched_true].sum()) + int(
        pairs.pred_areas[unused_pred].sum())
    return intersection, union


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
