"""Per-sample readouts: the tables the slide steps write for each sample of a study, made into
one row per sample and joined with the study's sample sheet.

A table's rows belong to the sample their ``image`` column names (the steps write the image's
name there: in Galaxy, the element identifier of the collection it comes from), or, without that
column, to the sample the table's name says. Each table is read by what its columns say it is:

- **counts** (``count_cells``: region, cell_type, count, fraction, density_per_mm2): for every
  region and type its count, fraction and density, and each region's area;
- **tiles** (``classify``: x, y, class): the fraction of tissue tiles of each class (background
  tiles left out);
- **objects** (a ``label`` column: the measurements of ``segment_classic``, predict or the
  pixel classifier; ``object_classifier_apply``'s table): the number of objects, the median and
  quartiles of every measurement, and the fraction of each class when the table has one.

Readout names say where they come from, e.g. ``density_per_mm2:tumour:inflammatory``,
``area_um2:median``, ``tile_fraction:stroma``.
"""

from __future__ import annotations

import functools
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..io.tables import read_table

SHEET_SAMPLE = "sample"
"""The sample sheet's column of sample names (they match the tables' names)."""
MAX_SAMPLES = 10_000
"""Most samples of one study."""
NOT_MEASUREMENTS = frozenset({"label", "centroid_y", "centroid_x", "x", "y", "width", "height"})
"""Object table columns that say which object, or where, rather than what it is like."""
BACKGROUND = "background"
"""The tile class left out of tissue fractions (classify --skip-background)."""


def read_sample_sheet(path: str | os.PathLike, name: str | None = None,
                      group_column: str = "group") -> tuple[list[str], list[dict]]:
    """The sheet's columns and rows (one per sample; ``sample`` and ``group_column`` required,
    sample names unique)."""
    name = name or Path(path).name
    columns, rows = _read(path, name)
    for required in (SHEET_SAMPLE, group_column):
        if required not in columns:
            raise InputError(f"the sample sheet '{name}' has no '{required}' column (it has: {', '.join(columns)})")
    if len(rows) > MAX_SAMPLES:
        raise InputError(f"the sample sheet '{name}' lists {len(rows):,} samples; at most {MAX_SAMPLES:,}")
    seen: set[str] = set()
    for row in rows:
        sample = row[SHEET_SAMPLE].strip()
        if not sample or not row[group_column].strip():
            raise InputError(f"the sample sheet '{name}' has a row without a sample or a {group_column}")
        if sample in seen:
            raise InputError(f"the sample sheet '{name}' lists the sample '{sample}' twice")
        seen.add(sample)
    return columns, rows


@dataclass
class Readouts:
    """One row per sample: the sample sheet's columns, then the readouts (None where a sample lacks one)."""

    sheet_columns: list[str]
    features: list[str]
    rows: list[dict]

    @property
    def columns(self) -> list[str]:
        return [*self.sheet_columns, *self.features]

    def matrix(self) -> np.ndarray:
        """The readouts as a (samples, features) float array, NaN where missing."""
        return np.array([[math.nan if row[f] is None else row[f] for f in self.features] for row in self.rows], float)


def sample_readouts(tables: list[tuple[str | os.PathLike, str]], sheet: str | os.PathLike,
                    sheet_name: str | None = None, group_column: str = "group") -> Readouts:
    """One row per sample of the sheet: its columns, then every readout of the sample's tables.

    ``tables`` are (path, name) pairs; a sample may have rows in several tables (counts, tiles,
    objects), each read by its kind. A sample not in the sheet, and a sample of the sheet
    without any row, are refused."""
    sheet_columns, sheet_rows = read_sample_sheet(sheet, sheet_name, group_column)
    known = {row[SHEET_SAMPLE].strip(): row for row in sheet_rows}
    readouts: dict[str, dict[str, float]] = defaultdict(dict)
    for path, name in tables:
        for sample, values in table_readouts(path, name).items():
            if sample not in known:
                raise InputError(f"'{name}' holds the sample '{sample}', which the sample sheet "
                                 f"'{sheet_name or Path(sheet).name}' does not list (it lists: "
                                 f"{', '.join(list(known)[:10])}{', ...' if len(known) > 10 else ''})")
            readouts[sample].update(values)
    missing = [sample for sample in known if sample not in readouts]
    if missing:
        raise InputError(f"no table was given for the samples {', '.join(missing[:10])} of the sample sheet")
    features = sorted({feature for values in readouts.values() for feature in values})
    rows = [{**{c: known[s][c] for c in sheet_columns}, **{f: _value(readouts[s], f) for f in features}}
            for s in known]
    return Readouts(sheet_columns, features, rows)


