"""The HTML report of ``dlhisto evaluate``: one self-contained page (:mod:`pages`) with the
tables, plots and pictures of the errors; the counts of the confusion matrix are SVG text, the
pictures of the errors PNGs embedded as data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless back end)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from . import metrics  # noqa: E402
from ..io.tables import format_value  # noqa: E402
from .pages import figure, paragraph, svg, table, write_page  # noqa: E402
from ..imaging.intensity import channel_range, stretch

OVERLAY_MAX_SIDE = 1024
"""Pictures of the errors are shrunk (every n-th pixel) to at most this many pixels a side."""
COLOURS = {"match": (46, 204, 64), "false positive": (255, 65, 54), "missed": (255, 220, 0)}
INSTANCE_COLUMNS = ("threshold", "tp", "fp", "fn", "precision", "recall", "f1", "average_precision",
                    "mean_matched_iou", "panoptic_quality", "aji")


def instance_report(path: str | os.PathLike, rows: Sequence[dict], loaded: Sequence[tuple],
                    backgrounds: dict | None = None, title: str = "Object segmentation against ground truth") -> None:
    """Report of :func:`scoring.instance_rows`: pooled and per-image tables, precision /
    recall / F1 against the IoU threshold, and each image with its matches, false positives
    and missed objects outlined at the first threshold."""
    pooled = [r for r in rows if r["image"] == "all"]
    threshold = pooled[0]["threshold"]
    first = pooled[0]
    sections = [
        paragraph(f"{len(loaded)} image(s). At IoU {format_value(threshold)}: {first['tp']} predicted objects match "
                   f"a true object, {first['fp']} are false positives, {first['fn']} true objects are missed; "
                   f"F1 {format_value(first['f1'])}, aggregated Jaccard index {format_value(first['aji'])}."),
        "<h2>All images pooled</h2>", table(pooled, INSTANCE_COLUMNS, "pooled"),
        "<h2>Scores against the IoU threshold</h2>", figure(_threshold_plot(pooled), (
            "Pooled over all images. A predicted object counts as a match when its intersection over union "
            "with a true object reaches the threshold (one-to-one matching)."))]
    if len(loaded) > 1:
        per_image = [r for r in rows if r["image"] != "all" and r["threshold"] == threshold]
        sections += [f"<h2>Per image, IoU {format_value(threshold)}</h2>",
                     table(per_image, ("image",) + INSTANCE_COLUMNS, "per-image")]
    sections += [f"<h2>Errors at IoU {format_value(threshold)}</h2>", _legend()]
    for truth, predicted, name in loaded:
        true_ids, pred_ids = metrics.matched_objects(truth, predicted, threshold)
        picture = _instance_errors(truth, predicted, true_ids, pred_ids, (backgrounds or {}).get(name))
        counts = next(r for r in rows if r["image"] == name and r["threshold"] == threshold)
        sections.append(figure(_png(picture), f"{html.escape(name)}: {counts['tp']} matched (green), "
                                f"{counts['fp']} false positives (red), {counts['fn']} missed (yellow)"))
    write_page(path, title, sections, "evaluate")


def class_report(path: str | os.PathLike, rows: Sequence[dict], confusion: np.ndarray, class_names: Sequence[str],
                 loaded: Sequence[tuple], backgrounds: dict | None = None,
                 title: str = "Pixel classes against ground truth") -> None:
    """Report of :func:`scoring.class_rows`: per-class table, confusion matrix, and each image
    with its wrongly classified pixels in red."""
    pooled = [r for r in rows if r["image"] == "all"]
    accuracy = np.trace(confusion) / confusion.sum()
    sections = [
        paragraph(f"{len(loaded)} image(s), {int(confusion.sum())} pixels, {format_value(float(accuracy))} of them "
                   "in the right class."),
        "<h2>All images pooled</h2>",
        table(pooled, ("class", "true_pixels", "predicted_pixels", "iou", "dice", "precision", "recall"), "pooled"),
        "<h2>Confusion matrix</h2>",
        figure(_confusion_plot(confusion, class_names, "pixels"), "Rows: true class; columns: predicted class.")]
    if len(loaded) > 1:
        sections += ["<h2>Per image</h2>", table([r for r in rows if r["image"] != "all"],
                                                  ("image", "class", "true_pixels", "iou", "dice"), "per-image")]
    sections.append("<h2>Wrongly classified pixels</h2>")
    for truth, predicted, name in loaded:
        wrong = truth != predicted
        picture = _tint(_background(truth, (backgrounds or {}).get(name)), _shrink(wrong), COLOURS["false positive"])
        sections.append(figure(_png(picture), f"{html.escape(name)}: {int(wrong.sum())} of {wrong.size} pixels "
                                "in the wrong class (red)"))
    write_page(path, title, sections, "evaluate")


def classification_report(path: str | os.PathLike, rows: Sequence[dict], confusion: np.ndarray,
                          class_names: Sequence[str], title: str = "Image classes against ground truth") -> None:
    """Report of :func:`scoring.evaluate_tile_classes`: per-class table and confusion matrix."""
    overall = next(r for r in rows if r["class"] == "all")
    sections = [
        paragraph(f"{int(confusion.sum())} images or tiles; accuracy {format_value(overall['accuracy'])}, "
                   f"balanced accuracy {format_value(overall['balanced_accuracy'])}."),
        table(rows, ("class", "tiles", "predicted", "precision", "recall", "f1", "accuracy", "balanced_accuracy"),
               "pooled"),
        "<h2>Confusion matrix</h2>",
        figure(_confusion_plot(confusion, class_names, "images or tiles"),
                "Rows: true class; columns: predicted class.")]
    write_page(path, title, sections, "evaluate")


def restoration_report(path: str | os.PathLike, rows: Sequence[dict], loaded: Sequence[tuple],
                       title: str = "Restored images against their targets") -> None:
    """Report of :func:`scoring.restoration_rows`: the table, and for each image the target,
    the prediction (both stretched alike, by the target's percentiles) and their absolute
    difference (white: the target's range of values, or more)."""
    overall = rows[-1]
    sections = [
        paragraph(f"{len(loaded)} image(s); mean PSNR {format_value(overall['psnr'])} dB, SSIM "
                   f"{format_value(overall['ssim'])}, NRMSE {format_value(overall['nrmse'])}."),
        table(rows, ("image", "psnr", "ssim", "nrmse", "mae"), "pooled"), "<h2>Images</h2>"]
    for truth, predicted, name in loaded:
        truth_plane, predicted_plane = (_shrink(a if a.ndim == 2 else a.mean(axis=-1)) for a in (truth, predicted))
        (low,), (high,) = channel_range(truth_plane)
        pictures = [_grey(stretch(truth_plane, low, high)), _grey(stretch(predicted_plane, low, high)),
                    _grey(stretch(np.abs(predicted_plane - truth_plane), 0, high - low))]
        row = next(r for r in rows if r["image"] == name)
        sections.append(figure(" ".join(_png(p) for p in pictures), (
            f"{html.escape(name)}: target, prediction, absolute difference; PSNR {format_value(row['psnr'])} dB, "
            f"SSIM {format_value(row['ssim'])}")))
    write_page(path, title, sections, "evaluate")


def _grey(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 (clipped) as an RGB picture."""
    grey = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _legend() -> str:
    return '<p class="legend">' + "".join(f'<span style="background: rgb{colour}"></span>{name}'
                                          for name, colour in COLOURS.items()) + "</p>"


def _threshold_plot(pooled: Sequence[dict]) -> str:
    thresholds = [r["threshold"] for r in pooled]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("precision", "o-"), ("recall", "s-"), ("f1", "^-"), ("panoptic_quality", "d--")):
        ax.plot(thresholds, [r[key] for r in pooled], style, label=key.replace("_", " "))
    ax.set(xlabel="IoU threshold", ylabel="score", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return svg(fig)


def _confusion_plot(confusion: np.ndarray, class_names: Sequence[str], unit: str) -> str:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    row_sums = confusion.sum(axis=1, keepdims=True)
    ax.imshow(np.divide(confusion, row_sums, out=np.zeros(confusion.shape), where=row_sums > 0),
              cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        share = count / row_sums[i, 0] if row_sums[i, 0] else 0
        ax.text(j, i, str(int(count)), ha="center", va="center", color="white" if share > 0.5 else "black", gid=f"count-{i}-{j}")
    ax.set(xticks=range(n), yticks=range(n), xlabel=f"predicted class ({unit})", ylabel="true class")
    ax.set_xticklabels(class_names, parse_math=False)  # names are text, never TeX ('$' in a name)
    ax.set_yticklabels(class_names, parse_math=False)
    return svg(fig)


def _png(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _shrink(array: np.ndarray) -> np.ndarray:
    step = -(-max(array.shape[:2]) // OVERLAY_MAX_SIDE)
    return array[::step, ::step]


def _background(truth: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """The image in grey (1st-99.8th percentile stretch), or the true objects in grey without one."""
    if image is None:
        return _grey(np.where(_shrink(truth) > 0, 90 / 255, 30 / 255))
    plane = _shrink(image if image.ndim == 2 else image.mean(axis=-1)).astype(np.float32)
    (low,), (high,) = channel_range(plane)
    return _grey(stretch(plane, low, high))


def _instance_errors(truth, predicted, true_ids, pred_ids, image) -> np.ndarray:
    picture = _background(truth, image)
    truth, predicted = _shrink(truth), _shrink(predicted)
    matched_pred = np.isin(predicted, pred_ids) & (predicted > 0)
    missed = ~np.isin(truth, true_ids) & (truth > 0)
    false_positive = ~matched_pred & (predicted > 0)
    picture = _tint(picture, missed, COLOURS["missed"], outline=truth)
    picture = _tint(picture, false_positive, COLOURS["false positive"], outline=predicted)
    return _tint(picture, matched_pred, COLOURS["match"], outline=predicted)


def _tint(picture: np.ndarray, mask: np.ndarray, colour, outline: np.ndarray | None = None) -> np.ndarray:
    """Colour ``mask`` (or only its objects' outlines, when the label image is given)."""
    if outline is not None:
        mask = mask & find_boundaries(outline, mode="inner")
    picture = picture.copy()
    picture[mask] = colour
    return picture


def typed_report(path: str | os.PathLike, rows: Sequence[dict], confusion: np.ndarray, class_names: Sequence[str],
                 title: str = "Cell types against ground truth") -> None:
    """Report of :func:`typed.typed_rows`: per-class detection F1 and PQ, mPQ, and the confusion
    of the matched objects' types."""
    from .typed import TYPED_COLUMNS

    pooled = [r for r in rows if r["image"] == "all"]
    mean = next(r for r in pooled if r["class"] == "mean")
    sections = [
        paragraph(f"Objects of each class matched at IoU 0.5 (CoNIC / PanNuke): mPQ "
                   f"{format_value(mean['panoptic_quality'])}, mean F1 {format_value(mean['f1'])}."),
        table(pooled, TYPED_COLUMNS, "pooled"),
        "<h2>Types of the matched objects</h2>",
        figure(_confusion_plot(confusion, class_names, "objects"),
                "Objects matched at IoU 0.5 whatever their class. Rows: true class; columns: predicted class."),
        "<h2>Per image</h2>",
        table([r for r in rows if r["image"] != "all"], TYPED_COLUMNS, "per-image")]
    write_page(path, title, sections, "evaluate")
