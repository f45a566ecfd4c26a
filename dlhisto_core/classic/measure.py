"""Per-object measurements of a label image, written as a tab-separated table.

Columns follow scikit-image's ``regionprops`` names. Lengths and areas are in pixels; when the
pixel size is known, ``area_um2`` and ``equivalent_diameter_um`` give them in micrometres.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from skimage import measure

from ..io.writers import write_labels
from ..io.tables import write_row, write_table


REGIONPROPS_COLUMNS = {
    "label": "label", "area": "area", "centroid-0": "centroid_y", "centroid-1": "centroid_x",
    "intensity_mean": "mean_intensity", "intensity_min": "min_intensity",
    "intensity_max": "max_intensity", "eccentricity": "eccentricity", "solidity": "solidity",
    "perimeter": "perimeter", "equivalent_diameter_area": "equivalent_diameter",
    "axis_major_length": "major_axis_length", "axis_minor_length": "minor_axis_length",
    "orientation": "orientation",
}
"""scikit-image regionprops_table key -> our column name."""

_PROPERTIES = ("label", "area", "centroid", "intensity_mean", "intensity_min", "intensity_max",
               "eccentricity", "solidity", "perimeter", "equivalent_diameter_area",
               "axis_major_length", "axis_minor_length", "orientation")


def measurement_columns(pixel_size: tuple[float, float] | None) -> list[str]:
    """Column names of :func:`measure_objects`' rows (the table header, even with no objects)."""
    columns = list(REGIONPROPS_COLUMNS.values())
    return columns + ["area_um2", "equivalent_diameter_um"] if pixel_size is not None else columns


def measure_objects(labels: np.ndarray, intensity: np.ndarray,
                    pixel_size: tuple[float, float] | None = None) -> list[dict]:
    """One row per object: shape descriptors and the intensity statistics of ``intensity``."""
    table = measure.regionprops_table(labels, intensity_image=intensity, properties=_PROPERTIES)
    rows = []
    for i in range(len(table["label"])):
        row = {column: table[key][i].item() for key, column in REGIONPROPS_COLUMNS.items()}
        row["area"] = int(row["area"])
        if pixel_size is not None:
            pixel_area = pixel_size[0] * pixel_size[1]
            row["area_um2"] = row["area"] * pixel_area
            row["equivalent_diameter_um"] = row["equivalent_diameter"] * float(np.sqrt(pixel_area))
        rows.append(row)
    return rows


def summarize_objects(rows: Sequence[dict], image_name: str, n_pixels: int, **extra) -> dict:
    """Whole-image summary: object count, mean and median area, covered fraction."""
    areas = np.array([r["area"] for r in rows], dtype=float)
    summary = {
        "image": image_name,
        "n_objects": len(rows),
        "mean_area": float(areas.mean()) if len(areas) else 0.0,
        "median_area": float(np.median(areas)) if len(areas) else 0.0,
        "area_fraction": float(areas.sum() / n_pixels),
    }
    summary.update(extra)
    return summary


def write_objects(labels_path: str | os.PathLike, measurements_path: str | os.PathLike,
                  summary_path: str | os.PathLike, labels: np.ndarray, intensity: np.ndarray,
                  pixel_size: tuple[float, float] | None, image_name: str, **summary_extra) -> dict:
    """Write a label image, its measurement table and its one-row summary (the three object
    outputs of segment_classic); return the summary."""
    write_labels(labels_path, labels, pixel_size)
    return write_object_tables(measurements_path, summary_path, measure_objects(labels, intensity, pixel_size),
                               pixel_size, image_name, labels.size, **summary_extra)


def write_object_tables(measurements_path: str | os.PathLike, summary_path: str | os.PathLike, rows: Sequence[dict],
                        pixel_size: tuple[float, float] | None, image_name: str, n_pixels: int,
                        **summary_extra) -> dict:
    """Write the measurement table of objects and its one-row summary; return the summary."""
    summary = summarize_objects(rows, image_name, n_pixels, **summary_extra)
    write_table(measurements_path, rows, measurement_columns(pixel_size))
    write_row(summary_path, summary)
    return summary
