"""Predictions against ground truth, image by image and pooled: the tables of ``dlhisto evaluate``.

Instance mode compares label images (one id per object) with :func:`metrics.match_instances`
at every IoU threshold and the aggregated Jaccard index; semantic mode compares class maps
pixel by pixel; classification mode compares the class of each image or tile in a ``classify``
table with a table of true classes. Pooled figures sum counts over the images (micro-average), so a large image
weighs more than a small one, as in the DSB2018 and StarDist evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from . import metrics
from ..io import untrusted
from ..base.errors import InputError, one_line
from ..io.images import read_image, read_labels
from ..io.pixel_size import onto_grid
from ..io.inputs import named
from ..io.tables import read_table, read_tile_classes, write_table

ALL_IMAGES = "all"
MODES = ("instance", "semantic", "classification", "restoration", "typed")
"""instance: objects matched at IoU thresholds; semantic: classes pixel by pixel; classification:
``classify`` tables against a table of true classes; restoration: images against targets; typed:
objects and their classes (cell types, :mod:`typed`)."""
TILE_CLASS_COLUMNS = ["class", "tiles", "predicted", "precision", "recall", "f1", "accuracy", "balanced_accuracy"]


@dataclass
class Evaluation:
    """The scores of :func:`evaluate`: ``rows`` as in the table output (per image, then the
    pooled rows of image 'all'), the pooled confusion matrix and its class names (semantic,
    classification); :meth:`write` writes the tool's outputs."""

    mode: str
    rows: list[dict]
    confusion: np.ndarray | None = None
    class_names: list[str] | None = None
    loaded: list = field(default_factory=list, repr=False)
    """The arrays compared (for the pictures of the report)."""
    backgrounds: dict | None = field(default=None, repr=False)

    def write(self, table, confusion=None, report_path=None) -> None:
        """The table (TSV), the confusion matrix (TSV) and the HTML report; each path optional
        but the table's."""
        from . import report

        from .typed import TYPED_COLUMNS

        columns = {"classification": TILE_CLASS_COLUMNS, "typed": TYPED_COLUMNS}.get(self.mode, list(self.rows[0]))
        write_table(table, self.rows, columns)
        if confusion and self.confusion is not None:
            write_table(confusion, [{"true class": n, **dict(zip(self.class_names, map(int, row)))}
                                    for n, row in zip(self.class_names, self.confusion)],
                        ["true class", *self.class_names])
        if not report_path:
            return
        if self.mode == "instance":
            report.instance_report(report_path, self.rows, self.loaded, self.backgrounds)
        elif self.mode == "semantic":
            report.class_report(report_path, self.rows, self.confusion, self.class_names, self.loaded,
                                self.backgrounds)
        elif self.mode == "classification":
            report.classification_report(report_path, self.rows, self.confusion, self.class_names)
        elif self.mode == "typed":
            report.typed_report(report_path, self.rows, self.confusion, self.class_names)
        else:
            report.restoration_report(report_path, self.rows, self.loaded)

    def describe(self) -> str:
        """One line: the pooled scores."""
        pooled = next(r for r in self.rows if r.get("image", r.get("class")) == ALL_IMAGES  # the first threshold
                      and (self.mode != "typed" or r["class"] == ALL_IMAGES))
        if self.mode == "instance":
            return (f"{len(self.loaded)} image(s), IoU {pooled['threshold']:g}: {pooled['tp']} matched, "
                    f"{pooled['fp']} false positives, {pooled['fn']} missed; F1 {pooled['f1']:.3f}, "
                    f"AJI {pooled['aji']:.3f}")
        if self.mode == "typed":
            mean = next(r for r in self.rows if r["image"] == ALL_IMAGES and r["class"] == "mean")
            return (f"{len(self.loaded)} image(s), {len(self.class_names)} classes at IoU 0.5: mPQ "
                    f"{mean['panoptic_quality']:.3f}, mean F1 {mean['f1']:.3f}, types of matched objects "
                    f"{pooled['type_accuracy'] or 0:.3f} right")
        if self.mode == "restoration":
            return (f"{len(self.rows) - 1} image(s): PSNR {pooled['psnr']:.2f} dB, SSIM {pooled['ssim']:.3f}, "
                    f"NRMSE {pooled['nrmse']:.4f}")
        if self.mode == "classification":
            unscored = f" ({pooled['unscored']} tiles without a true class not scored)" if pooled["unscored"] else ""
            return (f"{pooled['tiles']} images or tiles: accuracy {pooled['accuracy']:.3f}, balanced accuracy "
                    f"{pooled['balanced_accuracy']:.3f}{unscored}")
        mean_iou = np.mean([r["iou"] for r in self.rows if r["image"] == ALL_IMAGES and r["iou"] is not None])
        return f"{len(self.loaded)} image(s), {len(self.class_names)} classes: mean IoU {mean_iou:.3f}"


