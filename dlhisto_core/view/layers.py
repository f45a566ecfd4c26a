"""Overlays of the viewer, made as tiles: objects and regions from QuPath GeoJSON, heatmaps from
probability or class maps; and the objects' outlines and measurements that a click looks up.

Every overlay is an RGBA Deep Zoom pyramid (:mod:`tiles`) drawn strip by strip: objects are
outlined and regions filled in their classes' colours (the file's QuPath colours, else dlhisto's
palette), probabilities shaded by a colour map whose opacity is the probability, class maps
coloured by class. A heatmap keeps its own pixel grid (e.g. predict's outputs at the model's
pixel size) and is placed on the slide by the ratio of the pixel sizes.

For clicks, a vector layer is cut into square cells of the slide (:attr:`ViewOptions.cell_size`):
each cell's features (class, bounding box, outline, measurements) go into a small script file
that the page loads when a click falls into the cell, so that a slide of a million nuclei never
loads whole.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.bounds import bounded, check_bounds
from ..base.errors import InputError
from ..io.geojson import Annotation, class_colour, read_annotations
from ..io.slides import image_reader
from .tiles import Pyramid, write_pyramid

UNCLASSIFIED_COLOUR = (255, 220, 0)
"""Objects without a class: yellow, which stands out on hematoxylin and eosin."""
MAX_HEATMAP_CHANNELS = 16
"""Most channels of a probability map shown as layers."""
LARGE_FEATURE_CELLS = 64
"""Cells a feature may span and still be looked up by cell (larger: in the 'large' script)."""
MAX_LARGE_FEATURES = 20_000
"""Most features larger than that in one layer (each click loads them all)."""
MAX_CLICK_OUTLINE_POINTS = 400
"""Outline points kept per object for clicks (longer outlines are thinned evenly)."""


@dataclass
class ViewOptions:
    """How the overlays look, and how finely a click's lookup is cut."""

    outline_width: int = bounded(2, 1, 16)
    """Width of the objects' outlines, in slide pixels at full resolution."""
    region_fill: float = bounded(0.2, 0.0, 1.0)
    """Opacity of the regions' fill (their one-pixel outlines: twice that, and a little more)."""
    heatmap_opacity: float = bounded(0.5, 0.0, 1.0)
    """Opacity of heatmap layers when the page opens (a slider changes it)."""
    cell_size: int = bounded(1024, 128, 16384)
    """Side of the cells the click lookup is cut into, in slide pixels."""

    def __post_init__(self):
        check_bounds(self)


@dataclass
class Layer:
    """One overlay as the page shows it."""

    name: str
    kind: str
    """'objects', 'regions' or 'heatmap'."""
    pyramid: Pyramid
    scale: float = 1.0
    """Slide pixels per pixel of the layer's pyramid."""
    opacity: float = 1.0
    shown: bool = True
    """Whether the page opens with the layer switched on."""
    legend: list[dict] = field(default_factory=list)
    """[{"name", "colour": [r, g, b], "count"}]"""
    lookup: dict | None = None
    """For vector layers, the click lookup: {"key", "folder", "cell", "cells", "columns", "classes"}."""

    def manifest(self) -> dict:
        return {"name": self.name, "kind": self.kind, **self.pyramid.manifest(), "scale": self.scale,
                "opacity": self.opacity, "shown": self.shown, "legend": self.legend, **({"lookup": self.lookup} if self.lookup else {})}


# --- vector layers --------------------------------------------------------------------------------------