ZERO_WHEN_ABSENT = {"tile_fraction:": "tissue_tiles", "class_fraction:": "objects", "count:": "count:whole image:all",
                    "area_mm2:": "count:whole image:all"}
"""Readouts that are 0, not unknown, when a sample's table of their kind has none (a class with no
tile, a region the sample lacks): the readout that shows the sample has such a table."""


def _value(readouts: dict[str, float], feature: str) -> float | None:
    """A sample's readout; 0 where its table shows there is none of it, None where it has no such table."""
    if feature in readouts:
        return readouts[feature]
    for prefix, witness in ZERO_WHEN_ABSENT.items():
        if feature.startswith(prefix) and witness in readouts:
            return 0.0
    return None


def sample_name(name: str) -> str:
    """A sample's name: an image's or a table's name without its extension (Galaxy's element
    identifiers have none)."""
    for extension in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".ndpi", ".png", ".jpg", ".tsv", ".tabular",
                      ".txt", ".csv"):
        if name.lower().endswith(extension):
            return name[:-len(extension)]
    return name


def table_readouts(path: str | os.PathLike, name: str) -> dict[str, dict[str, float]]:
    """The readouts of one table by sample, by its kind (counts, tiles or objects)."""
    columns, rows = _read(path, name)
    if {"region", "cell_type", "count", "density_per_mm2"} <= set(columns):
        readout = _count_readouts
    elif {"x", "y", "class"} <= set(columns) and "label" not in columns:
        readout = _tile_readouts
    elif "label" in columns:
        readout = functools.partial(_object_readouts, columns)
    else:
        raise InputError(f"'{name}' is not a table of count_cells, classify or object measurements (its columns: "
                         f"{', '.join(columns[:12])})")
    by_sample: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_sample[sample_name(row["image"]) if "image" in columns else sample_name(name)].append(row)
    return {sample: readout(sample_rows) for sample, sample_rows in by_sample.items()}


def _read(path: str | os.PathLike, name: str) -> tuple[list[str], list[dict]]:
    rows = read_table(path, name, ())
    if not rows:
        raise InputError(f"'{name}' has no rows")
    return list(rows[0]), rows


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _count_readouts(rows: list[dict]) -> dict[str, float]:
    found = {}
    for row in rows:
        where = f"{row['region']}:{row['cell_type']}"
        found[f"count:{where}"] = _number(row["count"])
        found[f"density_per_mm2:{where}"] = _number(row["density_per_mm2"])
        if row["cell_type"] != "all":
            found[f"fraction:{where}"] = _number(row.get("fraction"))
        if "region_area_mm2" in row:
            found[f"area_mm2:{row['region']}"] = _number(row["region_area_mm2"])
    return found


def _tile_readouts(rows: list[dict]) -> dict[str, float]:
    classes = [row["class"] for row in rows if row["class"] != BACKGROUND]
    found = {"tissue_tiles": float(len(classes))}
    for name in sorted(set(classes)):
        found[f"tile_fraction:{name}"] = classes.count(name) / len(classes)
    return found


def _object_readouts(columns: list[str], rows: list[dict]) -> dict[str, float]:
    found = {"objects": float(len(rows))}
    for column in columns:
        if column in NOT_MEASUREMENTS or column.startswith("p_") or column in ("image", "class"):
            continue
        values = np.array([_number(row[column]) for row in rows], float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        low, median, high = np.percentile(values, [25, 50, 75])
        found.update({f"{column}:median": float(median), f"{column}:q25": float(low), f"{column}:q75": float(high)})
    if "class" in columns and rows:
        classes = [row["class"] for row in rows]
        for class_name in sorted(set(classes)):
            found[f"class_fraction:{class_name}"] = classes.count(class_name) / len(classes)
    return found