def evaluate(predictions: Sequence, truths: Sequence, mode: str = "instance",
             thresholds: Sequence[float] = metrics.IOU_THRESHOLDS, class_names: Sequence[str] | None = None,
             images: Sequence | None = None, truth_classes: Sequence | None = None,
             prediction_classes: Sequence | None = None) -> Evaluation:
    """Predictions against ground truth, as ``dlhisto evaluate`` (the Galaxy tool) does.

    Parameters
    ----------
    predictions, truths : list of path or (path, name)
        Label images (instance), class maps (semantic), predicted images (restoration), paired in
        order; classification: ``classify`` tables and ONE table of true classes.
    mode : {'instance', 'semantic', 'classification', 'restoration', 'typed'}
    thresholds : list of float
        Instance: IoU above which a predicted object matches a true one.
    class_names : list of str, optional
        Semantic: names of classes 0..K-1; classification: the classes in the confusion
        matrix's order (default: sorted).
    images : list of path or (path, name), optional
        The image of each prediction, to draw the errors on in the report.
    truth_classes, prediction_classes : list of ObjectClasses, path or (path, name), optional
        Typed: the class of the objects of each truth and prediction (a table, a type map or
        GeoJSON, :func:`classic.object_classes.read_object_classes`).

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> from dlhisto_core import evaluate
    >>> scores = evaluate(["test-data/nuclei_labels.tif"], ["test-data/nuclei_groundtruth.tif"], thresholds=[0.5])
    >>> print(scores.describe())
    1 image(s), IoU 0.5: 74 matched, 38 false positives, 51 missed; F1 0.624, AJI 0.517
    """
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    predictions, truths = named(predictions), named(truths)
    if mode == "classification":
        if len(truths) != 1:
            raise InputError(f"classification takes one table of true classes, got {len(truths)}")
        rows, confusion, names = evaluate_tile_classes(predictions, truths[0], class_names)
        return Evaluation(mode, rows, confusion, names)
    if len(truths) != len(predictions):
        raise InputError(f"{len(predictions)} predictions but {len(truths)} ground truths: give one per prediction")
    pairs = [(t, p, t_name, p_name) for (t, t_name), (p, p_name) in zip(truths, predictions)]
    if mode == "restoration":
        loaded = load_restoration_pairs(pairs)
        return Evaluation(mode, restoration_rows(loaded), loaded=loaded)
    loaded = load_pairs(pairs)
    backgrounds = None
    if images:
        images = named(images)
        if len(images) != len(predictions):
            raise InputError(f"{len(images)} images for {len(predictions)} predictions: give one per prediction")
        backgrounds = {name: _background_image(path, image_name, truth.shape)
                       for (path, image_name), (_, name), (truth, _, _) in zip(images, predictions, loaded)}
    if mode == "instance":
        thresholds = [float(t) for t in thresholds]
        if not thresholds or not all(0 < t <= 1 for t in thresholds):
            raise InputError(f"IoU thresholds must be between 0 and 1, got {', '.join(map(str, thresholds))}")
        return Evaluation(mode, instance_rows(loaded, thresholds), loaded=loaded, backgrounds=backgrounds)
    if mode == "typed":
        return _typed(loaded, truth_classes, prediction_classes, class_names)
    rows, confusion = class_rows(loaded, class_names)
    return Evaluation(mode, rows, confusion, class_list(class_names, len(confusion)), loaded, backgrounds)


