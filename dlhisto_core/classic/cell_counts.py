"""Cells counted per type and region: how many of each type, their fraction, and their density
per mm², in the whole image and in each region (a tissue map, a class map or QuPath annotations).

A cell belongs to the regions that contain its centre. Regions come from:

- QuPath GeoJSON: each classified area (annotations, or the tiles of ``classify``'s tissue map)
  joins its class's region; an unclassified area is a region of its own, named as QuPath names
  it. Lines and points are no region;
- a class map: an image of region numbers (1..K, 0 = none), of the labels' size or coarser
  (a tissue map at another pixel size covers the same area).

One table per run, one row per (region, cell type), ready to be stacked over the images of a
study (``image`` column). Densities need the pixel size; without one they are left empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..base.bounds import bounded, check_bounds
from ..base.errors import InputError
from ..io.slides import image_reader
from .object_classes import ObjectClasses, label_strip, strip_rows

COUNT_COLUMNS = ("image", "region", "cell_type", "count", "fraction", "region_area_mm2", "density_per_mm2")
"""The columns of :func:`count_cells`' table."""
WHOLE_IMAGE, ALL_TYPES, UNCLASSIFIED = "whole image", "all", "unclassified"
REGION_KINDS = ("geojson", "class_map")


@dataclass
class CountOptions:
    """Where the regions are."""

    downsample: float = bounded(1.0, 1e-3, 1e3)
    """GeoJSON regions: slide pixels per label-image pixel (the labels' pixel size / the slide's)."""
    region_names: tuple[str, ...] = ()
    """Class-map regions: the names of regions 1..K (default 'region 1', ...)."""

    def __post_init__(self):
        check_bounds(self)


@dataclass
class Centres:
    """The centre (row, column, label-image pixels) of every object of a label image."""

    labels: np.ndarray
    rows: np.ndarray
    columns: np.ndarray


def object_centres(labels, name: str | None = None) -> tuple[Centres, tuple[int, int], tuple[float, float] | None]:
    """The objects' centres, read strip by strip, and the label image's shape and pixel size."""
    sums = np.zeros((3, 1))
    with image_reader(labels, name) as reader:
        height, width = reader.shape[:2]
        step = strip_rows(width)
        for top in range(0, height, step):
            strip = label_strip(reader, top, min(step, height - top), width)
            if strip.size and strip.max() >= sums.shape[1]:
                sums = np.pad(sums, ((0, 0), (0, int(strip.max()) + 1 - sums.shape[1])))
            rows, columns = np.indices(strip.shape)
            flat, n = strip.ravel(), sums.shape[1]
            sums += [np.bincount(flat, minlength=n), np.bincount(flat, rows.ravel() + top, n),
                     np.bincount(flat, columns.ravel(), n)]
        shape, pixel_size = (height, width), reader.pixel_size
    ids = np.flatnonzero(sums[0])
    ids = ids[ids > 0]
    return Centres(ids, sums[1, ids] / sums[0, ids], sums[2, ids] / sums[0, ids]), shape, pixel_size


def count_cells(labels, object_classes: ObjectClasses | None = None, regions=None, regions_kind: str = "geojson",
                options: CountOptions | None = None, image_name: str = "image", labels_name: str | None = None,
                regions_name: str | None = None) -> list[dict]:
    """Count the objects of ``labels`` per class (``object_classes``; None: only all of them)
    in the whole image and in each region of ``regions`` (a file of ``regions_kind``).

    Examples
    --------
    >>> rows = count_cells("test-data/nuclei_labels.tif")
    >>> [(r["region"], r["cell_type"], r["count"]) for r in rows]
    [('whole image', 'all', 112)]
    """
    options = options or CountOptions()
    centres, shape, pixel_size = object_centres(labels, labels_name)
    pixel_mm2 = pixel_size[0] * pixel_size[1] * 1e-6 if pixel_size else None
    types, type_names = _types_of(centres, object_classes)
    found = [(WHOLE_IMAGE, np.ones(len(centres.labels), bool), float(shape[0] * shape[1]))]
    if regions is not None:
        name = regions_name or (Path(regions).name if isinstance(regions, (str, os.PathLike)) else "regions")
        if regions_kind == "geojson":
            found += _geojson_regions(regions, name, centres, shape, options.downsample)
        elif regions_kind == "class_map":
            found += _class_map_regions(regions, name, centres, shape, options.region_names)
        else:
            raise InputError(f"unknown kind of regions '{regions_kind}'; one of {', '.join(REGION_KINDS)}")
    rows = []
    for region, inside, area_px in found:
        area = area_px * pixel_mm2 if pixel_mm2 else None
        in_region = types[inside]
        for k, cell_type in [(None, ALL_TYPES), *enumerate(type_names, 1)]:
            count = int(in_region.size if k is None else (in_region == k).sum())
            rows.append({"image": image_name, "region": region, "cell_type": cell_type, "count": count,
                         "fraction": count / in_region.size if in_region.size else None,
                         "region_area_mm2": area, "density_per_mm2": count / area if area else None})
    return rows


