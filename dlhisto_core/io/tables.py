"""Tab-separated tables: written by every step (measurements, scores), read by some (classes of
images or tiles, classify results)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from . import untrusted
from ..base.errors import InputError
from .outputs import atomic_output


def read_tile_classes(path: str | os.PathLike, name: str | None = None) -> dict[str, str]:
    """A table of image name -> class (tab-separated, first two columns; a header line
    'image<TAB>class' or lines starting with '#' are skipped)."""
    name = name or Path(path).name
    classes: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"'{name}' is not a text table of image names and classes") from exc
    for number, line in enumerate(lines, 1):
        fields = [f.strip() for f in line.split("\t")]
        if not line.strip() or line.startswith("#") or (number == 1 and fields[1:2] and fields[1].lower() == "class"):
            continue
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise InputError(f"line {number} of '{name}' needs an image name and a class, separated by a tab")
        if classes.get(fields[0], fields[1]) != fields[1]:
            raise InputError(f"'{name}' gives image '{fields[0]}' two classes: {classes[fields[0]]} and {fields[1]}")
        classes[fields[0]] = fields[1]
    if not classes:
        raise InputError(f"'{name}' lists no image with a class")
    untrusted.check_class_count(len(set(classes.values())), f"'{name}'")
    return classes


REGION_COLUMNS = ("image", "x", "y", "width", "height", "class")
"""A table of classed regions (tiles) of images: the columns ``classify`` writes first."""


def read_class_regions(path: str | os.PathLike, name: str | None = None
                       ) -> list[tuple[str, str, tuple[int, int, int, int] | None]]:
    """The classes of a training table as (image name, class, region): a table with a header
    line holding x and y gives regions (y, x, height, width) of its images, one class each (as
    ``classify`` writes them, or tiles annotated on a slide); otherwise it is a table of image
    name -> class (:func:`read_tile_classes`) and the region is the whole image (None)."""
    name = name or Path(path).name
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if not {"x", "y"} <= set(header):
        return [(image, cls, None) for image, cls in read_tile_classes(path, name).items()]
    regions = []
    for number, row in enumerate(read_table(path, name, REGION_COLUMNS), 2):
        try:
            box = tuple(int(row[c]) for c in ("y", "x", "height", "width"))
        except (TypeError, ValueError):
            raise InputError(f"line {number} of '{name}' needs whole numbers in x, y, width and height") from None
        if box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1 or not row["image"] or not row["class"]:
            raise InputError(f"line {number} of '{name}' needs an image, a class and a region inside the image")
        regions.append((row["image"], row["class"], box))
    if not regions:
        raise InputError(f"'{name}' lists no region with a class")
    untrusted.check_class_count(len({cls for _, cls, _ in regions}), f"'{name}'")
    return regions


def read_table(path: str | os.PathLike, name: str, required: Sequence[str]) -> list[dict]:
    """Rows of a table with a header line holding at least the ``required`` columns."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except csv.Error as exc:
        raise InputError(f"'{name}' is not a readable table ({exc})") from None
    missing = [c for c in required if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"'{name}' needs a header line with the column(s) {', '.join(missing)}" if rows
                         else f"'{name}' is empty: expected a table with a header line")
    return rows


def write_table(path: str | os.PathLike, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write rows as TSV with a header line; floats with 6 significant digits."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_value(row.get(c, "")) for c in columns])


def write_row(path: str | os.PathLike, row: dict) -> None:
    """A one-row table (a summary), its columns in the row's order."""
    write_table(path, [row], list(row))


def format_value(value) -> str:
    """A table cell: floats with 6 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)