def vector_layer(geojson: str | Path, kind: str, name: str, slide_shape: tuple[int, int], folder: Path, key: str,
                 options: ViewOptions, threads: int = 1) -> Layer:
    """Objects (outlined) or regions (filled) of a QuPath GeoJSON file over a slide of
    ``slide_shape`` (its full-resolution pixels, the GeoJSON's coordinates), as tiles and a
    click lookup written under ``folder`` with names starting ``key``."""
    from PIL import Image, ImageDraw

    features = [a for a in read_annotations(geojson, name) if a.geometry.geom_type in ("Polygon", "MultiPolygon")]
    classes = sorted({a.class_name for a in features if a.class_name})
    colours = _class_colours(features, classes)
    bounds = np.array([a.geometry.bounds for a in features]).reshape(-1, 4)
    height, width = slide_shape
    fill_alpha = round(255 * options.region_fill)

    def read_strip(top: int, rows: int) -> np.ndarray:
        picture = Image.new("RGBA", (width, rows))
        pen = ImageDraw.Draw(picture)
        for k in np.nonzero((bounds[:, 3] >= top) & (bounds[:, 1] < top + rows))[0]:
            colour = colours[features[k].class_name]
            for polygon in getattr(features[k].geometry, "geoms", [features[k].geometry]):
                ring = [(x, y - top) for x, y in polygon.exterior.coords]
                if kind == "regions":  # outlined faintly: a tissue map's tiles would draw a grid over the cells
                    pen.polygon(ring, fill=(*colour, fill_alpha))
                    for hole in polygon.interiors:
                        pen.polygon([(x, y - top) for x, y in hole.coords], fill=(0, 0, 0, 0))
                    pen.line(ring, fill=(*colour, min(2 * fill_alpha + 40, 255)), width=1)
                else:
                    pen.line(ring, fill=(*colour, 255), width=options.outline_width, joint="curve")
        return np.asarray(picture)

    pyramid = write_pyramid(read_strip, width, height, folder, key, "png", threads)
    counts = {c: 0 for c in [None, *classes]}
    for feature in features:
        counts[feature.class_name] += 1
    legend = [{"name": c or "unclassified", "colour": list(colours[c]), "count": n} for c, n in counts.items() if n]
    lookup = _write_lookup(features, classes, bounds, folder / f"{key}_cells", key, options.cell_size, slide_shape)
    return Layer(name, kind, pyramid, legend=legend, lookup={"key": key, "folder": f"{key}_cells", **lookup})


def _class_colours(features: list[Annotation], classes: list[str]) -> dict:
    """Each class's colour: the one the file gives it, else dlhisto's palette by its place."""
    given: dict = {}
    for feature in features:
        if feature.class_name and feature.colour and feature.class_name not in given:
            given[feature.class_name] = tuple(feature.colour)
    return {None: UNCLASSIFIED_COLOUR, **{name: given.get(name, tuple(class_colour(k))) for k, name in enumerate(classes)}}