def _typed(loaded: list, truth_classes, prediction_classes, class_names) -> Evaluation:
    """The typed evaluation of loaded (truth, prediction, name) label arrays."""
    from ..classic.object_classes import ObjectClasses, read_object_classes
    from . import typed

    def classes_of(given, which: int, what: str) -> list:
        given = list(given or [])
        if len(given) != len(loaded):
            raise InputError(f"typed evaluation needs the classes of every {what} ({len(loaded)}), got {len(given)}")
        classes = []
        for item, arrays in zip(given, loaded):
            if not isinstance(item, ObjectClasses):
                path, name = named([item])[0]
                item = read_object_classes(path, arrays[which].astype(np.uint32), class_names=class_names or (),
                                           name=name)
            classes.append(item)
        return classes

    truths = classes_of(truth_classes, 0, "ground truth")
    predictions = classes_of(prediction_classes, 1, "prediction")
    names = list(class_names or sorted({n for c in truths + predictions for n in c.names}))
    truths = [c.renumbered(names, "the ground truth") for c in truths]
    predictions = [c.renumbered(names, "the prediction") for c in predictions]
    rows, confusion = typed.typed_rows([(t, tc, p, pc, name) for (t, p, name), tc, pc
                                        in zip(loaded, truths, predictions)], names)
    return Evaluation("typed", rows, confusion, names, loaded)


def evaluate_instances(pairs: Sequence[tuple], thresholds: Sequence[float] = metrics.IOU_THRESHOLDS) -> list[dict]:
    """Objects matched between ground truth and prediction (``dlhisto evaluate --mode instance``).

    Parameters
    ----------
    pairs : list of (truth, prediction[, truth name, prediction name])
        Label image paths, one id per object.
    thresholds : list of float
        IoU above which a predicted object matches a true one.

    Returns
    -------
    list of dict
        A row per image and threshold (tp, fp, fn, precision, recall, f1, panoptic quality...,
        aji), then the pooled rows of image 'all'.

    Examples
    --------
    >>> from dlhisto_core import evaluate_instances
    >>> rows = evaluate_instances([("test-data/nuclei_groundtruth.tif", "test-data/nuclei_labels.tif")], [0.5])
    >>> pooled = rows[-1]
    >>> pooled["image"], pooled["tp"], round(pooled["f1"], 3)
    ('all', 74, 0.624)
    """
    return instance_rows(load_pairs(pairs), thresholds)


def instance_rows(loaded: Sequence[tuple], thresholds: Sequence[float] = metrics.IOU_THRESHOLDS) -> list[dict]:
    """:func:`evaluate_instances` on (truth, prediction, name) label arrays."""
    rows, per_threshold, aji_parts = [], {float(t): [] for t in thresholds}, []
    for truth, predicted, name in loaded:
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
    return class_rows(load_pairs(pairs), class_names)


def class_rows(loaded: Sequence[tuple], class_names: Sequence[str] | None = None) -> tuple[list[dict], np.ndarray]:
    """:func:`evaluate_classes` on (truth, prediction, name) class-map arrays."""
    n_classes = max(len(class_names or []), max(int(max(t.max(), p.max())) for t, p, _ in loaded) + 1)
    untrusted.check_class_count(n_classes, "the class maps (their largest value)")
    names = class_list(class_names, n_classes)
    rows, pooled = [], np.zeros((n_classes, n_classes), np.int64)
    for truth, predicted, name in loaded:
        confusion = metrics.confusion_matrix(truth, predicted, n_classes)
        pooled += confusion
        rows += [{"image": name, **s, "class": names[s["class"]]} for s in metrics.per_class_scores(confusion)]
    rows += [{"image": ALL_IMAGES, **s, "class": names[s["class"]]} for s in metrics.per_class_scores(pooled)]
    return rows, pooled


