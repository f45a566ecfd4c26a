"""The model card of a dlhisto package: its README.md, which bioimage.io shows as the model's
documentation. It says what the model does, on what it was trained, at which pixel size, and
how good it is: the table of ``evaluate`` or ``crossval``, added with :func:`with_evaluation`
(the model base's data manager does so when the facility gives one).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path


from .. import __version__
from ..io import untrusted
from ..imaging.intensity import NORMALIZATION
from ..base.errors import InputError

EVALUATION_HEADING = "## Evaluation"
MAX_EVALUATION_ROWS = 60
"""Rows of an evaluation table shown in the card (the rest are counted)."""
MAX_CELL = 60
HEADLINE_METRICS = ("f1", "dice", "balanced_accuracy", "accuracy", "panoptic_quality", "psnr", "ssim")
"""The figures a model base row shows, in this order of preference, at most two."""
SUMMARY_ROWS = ("all", "mean")
"""First cells of the rows that summarise a table: evaluate's 'all', crossval's 'mean'."""
TRAINING_IMAGES_SHOWN = 20


def readme(spec, info, target_normalization: dict | None) -> str:
    """The card of a new package (:class:`packages.PackageInfo` ``info``), without evaluation."""
    task = {"classification": "tile classification", "regression": "image restoration (regression)"}.get(
        spec.task, f"{spec.task} segmentation")
    outputs = "output channels" if spec.task == "regression" else "classes"
    images = info.training.get("images") or []
    lines = [f"# {info.name}", "", info.description, "",
             f"- task: {task}, {outputs}: {', '.join(info.class_names)}",
             f"- network: {spec.architecture} with a {spec.encoder} encoder, {spec.in_channels} input channel(s)",
             "- weights: PyTorch state dict, TorchScript and ONNX (deepImageJ, Fiji, onnxruntime)",
             *([f"- training data: {len(images)} image(s): {', '.join(images[:TRAINING_IMAGES_SHOWN])}"
                + (f" and {len(images) - TRAINING_IMAGES_SHOWN} more" if len(images) > TRAINING_IMAGES_SHOWN else "")]
               if images else []),
             f"- pixel size: {info.pixel_size:g} µm (that of the training images; dlhisto predict works at it)"
             if info.pixel_size is not None else "- pixel size: not recorded (the training images gave none)",
             f"- input normalisation: percentiles {NORMALIZATION[0]} and {NORMALIZATION[1]} of "
             f"{'all channels together' if spec.task == 'classification' else 'each channel'} to 0 and 1",
             *_target_lines(target_normalization),
             *([f"- stain normalisation: the training images were mapped onto a {info.stain_reference['method']} "
                "stain reference (config.dlhisto.stain_reference); dlhisto predict maps slides onto it too"]
               if info.stain_reference else []),
             *([f"- objects: seeds of interior probability > {info.instances['interior']:g}, grown by up to "
                f"{info.instances['growth']} px over foreground probability > {info.instances['foreground']:g}; "
                f"tuned on the {info.instances['tuned_on']}: F1 {info.instances['f1']:.3f} at IoU 0.5 "
                f"({info.instances['default_f1']:.3f} with the defaults), panoptic quality "
                f"{info.instances['panoptic_quality']:.3f} ({info.instances['objects']} objects)"]
               if info.instances else []),
             f"- made with dlhisto {__version__}", ""]
    for key, value in info.training.items():
        if not isinstance(value, (list, dict)):
            lines.append(f"- training {key}: {value}")
    return "\n".join(lines) + "\n"


def read_evaluation(table, name: str | None = None) -> tuple[list[str], list[dict]]:
    """Columns and rows of an ``evaluate`` or ``crossval`` table (TSV with a header line)."""
    name = name or Path(table).name
    text = untrusted.read_small_file(table, name, "the evaluation table").decode("utf-8", errors="replace")
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    except csv.Error as exc:
        raise InputError(f"'{name}' is not a readable table ({exc})") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise InputError(f"'{name}' is not an evaluation table: expected a header line and at least one row "
                         "(the table of Evaluate or Cross-validate)")
    columns = rows[0]
    return columns, [dict(zip(columns, row)) for row in rows[1:]]


def headline(columns: list[str], rows: list[dict]) -> str:
    """At most two figures of a table's summary row, e.g. ``'f1 0.624, panoptic_quality 0.455 (all, threshold
    0.5)'``; empty when the table has no summary row or none of :data:`HEADLINE_METRICS`."""
    summary = next((row for row in rows if row.get(columns[0]) in SUMMARY_ROWS), None)
    if summary is None:
        return ""
    figures = []
    for metric in HEADLINE_METRICS:
        try:
            figures.append(f"{metric} {float(summary.get(metric) or 'nan'):.3g}")
        except ValueError:
            continue
        if figures[-1].endswith("nan"):
            figures.pop()
        if len(figures) == 2:
            break
    context = [summary[columns[0]]] + [f"{key} {_label(summary.get(key))}" for key in ("role", "threshold")
                                       if _label(summary.get(key))]
    return f"{', '.join(figures)} ({', '.join(context)})" if figures else ""


def _label(cell) -> str:
    """A table cell shown in a headline: a number, or a word of letters, digits and ``_.-``; anything
    else (a cell with tabs, line breaks or markup) is left out."""
    text = str(cell or "").strip()
    return text if re.fullmatch(r"[A-Za-z0-9_.+-]{1,40}", text) else ""


def evaluation_section(columns: list[str], rows: list[dict], source: str) -> str:
    """The card's evaluation section: the table in Markdown, its headline first."""
    def cell(value) -> str:
        text = " ".join(str(value or "").split()).replace("|", "\\|")
        return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"

    lines = [EVALUATION_HEADING, "", f"From '{cell(source)}' (dlhisto evaluate or crossval)."]
    figures = headline(columns, rows)
    if figures:
        lines.append(f"Summary: {figures}.")
    lines += ["", "| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows[:MAX_EVALUATION_ROWS]]
    if len(rows) > MAX_EVALUATION_ROWS:
        lines += ["", f"({len(rows) - MAX_EVALUATION_ROWS} more rows in the table.)"]
    return "\n".join(lines) + "\n"


def _target_lines(target_normalization: dict | None) -> list[str]:
    if target_normalization is None:
        return []
    if target_normalization["mode"] == "input":
        return ["- targets scaled with the percentiles of their input image: the output is in the normalised "
                "units of the input (dlhisto predict scales it back with the input's percentiles)"]
    return ["- targets scaled with the percentiles of all training targets: the output's scale_linear "
            "postprocessing takes it back to the targets' units"]