def _write_lookup(features: list[Annotation], classes: list[str], bounds: np.ndarray, folder: Path, key: str,
                  cell: int, slide_shape: tuple[int, int]) -> dict:
    """Each cell's features as a script calling ``dlhistoCell(key, cell, rows)``; features that
    span more than :data:`LARGE_FEATURE_CELLS` cells (a tissue outline) go into one script,
    'large', that every click loads. The cells written, the measurement columns, the classes."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = sorted({name for a in features for name in a.measurements})
    class_index = {name: k for k, name in enumerate(classes)}
    last_column, last_row = (slide_shape[1] - 1) // cell, (slide_shape[0] - 1) // cell
    cells: dict[str, list[int]] = {}
    for k, (x0, y0, x1, y1) in enumerate(bounds):
        columns_of = range(max(int(x0 // cell), 0), min(int(x1 // cell), last_column) + 1)
        rows_of = range(max(int(y0 // cell), 0), min(int(y1 // cell), last_row) + 1)
        if len(columns_of) * len(rows_of) > LARGE_FEATURE_CELLS:
            cells.setdefault("large", []).append(k)
            continue
        for cx in columns_of:
            for cy in rows_of:
                cells.setdefault(f"{cx}_{cy}", []).append(k)
    if len(cells.get("large", [])) > MAX_LARGE_FEATURES:
        raise InputError(f"{len(cells['large']):,} features each span more than {LARGE_FEATURE_CELLS} cells of "
                         f"{cell} px; at most {MAX_LARGE_FEATURES:,} so large are shown")
    for name, members in cells.items():
        rows = [_lookup_row(k, features[k], class_index, bounds[k], columns) for k in members]
        text = json.dumps(rows, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
        (folder / f"{name}.js").write_text(f"dlhistoCell({json.dumps(key)},{json.dumps(name)},{text});\n")
    return {"cell": cell, "cells": sorted(cells), "columns": columns, "classes": classes}


def _lookup_row(number: int, feature: Annotation, class_index: dict, bounds: np.ndarray, columns: list[str]) -> list:
    """[number, class index (-1: none), [x0, y0, x1, y1], outlines, measurements in column order]."""
    outlines = []
    for polygon in getattr(feature.geometry, "geoms", [feature.geometry]):
        ring = np.asarray(polygon.exterior.coords)
        step = math.ceil(len(ring) / MAX_CLICK_OUTLINE_POINTS)
        outlines.append(np.round(ring[::step], 1).ravel().tolist())
    values = [feature.measurements.get(c) for c in columns]
    return [number, class_index.get(feature.class_name, -1), np.round(bounds, 1).tolist(), outlines,
            [None if v is None else float(f"{v:.6g}") for v in values]]


# --- heatmaps -------------------------------------------------------------------------------------------

def heatmap_layers(path: str | Path, name: str, slide_pixel_size: float | None, slide_shape: tuple[int, int],
                   folder: Path, key: str, options: ViewOptions, threads: int = 1) -> list[Layer]:
    """A probability map (one layer per channel, shaded) or a class map (one layer, coloured by
    class; 0 is none), at its own pixel grid, placed over the slide."""
    with image_reader(path, name) as reader:
        height, width = reader.shape[:2]
        channels = reader.shape[2] if len(reader.shape) == 3 else 1
        scale = _heatmap_scale(reader, name, slide_pixel_size, slide_shape)
        integer = np.issubdtype(reader.dtype, np.integer)
        is_class_map = channels == 1 and integer and (reader.dtype != np.uint8 or _few_values(reader))
        if channels > MAX_HEATMAP_CHANNELS:
            raise InputError(f"'{name}' has {channels} channels; a heatmap shows at most {MAX_HEATMAP_CHANNELS}")
        if is_class_map:
            present: set[int] = set()

            def class_strip(top: int, rows: int) -> np.ndarray:
                values = np.asarray(reader.read_region(top, 0, rows, width)).astype(np.int64)
                present.update(np.unique(values).tolist())
                return _PALETTE_RGBA[_palette_index(values)]

            pyramid = write_pyramid(class_strip, width, height, folder, key, "png", threads)
            legend = [{"name": f"class {k}", "colour": _PALETTE_RGBA[_palette_index(k)][:3].tolist(), "count": None}
                      for k in sorted(present) if k > 0]
            return [Layer(f"{name}: classes", "heatmap", pyramid, scale, options.heatmap_opacity, legend)]
        top_value = 255.0 if reader.dtype == np.uint8 else 1.0
        layers = []
        for channel in range(channels):
            def probability_strip(top: int, rows: int, channel=channel) -> np.ndarray:
                region = np.asarray(reader.read_region(top, 0, rows, width), np.float32)
                values = region[..., channel] if region.ndim == 3 else region
                shade = np.clip(np.nan_to_num(values / top_value), 0, 1)
                return _shaded(shade)

            pyramid = write_pyramid(probability_strip, width, height, folder, f"{key}_{channel}", "png", threads)
            label = f"{name}: channel {channel + 1}" if channels > 1 else name
            layers.append(Layer(label, "heatmap", pyramid, scale, options.heatmap_opacity))
        return layers


def _few_values(reader) -> bool:
    """Whether a uint8 single-channel map looks like classes (at most 32 values on its overview)."""
    overview, _ = reader.overview()
    return len(np.unique(overview)) <= 32


def _heatmap_scale(reader, name: str, slide_pixel_size: float | None, slide_shape: tuple[int, int]) -> float:
    """Slide pixels per heatmap pixel: by the pixel sizes when both are known, else by the sizes."""
    if slide_pixel_size and reader.pixel_size:
        return reader.pixel_size[1] / slide_pixel_size
    scale = slide_shape[1] / reader.shape[1]
    if abs(slide_shape[0] / reader.shape[0] - scale) > 0.02 * scale + 1 / reader.shape[0]:
        raise InputError(f"'{name}' records no pixel size and its shape {reader.shape[:2]} is not a scaled copy of the "
                         f"slide's {slide_shape}: cannot place it on the slide")
    return scale


@functools.lru_cache(maxsize=1)
def _colour_map() -> np.ndarray:
    """Matplotlib's 'inferno', 256 entries of RGB uint8."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


_PALETTE_RGBA = np.array([(0, 0, 0, 0)] + [(*class_colour(k), 255) for k in range(8)], np.uint8)
"""Class k >= 1 of a class map: dlhisto's palette, opaque; 0: transparent."""


def _palette_index(classes):
    """The row of :data:`_PALETTE_RGBA` of each class (0 stays 0; the palette repeats)."""
    return np.where(classes > 0, (classes - 1) % (len(_PALETTE_RGBA) - 1) + 1, 0)


def _shaded(values: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as RGBA: inferno's colour, the probability as opacity."""
    index = np.rint(values * 255).astype(np.uint8)
    return np.concatenate([_colour_map()[index], index[..., None]], axis=-1)