def evaluate_tile_classes(predictions: Sequence[tuple[str, str]], truth: tuple[str, str],
                          class_names: Sequence[str] | None = None) -> tuple[list[dict], np.ndarray, list[str]]:
    """Classes predicted by ``classify`` (tables, with their names) against a table of true
    classes: rows per class (tiles, precision, recall, F1) and one 'all' row (accuracy,
    balanced accuracy, macro F1, and ``unscored``: the tiles the truth gives no class); the
    confusion matrix and the class names. A truth per image must name every image; a truth
    per tile (a slide annotated in places) scores the tiles it names."""
    expected = read_true_classes(*truth)
    pairs, unscored = [], 0
    for path, name in predictions:
        for row in read_table(path, name, ("image", "class")):
            key = _tile_key(row, expected.keyed_by_tile)
            if key in expected.classes:
                pairs.append((expected.classes[key], row["class"]))
            elif expected.keyed_by_tile:
                unscored += 1
            else:
                raise InputError(f"no true class for {_describe(key)} of '{name}' in '{truth[1]}'")
    if not pairs:
        raise InputError(f"no tile of the prediction tables has a true class in '{truth[1]}'" if unscored
                         else "the prediction tables hold no classified image or tile")
    names = list(class_names or sorted({c for pair in pairs for c in pair}))
    untrusted.check_class_count(len(names), "the classification tables")
    unknown = sorted({c for pair in pairs for c in pair} - set(names))
    if unknown:
        raise InputError(f"class '{one_line(unknown[0], 80)}' is not among the class names "
                         f"{one_line(', '.join(names), 200)}")
    index = {name: k for k, name in enumerate(names)}
    confusion = metrics.confusion_matrix(np.array([index[t] for t, _ in pairs]),
                                         np.array([index[p] for _, p in pairs]), len(names))
    overall = metrics.classification_scores(confusion)
    rows = [{"class": names[s["class"]], "tiles": s["true_pixels"], "predicted": s["predicted_pixels"],
             "precision": s["precision"], "recall": s["recall"], "f1": s["dice"]}
            for s in metrics.per_class_scores(confusion)]
    f1 = [f for f in overall["f1"] if f is not None]
    rows.append({"class": ALL_IMAGES, "tiles": int(confusion.sum()), "predicted": int(confusion.sum()),
                 "f1": float(np.mean(f1)) if f1 else None, "accuracy": overall["accuracy"],
                 "balanced_accuracy": overall["balanced_accuracy"], "unscored": unscored})
    return rows, confusion, names


class TrueClasses(NamedTuple):
    classes: dict
    keyed_by_tile: bool
    """True when the table gives x and y: one class per tile (image, x, y), not per image."""