def _types_of(centres: Centres, object_classes: ObjectClasses | None) -> tuple[np.ndarray, list[str]]:
    """Each object's class number (0: unclassified) and the type names to count."""
    if object_classes is None:  # one type: the 'all' rows say it
        return np.ones(len(centres.labels), np.int64), []
    missing = np.setdiff1d(object_classes.labels, centres.labels)
    if missing.size:
        raise InputError(f"the object classes name {missing.size} object(s) not in the label image, "
                         f"e.g. label {missing[0]}")
    types = np.zeros(len(centres.labels), np.int64)
    types[np.searchsorted(centres.labels, object_classes.labels)] = object_classes.classes
    names = list(object_classes.names)
    if (types == 0).any():
        types[types == 0] = len(names) + 1
        names.append(UNCLASSIFIED)
    return types, names


def _geojson_regions(path, name: str, centres: Centres, shape: tuple[int, int], downsample: float) -> list[tuple]:
    """(name, cells inside, area in label pixels) of the areas of a GeoJSON file."""
    import shapely
    from shapely.geometry import box

    from ..io.geojson import read_annotations

    areas: dict[str, list] = {}
    for annotation in read_annotations(path, name, downsample):
        if annotation.geometry.geom_type in ("Polygon", "MultiPolygon"):
            areas.setdefault(annotation.class_name or annotation.title or annotation.name, []).append(annotation.geometry)
    if not areas:
        raise InputError(f"'{name}' holds no area (polygon) to count cells in")
    image = box(0, 0, shape[1], shape[0])
    regions = []
    for region, geometries in areas.items():
        union = shapely.union_all(geometries).intersection(image)
        inside = shapely.contains_xy(union, centres.columns + 0.5, centres.rows + 0.5) if not union.is_empty \
            else np.zeros(len(centres.labels), bool)
        regions.append((region, inside, float(union.area)))
    if not any(area > 0 for _, _, area in regions):
        raise InputError(f"the regions of '{name}' do not overlap the label image ({shape[1]} x {shape[0]} pixels"
                         + (f", {downsample:g} slide pixels per pixel" if downsample != 1 else "") + ")")
    return regions


def _class_map_regions(path, name: str, centres: Centres, shape: tuple[int, int], region_names: Sequence[str]
                       ) -> list[tuple]:
    """(name, cells inside, area in label pixels) of the regions of a class map, which may be
    coarser than the label image (it is scaled onto it)."""
    with image_reader(path, name) as reader:
        if len(reader.shape) != 2 or reader.dtype.kind not in "biu":
            raise InputError(f"the region map '{reader.name}' must be one channel of whole numbers (0 = no region)")
        height, width = reader.shape
        scale = (height / shape[0], width / shape[1])
        if abs(scale[0] / scale[1] - 1) > 0.02 or scale[0] > 1.02:
            raise InputError(f"the region map '{reader.name}' is {width} x {height} pixels: it must cover the label "
                             f"image ({shape[1]} x {shape[0]}) at its size or coarser, with the same aspect")
        areas = np.zeros(1, np.int64)
        at_centres = np.zeros(len(centres.labels), np.int64)
        map_rows = np.minimum((centres.rows * scale[0]).astype(np.int64), height - 1)
        map_columns = np.minimum((centres.columns * scale[1]).astype(np.int64), width - 1)
        step = strip_rows(width)
        for top in range(0, height, step):
            strip = np.asarray(reader.read_region(top, 0, min(step, height - top), width)).astype(np.int64)
            if strip.size and strip.min() < 0:
                raise InputError(f"the region map '{reader.name}' holds negative numbers")
            counts = np.bincount(strip.ravel())
            if len(counts) > len(areas):
                areas = np.pad(areas, (0, len(counts) - len(areas)))
            areas[:len(counts)] += counts
            here = (map_rows >= top) & (map_rows < top + strip.shape[0])
            at_centres[here] = strip[map_rows[here] - top, map_columns[here]]
    n_regions = len(areas) - 1
    names = list(region_names) or [f"region {k}" for k in range(1, n_regions + 1)]
    if n_regions > len(names):
        raise InputError(f"the region map '{name}' holds region {n_regions}; {len(names)} region names given")
    if not areas[1:].any():
        raise InputError(f"the region map '{name}' holds no region (only 0)")
    pixels_per_map_pixel = 1 / (scale[0] * scale[1])
    return [(names[k - 1], at_centres == k, float(areas[k] * pixels_per_map_pixel))
            for k in range(1, len(names) + 1)]


def write_counts(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    from ..io.tables import write_table

    write_table(path, rows, COUNT_COLUMNS)