def read_true_classes(path: str, name: str) -> TrueClasses:
    """A table 'image<TAB>class' (as for training), or 'image x y class' for tiles of slides."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if {"x", "y"} <= set(header):
        rows = read_table(path, name, ("image", "x", "y", "class"))
        return TrueClasses({_tile_key(r, True): r["class"] for r in rows}, True)
    return TrueClasses(read_tile_classes(path, name), False)


def class_list(class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    """The given names, then the numbers of the classes left unnamed."""
    names = list(class_names or [])
    return names + [str(k) for k in range(len(names), n_classes)]


def restoration_rows(loaded: Sequence[tuple]) -> list[dict]:
    """Image quality of predicted images against their targets ((target, prediction, prediction
    name) arrays of :func:`load_restoration_pairs`): PSNR (dB) and NRMSE over the target's range
    of values, SSIM, and the mean absolute error, per image and averaged over the images ('all')."""
    from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

    rows = []
    for truth, prediction, name in loaded:
        value_range = float(truth.max() - truth.min())
        rows.append({"image": name,
                     "psnr": float(peak_signal_noise_ratio(truth, prediction, data_range=value_range)),
                     "ssim": float(structural_similarity(truth, prediction, data_range=value_range,
                                                         channel_axis=2 if truth.ndim == 3 else None)),
                     "nrmse": float(normalized_root_mse(truth, prediction, normalization="min-max")),
                     "mae": float(np.mean(np.abs(truth - prediction)))})
    rows.append({"image": ALL_IMAGES, **{key: float(np.mean([r[key] for r in rows]))
                                         for key in ("psnr", "ssim", "nrmse", "mae")}})
    return rows


def load_restoration_pairs(pairs: Sequence[tuple]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(target, prediction, prediction name) float64 arrays of (target path, prediction path,
    target name, prediction name) tuples, checked to match in size and channels."""
    if not pairs:
        raise InputError("nothing to evaluate: give at least one prediction and its target")
    loaded = []
    for truth_path, prediction_path, truth_name, prediction_name in map(_named_pair, pairs):
        truth = read_image(truth_path, truth_name).data.astype(np.float64)
        prediction = read_image(prediction_path, prediction_name).data.astype(np.float64)
        if truth.shape != prediction.shape:
            raise InputError(f"prediction '{prediction_name}' {prediction.shape} and target '{truth_name}' "
                             f"{truth.shape} differ in size or channels")
        if truth.max() == truth.min():
            raise InputError(f"the target '{truth_name}' is uniform: PSNR and SSIM need a range of values")
        loaded.append((truth, prediction, prediction_name))
    return loaded


def load_pairs(pairs: Sequence[tuple]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(truth, prediction, prediction name) arrays of (truth path, prediction path[, truth name,
    prediction name]) tuples, checked to be of the same size."""
    return list(_load_pairs(pairs))


def _background_image(path, name: str, shape: tuple) -> np.ndarray:
    """The image a prediction was made from, to draw the errors on."""
    data = read_image(path, name).data
    if data.shape[:2] != shape:
        raise InputError(f"image '{name}' ({data.shape[1]}x{data.shape[0]}) differs in size from its prediction "
                         f"({shape[1]}x{shape[0]})")
    return data


def _tile_key(row: dict, by_tile: bool):
    if not by_tile:
        return row["image"]
    try:
        return row["image"], int(row["x"]), int(row["y"])
    except (TypeError, ValueError):
        raise InputError(f"tile position x={row.get('x')}, y={row.get('y')} of image '{row['image']}' is not "
                         "a pair of whole numbers") from None


def _describe(key) -> str:
    return f"image '{key}'" if isinstance(key, str) else f"the tile at x={key[1]}, y={key[2]} of image '{key[0]}'"


def _load_pairs(pairs: Sequence[tuple]):
    if not pairs:
        raise InputError("nothing to evaluate: give at least one prediction and its ground truth")
    for truth_path, predicted_path, truth_name, predicted_name in map(_named_pair, pairs):
        truth = read_labels(truth_path, truth_name)
        predicted = read_labels(predicted_path, predicted_name)
        gridded = onto_grid(predicted.data, predicted.pixel_size, truth.data.shape, truth.pixel_size)
        if gridded is None:  # a model's objects at its own pixel size are resampled onto the truth's
            height, width = predicted.data.shape[:2]
            raise InputError(f"prediction '{predicted_name}' ({width}x{height}) and ground truth '{truth_name}' "
                             f"({truth.data.shape[1]}x{truth.data.shape[0]}) differ in size")
        yield truth.data.astype(np.int64), gridded.astype(np.int64), predicted_name


def _named_pair(pair: tuple) -> tuple:
    """(truth, prediction, truth name, prediction name); names default to the file names."""
    return tuple(pair) if len(pair) == 4 else (*pair, Path(pair[0]).name, Path(pair[1]).name)


def _fraction(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
