"""QuPath GeoJSON: objects out as a FeatureCollection, annotations in as label images or class maps.

The layout is QuPath's own (``PathObjectTypeAdapters`` of QuPath 0.4 and later): each object is a
``Feature`` with a ``geometry`` (Polygon or MultiPolygon, holes as inner rings) and
``properties`` holding ``objectType`` ("detection" or "annotation"), an optional
``classification`` (``{"name": ..., "color": [r, g, b]}``) and numeric ``measurements``.
Coordinates are in pixels of the full-resolution slide, origin at the top-left corner of the top-left
pixel, so that pixel (row r, column c) covers [c, c + 1] x [r, r + 1].

Outlines follow the pixel edges: rasterising them again (a pixel belongs to a polygon when its
centre is inside) gives back exactly the pixels of each object. Export reads the label image in
strips and writes each feature as soon as its object is complete, so that a slide with a million
nuclei needs the memory of one strip. Import checks every polygon (``shapely``) and rasterises
strip by strip into a tiled image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np
from scipy import ndimage
from skimage import draw

from . import untrusted
from ..base.errors import InputError, one_line
from .images import smallest_label_dtype
from .writers import write_tiled_image
from ..base.bounds import bounded, check_bounds, check_choices, choice
from .outputs import atomic_output
from .tiling import tile_grid
from .rings import ring_pixels

OBJECT_TYPES = ("detection", "annotation")
IMPORT_MODES = ("labels", "classes")
MAX_LABEL = 2**26
"""Largest label exported: per-label bookkeeping grows with the largest label, not the object count."""
MAX_GEOJSON_BYTES = 2**30
"""Largest GeoJSON file imported (1 GiB: about two million nuclei outlines)."""
MAX_COORDINATE = 1e9
"""Largest coordinate accepted, in slide pixels (a 40x slide is about 10^5 pixels wide)."""
MAX_FEATURES = 2_000_000
"""Most features of one file (each checked feature keeps about 400 bytes: two million, 0.8 GB)."""
MAX_FEATURE_VERTICES = 250_000
"""Most vertices of one feature (QuPath's tissue outlines have thousands)."""
MAX_VERTICES = 50_000_000
"""Most vertices of one file (a million nuclei outlines of 50 vertices)."""
MAX_MEASUREMENTS = 200
"""Most measurements kept of one feature (QuPath's cell detections have about 50)."""
_PALETTE = ((200, 0, 0), (0, 150, 0), (0, 0, 180), (220, 160, 0), (150, 0, 150), (0, 160, 160),
            (120, 80, 40), (255, 110, 180))


def class_colour(index: int) -> list[int]:
    """The colour of the ``index``-th class (0-based), the same in every export."""
    return list(_PALETTE[index % len(_PALETTE)])


# --- outlines -------------------------------------------------------------------------------------------

def mask_polygons(mask: np.ndarray) -> list[list[np.ndarray]]:
    """Outline a binary mask along the pixel edges: a list of polygons, each a list of rings
    (shell first, then holes), each ring an (N, 2) array of (x, y) corners, closed (first = last).

    Shells turn counter-clockwise in (x, y) numbers (positive area, GeoJSON's right-hand rule),
    holes clockwise. Pixels that touch only at a corner are outlined as separate polygons.

    Examples
    --------
    >>> square = np.zeros((4, 4), bool); square[1:3, 1:3] = True
    >>> mask_polygons(square)[0][0].tolist()
    [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]
    """
    rings, touching = _trace_rings(mask)
    shells = [r for r in rings if _area(r) > 0]
    holes = [r for r in rings if _area(r) < 0]
    polygons = [[shell] for shell in shells]
    if holes and len(shells) == 1:
        polygons[0].extend(holes)
    elif holes:
        import shapely

        candidates = [shapely.Polygon(s) for s in shells]
        areas = [c.area for c in candidates]
        for hole in holes:
            inside = shapely.Polygon(hole).representative_point()
            owners = [k for k, c in enumerate(candidates) if c.contains(inside)]
            polygons[min(owners, key=areas.__getitem__)].append(hole)
    return _made_valid(polygons) if touching else polygons


def _made_valid(polygons: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Polygons whose rings pass twice through a corner (pixels of the object, or of a hole,
    touching there) rewritten by shapely as valid ones: rings that touch at that corner."""
    import shapely

    geometry = shapely.MultiPolygon([(p[0], p[1:]) for p in polygons])
    if geometry.is_valid:
        return polygons
    fixed = shapely.make_valid(geometry)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type == "Polygon"] \
        + [p for g in getattr(fixed, "geoms", []) if g.geom_type == "MultiPolygon" for p in g.geoms]
    oriented = [shapely.geometry.polygon.orient(part, sign=1.0) for part in parts]  # shells counter-clockwise
    return [[np.rint(np.asarray(ring.coords)).astype(np.int64) for ring in (part.exterior, *part.interiors)]
            for part in oriented] if parts else polygons


def _trace_rings(mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """The closed rings of pixel edges between ``mask`` and its background, corners only, and
    whether pixels touch only at a corner somewhere.

    Every boundary edge of a pixel is directed so that the pixel lies on its left in (x, y)
    numbers; each edge's successor is the edge leaving its end corner. Where two pixels touch
    only at a corner, two edges leave it: the successor is the one that turns left, around the
    same pixel, so that such pixels are outlined apart.
    """
    padded = np.pad(np.asarray(mask, bool), 1)
    inside = padded[1:-1, 1:-1]
    starts, directions = [], []
    for outside, offset, step in ((padded[:-2, 1:-1], (0, 0), (1, 0)),   # top edges, going +x
                                  (padded[1:-1, 2:], (1, 0), (0, 1)),    # right edges, going +y
                                  (padded[2:, 1:-1], (1, 1), (-1, 0)),   # bottom edges, going -x
                                  (padded[1:-1, :-2], (0, 1), (0, -1))):  # left edges, going -y
        rows, cols = np.nonzero(inside & ~outside)
        starts.append(np.stack([cols + offset[0], rows + offset[1]], 1))
        directions.append(np.broadcast_to(np.array(step), (len(rows), 2)))
    start, direction = np.concatenate(starts), np.concatenate(directions)
    end = start + direction
    stride = mask.shape[1] + 2
    start_id, end_id = start[:, 1] * stride + start[:, 0], end[:, 1] * stride + end[:, 0]
    order = np.argsort(start_id, kind="stable")
    sorted_ids = start_id[order]
    first = np.searchsorted(sorted_ids, end_id)
    successor = order[first]
    corner = np.nonzero(np.searchsorted(sorted_ids, end_id, side="right") - first == 2)[0]
    if len(corner):  # two pixels touching at a corner: take the left turn
        other = order[first[corner] + 1]
        turn = direction[corner, 0] * direction[successor[corner], 1] \
            - direction[corner, 1] * direction[successor[corner], 0]
        successor[corner] = np.where(turn > 0, successor[corner], other)
    predecessor = np.empty_like(successor)
    predecessor[successor] = np.arange(len(successor))
    is_corner = np.any(direction != direction[predecessor], axis=1).tolist()
    follow, visited, rings = successor.tolist(), [False] * len(successor), []
    points = start.tolist()
    for begin in range(len(follow)):
        if visited[begin] or not is_corner[begin]:
            continue
        ring, edge = [], begin
        while not visited[edge]:
            visited[edge] = True
            if is_corner[edge]:
                ring.append(points[edge])
            edge = follow[edge]
        ring.append(ring[0])
        rings.append(np.array(ring, dtype=np.int64))
    return rings, len(corner) > 0


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2


# --- export ---------------------------------------------------------------------------------------------

@dataclass
class ExportOptions:
    """How objects are written as QuPath GeoJSON."""

    object_type: str = choice("detection", OBJECT_TYPES)
    """QuPath's kind of object: detections (many, measured) or annotations (editable regions)."""
    class_name: str | None = None
    """The classification of every object (``None``: unclassified)."""
    class_index: int = bounded(0, 0, 255)
    """Picks the class's colour (:func:`class_colour`)."""
    downsample: float = bounded(1.0, 1e-3, 1e3)
    """Slide pixels per label-image pixel: the label image's pixel size / the slide's."""
    strip_height: int = bounded(1024, 1, 2**20)
    """Rows of the label image read at a time (memory: one strip of the image's width)."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)


def features_of_labels(labels, options: ExportOptions | None = None, intensity=None,
                       pixel_size: tuple[float, float] | None = None) -> Iterator[dict]:
    """The objects of a label image as QuPath GeoJSON features, one per label, in slide coordinates.

    ``labels`` (and ``intensity``, whose statistics join the measurements) are arrays, paths or
    readers (:func:`slides.image_reader`), read strip by strip: an object is written when the
    strip below it holds none of it. Measurements use the names of the measurement tables, with
    ``area_um2`` when the pixel size of the label image is known (``pixel_size``, (y, x) µm, or
    the one the file records).

    Examples
    --------
    >>> labels = np.zeros((6, 8), np.uint16); labels[1:3, 1:4] = 7; labels[4:6, 5:8] = 9
    >>> [(f["geometry"]["coordinates"], f["properties"]["measurements"]["area"])
    ...  for f in features_of_labels(labels)]
    [([[[1, 1], [4, 1], [4, 3], [1, 3], [1, 1]]], 6), ([[[5, 4], [8, 4], [8, 6], [5, 6], [5, 4]]], 6)]
    """
    from .slides import image_reader

    options = options or ExportOptions()
    with image_reader(labels) as label_reader:
        pixel_size = pixel_size or label_reader.pixel_size
        if intensity is None:
            yield from _features_by_strips(label_reader, None, options, pixel_size)
        else:
            with image_reader(intensity) as intensity_reader:
                if intensity_reader.shape[:2] != label_reader.shape[:2]:
                    raise InputError(f"the intensity image is {intensity_reader.shape[:2]} pixels, "
                                     f"the labels {label_reader.shape[:2]}")
                yield from _features_by_strips(label_reader, intensity_reader, options, pixel_size)


def _features_by_strips(labels, intensity, options: ExportOptions, pixel_size) -> Iterator[dict]:
    height, width = labels.shape[:2]
    written = np.zeros(1024, bool)
    top, rows = 0, options.strip_height
    while top < height:
        bottom = min(top + rows, height)
        strip = np.asarray(labels.read_region(top, 0, bottom - top, width))
        if strip.ndim != 2 or strip.dtype.kind not in "iu":
            raise InputError(f"'{labels.name}' is not a label image (one channel of integers)")
        if strip.dtype.kind == "i" and strip.size and strip.min() < 0:
            raise InputError(f"'{labels.name}' holds negative labels")
        if strip.size and strip.max() > MAX_LABEL:
            raise InputError(f"'{labels.name}' holds label {strip.max()}; at most {MAX_LABEL} are exported "
                             "(number the objects 1, 2, ... N)")
        strip = strip.astype(np.int32, copy=False)
        values = None if intensity is None else _one_channel(intensity.read_region(top, 0, bottom - top, width))
        if strip.size and strip.max() >= len(written):
            written = np.concatenate([written, np.zeros(int(strip.max()) + 1 - len(written), bool)])
        slices = ndimage.find_objects(strip)
        pending_from, complete = None, []
        for index, where in enumerate(slices):
            label = index + 1
            if where is None or written[label]:
                continue
            if where[0].stop == bottom - top and bottom < height:
                pending_from = where[0].start if pending_from is None else min(pending_from, where[0].start)
            else:
                complete.append(label)
        table = _measure(strip, values, complete, pixel_size)
        for label, row in zip(complete, table):
            where = slices[label - 1]
            polygons = mask_polygons(strip[where] == label)
            yield _feature(polygons, where[1].start, top + where[0].start, row, options)
            written[label] = True
        if pending_from == 0:  # an object taller than the strip: read more rows at once
            rows *= 2
        else:
            top, rows = (bottom if pending_from is None else top + pending_from), options.strip_height


def _one_channel(region: np.ndarray) -> np.ndarray:
    return region if region.ndim == 2 else region.mean(axis=2)


def _measure(strip: np.ndarray, intensity, labels: list[int], pixel_size) -> list[dict]:
    """Measurements of the complete objects ``labels`` of a strip: area, and the intensity
    statistics when an intensity image is given (the shape descriptors are in the measurement
    table; QuPath computes its own from the outline)."""
    if not labels:
        return []
    index = np.asarray(labels)
    areas = ndimage.sum_labels(np.ones(strip.shape, np.int64), strip, index).astype(np.int64)
    columns = {}
    if pixel_size is not None:
        columns["area_um2"] = areas * pixel_size[0] * pixel_size[1]
    if intensity is not None:
        columns["mean_intensity"] = ndimage.mean(intensity, strip, index)
        columns["min_intensity"] = ndimage.minimum(intensity, strip, index)
        columns["max_intensity"] = ndimage.maximum(intensity, strip, index)
    return [{"label": labels[i], "area": int(areas[i]),
             **{name: _rounded(float(values[i])) for name, values in columns.items()}} for i in range(len(labels))]


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def _feature(polygons: list[list[np.ndarray]], x0: int, y0: int, measurements: dict,
             options: ExportOptions) -> dict:
    def coordinates(ring: np.ndarray) -> list:
        points = ring + [x0, y0]
        if options.downsample == 1:
            return points.tolist()
        return [[round(x * options.downsample, 3), round(y * options.downsample, 3)] for x, y in points.tolist()]

    parts = [[coordinates(ring) for ring in polygon] for polygon in polygons]
    geometry = {"type": "Polygon", "coordinates": parts[0]} if len(parts) == 1 \
        else {"type": "MultiPolygon", "coordinates": parts}
    properties: dict = {"objectType": options.object_type}
    if options.class_name:
        properties["classification"] = {"name": options.class_name, "color": class_colour(options.class_index)}
    properties["measurements"] = measurements
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def tile_features(rows, class_names: list[str], downsample: float = 1.0) -> Iterator[dict]:
    """The tiles classified by ``classify`` (rows of one image) as QuPath ``tile`` objects: a
    square each, in slide coordinates (``downsample``: slide pixels per working pixel),
    classified with its class and colour, the class probabilities as measurements. In QuPath
    they are a tissue map over the slide."""
    for row in rows:
        x0, y0 = row["x"] * downsample, row["y"] * downsample
        x1, y1 = (row["x"] + row["width"]) * downsample, (row["y"] + row["height"]) * downsample
        square = [[round(x, 3), round(y, 3)] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        yield {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
               "properties": {"objectType": "tile",
                              "classification": {"name": row["class"],
                                                 "color": class_colour(class_names.index(row["class"]))},
                              "measurements": {f"p_{c}": _rounded(row[f"p_{c}"]) for c in class_names}}}


def write_features(destination: str | os.PathLike | IO[str], features) -> int:
    """Write features as a GeoJSON FeatureCollection, one feature per line, as they come
    (memory stays that of one feature); return how many were written."""
    if not hasattr(destination, "write"):
        with open(destination, "w", encoding="utf-8") as fh:
            return write_features(fh, features)
    destination.write('{"type": "FeatureCollection", "features": [')
    count = 0
    for feature in features:
        destination.write(("\n" if count == 0 else ",\n") + json.dumps(feature, separators=(",", ":")))
        count += 1
    destination.write("\n]}\n")
    return count


def labels_to_geojson(labels, path: str | os.PathLike, options: ExportOptions | None = None, intensity=None,
                      pixel_size: tuple[float, float] | None = None) -> int:
    """Write the objects of a label image to ``path`` as a QuPath GeoJSON FeatureCollection;
    return the number of objects. See :func:`features_of_labels`.

    Examples
    --------
    >>> from dlhisto_core import read_labels
    >>> path = getfixture("tmp_path") / "nuclei.geojson"
    >>> labels_to_geojson(read_labels("test-data/nuclei_labels.tif").data, path)
    112
    """
    with atomic_output(path) as part:  # a failure leaves no half-written file
        return write_features(part, features_of_labels(labels, options, intensity, pixel_size))


# --- import ---------------------------------------------------------------------------------------------

@dataclass
class Annotation:
    """One area or stroke of a GeoJSON file, checked, in label-image pixels."""

    geometry: object
    """A shapely geometry."""
    class_name: str | None
    name: str
    """How errors refer to it: 'feature 3', with its QuPath name."""
    title: str | None = None
    """Its QuPath name, if it has one."""
    colour: tuple[int, int, int] | None = None
    """Its classification's colour, if the file gives one."""
    measurements: dict[str, float] = field(default_factory=dict)
    """Its numeric measurements (QuPath 0.4+ object or 0.2-0.3 list of name / value)."""


def read_annotations(path: str | os.PathLike, name: str | None = None, downsample: float = 1.0) -> list[Annotation]:
    """The features of a GeoJSON FeatureCollection (QuPath's export), checked and scaled from slide
    pixels into label-image pixels (divided by ``downsample``).

    Every geometry must be a valid (Multi)Polygon, (Multi)LineString or (Multi)Point with finite
    coordinates; an invalid or self-intersecting polygon is refused with the reason, naming the
    feature. Classifications are read as QuPath writes them (``{"name", "color"}`` or the
    ``colorRGB`` of QuPath 0.2 and 0.3).
    """
    import shapely
    from shapely import affinity
    from shapely.geometry import shape

    name = name or Path(path).name
    annotations, vertices, classes = [], 0, set()
    for number, feature in enumerate(_features(path, name), 1):
        if number > MAX_FEATURES:
            raise InputError(f"'{name}' holds more than {MAX_FEATURES:,} features; at most {MAX_FEATURES:,} are accepted")
        what = f"feature {number}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InputError(f"'{name}': {what} is not a GeoJSON Feature")
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise InputError(f"'{name}': {what} has properties that are not an object")
        if isinstance(properties.get("name"), str):
            what = f"{what} ('{properties['name']}')"
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict) or geometry.get("type") not in _GEOMETRY_TYPES:
            kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
            raise InputError(f"'{name}': {what} has a geometry of type '{kind}'; "
                             f"accepted: {', '.join(_GEOMETRY_TYPES)}")
        try:
            parsed = shape(geometry)
        except Exception as exc:  # shapely's errors for malformed coordinates vary by type
            raise InputError(f"'{name}': {what} has malformed coordinates ({one_line(exc)})") from None
        coordinates = shapely.get_coordinates(parsed)
        vertices += len(coordinates)
        if len(coordinates) > MAX_FEATURE_VERTICES or vertices > MAX_VERTICES:
            raise InputError(f"'{name}': {what} brings the vertices to {vertices:,} ({len(coordinates):,} in it); at "
                             f"most {MAX_FEATURE_VERTICES:,} per feature and {MAX_VERTICES:,} in all are accepted")
        if not np.isfinite(coordinates).all():
            raise InputError(f"'{name}': {what} has coordinates that are not finite numbers")
        if np.abs(coordinates).max() > MAX_COORDINATE:
            raise InputError(f"'{name}': {what} has a coordinate of {np.abs(coordinates).max():.3g} pixels; "
                             f"coordinates must lie within ±{MAX_COORDINATE:.0e} (no slide is larger)")
        if parsed.is_empty:
            raise InputError(f"'{name}': {what} has an empty geometry")
        if not parsed.is_valid:
            raise InputError(f"'{name}': {what} is not a valid {geometry['type']}: "
                             f"{shapely.is_valid_reason(parsed)}")
        if downsample != 1:
            parsed = affinity.scale(parsed, 1 / downsample, 1 / downsample, origin=(0, 0))
        title = properties["name"] if isinstance(properties.get("name"), str) else None
        classification = properties.get("classification")
        annotation = Annotation(parsed, _class_name(classification, name, what), what, title, _colour(classification),
                                _measurements(properties.get("measurements")))
        classes.add(annotation.class_name)
        untrusted.check_class_count(len(classes - {None}), f"'{name}'")
        annotations.append(annotation)
    return annotations


_GEOMETRY_TYPES = ("Polygon", "MultiPolygon", "LineString", "MultiLineString", "Point", "MultiPoint")


def _features(path: str | os.PathLike, name: str) -> Iterator[dict]:
    """The features of a FeatureCollection, parsed one at a time: memory holds the text and one
    feature's objects, not the whole collection's (a 200 MB file took 3.6 GB parsed at once)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_GEOJSON_BYTES:
            raise InputError(f"'{name}' is larger than {MAX_GEOJSON_BYTES // 2**20} MiB")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise InputError(f"'{name}' is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read '{name}': {exc.strerror or exc}") from None
    decoder = json.JSONDecoder(parse_int=untrusted.parse_int)
    try:
        yield from _collection_features(text, decoder, name)
    except InputError as exc:
        if str(exc).startswith("a number"):
            raise InputError(f"'{name}' holds {exc}") from None
        raise
    except json.JSONDecodeError as exc:
        raise InputError(f"'{name}' is not valid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"'{name}' is nested too deeply") from None


def _collection_features(text: str, decoder: json.JSONDecoder, name: str) -> Iterator[dict]:
    """The elements of the top-level object's "features" array, each decoded when it is reached;
    the object's other members are decoded whole (they are small: "type", "bbox", ...)."""
    space = json.decoder.WHITESPACE.match
    position = space(text, 0).end()
    if text[position:position + 1] != "{":
        kind = type(decoder.raw_decode(text, position)[0]).__name__ if text.strip() else "nothing"
        raise _not_a_collection(name, kind)
    position, members, found = space(text, position + 1).end(), {}, False
    while text[position:position + 1] != "}":
        key, position = decoder.raw_decode(text, position)
        position = space(text, position).end()
        if not isinstance(key, str) or text[position:position + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' after a member name", text, position)
        position = space(text, position + 1).end()
        if key == "features" and text[position:position + 1] == "[":
            found = True
            if members.get("type", "FeatureCollection") != "FeatureCollection":
                raise _not_a_collection(name, members["type"])
            position = space(text, position + 1).end()
            while text[position:position + 1] != "]":
                feature, position = decoder.raw_decode(text, position)
                yield feature
                position = space(text, position).end()
                if text[position:position + 1] == ",":
                    position = space(text, position + 1).end()
                elif text[position:position + 1] != "]":
                    raise json.JSONDecodeError("Expecting ',' or ']' between features", text, position)
            position += 1
        else:
            members[key], position = decoder.raw_decode(text, position)
        position = space(text, position).end()
        if text[position:position + 1] == ",":
            position = space(text, position + 1).end()
        elif text[position:position + 1] != "}":
            raise json.JSONDecodeError("Expecting ',' or '}' after a member", text, position)
    if members.get("type") != "FeatureCollection" or not found:
        raise _not_a_collection(name, members.get("type"))


def _not_a_collection(name: str, kind) -> InputError:
    return InputError(f"'{name}' is not a GeoJSON FeatureCollection (found {one_line(repr(kind), 60)}); in QuPath, "
                      "export with File > Export objects as GeoJSON and tick 'Export as FeatureCollection'")


def _class_name(classification, name: str, what: str) -> str | None:
    if classification is None:
        return None
    if isinstance(classification, str):
        return classification
    if isinstance(classification, dict) and isinstance(classification.get("name"), str):
        return classification["name"]
    if isinstance(classification, dict) and isinstance(classification.get("names"), list):
        return ": ".join(str(n) for n in classification["names"])
    raise InputError(f"'{name}': {what} has a classification without a name")


def _colour(classification) -> tuple[int, int, int] | None:
    """A classification's colour: QuPath's [r, g, b], or the packed colorRGB of QuPath 0.2-0.3."""
    colour = classification.get("color", classification.get("colorRGB")) if isinstance(classification, dict) else None
    if isinstance(colour, list) and len(colour) == 3 and all(isinstance(c, int) and 0 <= c < 256 for c in colour):
        return tuple(colour)
    if isinstance(colour, int) and not isinstance(colour, bool):
        return ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)
    return None


def _measurements(measurements) -> dict[str, float]:
    """The finite numbers of a feature's measurements, by name; anything else is left out."""
    if isinstance(measurements, list):  # QuPath 0.2-0.3: [{"name": ..., "value": ...}]
        measurements = {m.get("name"): m.get("value") for m in measurements if isinstance(m, dict)}
    if not isinstance(measurements, dict):
        return {}
    return {str(k)[:80]: float(v) for k, v in list(measurements.items())[:MAX_MEASUREMENTS]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


@dataclass
class ImportOptions:
    """How GeoJSON annotations become an image."""

    mode: str = choice("labels", IMPORT_MODES)
    """``labels``: each area its own object (instance labels, areas only); ``classes``: each
    pixel its class number (1, 2, ... in the order of ``classes``), lines and points too, as
    scribbles for the pixel classifier."""
    classes: tuple[str, ...] = ()
    """Class names in the order of their numbers (``classes`` mode); empty: sorted names found."""
    tile_size: int = bounded(512, 16, 4096)
    """Tile of the written image (a multiple of 16) and height of the strips rasterised at a time."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)
        if self.tile_size % 16:
            raise InputError(f"the tile size must be a multiple of 16, not {self.tile_size}")


@dataclass
class ImportResult:
    """What :func:`geojson_to_labels` drew."""

    drawn: int
    skipped: int
    """Features left out: strokes in ``labels`` mode, unclassified features in ``classes`` mode."""
    classes: list[str]

    def describe(self) -> str:
        kinds = f" of classes {', '.join(self.classes)}" if self.classes else ""
        skipped = f"; {self.skipped} left out (strokes in labels mode, or unclassified)" if self.skipped else ""
        return f"{self.drawn} annotations drawn{kinds}{skipped}"


def geojson_to_labels(geojson: str | os.PathLike, image, output: str | os.PathLike,
                      options: ImportOptions | None = None, *, pixel_size: float | None = None,
                      name: str | None = None, image_name: str | None = None) -> ImportResult:
    """Rasterise a QuPath GeoJSON file drawn on ``image`` into a label image or class map of the
    image's size, written as a tiled OME-TIFF at ``output``, strip by strip.

    A pixel belongs to an area when its centre is inside (holes excluded); where areas overlap,
    the later feature wins. With ``pixel_size`` (µm), the output is at that pixel size and the
    slide coordinates of the file are scaled to it.

    Parameters
    ----------
    geojson : path
        A FeatureCollection as QuPath exports it; ``name`` names it in messages.
    image : path, reader or array
        The image or slide the annotations were drawn on (its size and pixel size).
    output : path
    options : ImportOptions, optional

    Examples
    --------
    >>> result = geojson_to_labels("test-data/qupath_annotations.geojson", "test-data/nuclei.tif",
    ...                            getfixture("tmp_path") / "scribbles.tif", ImportOptions(mode="classes"))
    >>> result.describe()
    '4 annotations drawn of classes Background, Nucleus; 1 left out (strokes in labels mode, or unclassified)'
    """
    from .slides import image_reader
    from .slides import downsample_to_slide

    with image_reader(image, image_name, pixel_size) as reader:
        shape, recorded = reader.shape[:2], reader.pixel_size
    downsample = downsample_to_slide(image, image_name, pixel_size)
    options = options or ImportOptions()
    annotations = read_annotations(geojson, name, downsample)
    kept, skipped = [], 0
    if options.mode == "labels":
        for annotation in annotations:
            if annotation.geometry.geom_type in ("Polygon", "MultiPolygon"):
                kept.append((annotation, len(kept) + 1))
            else:
                skipped += 1
        classes: list[str] = []
    else:
        kept, classes = classed_annotations(annotations, options.classes, name or Path(geojson).name)
        skipped = len(annotations) - len(kept)
    top_value = len(kept) if options.mode == "labels" else len(classes)
    dtype = smallest_label_dtype(top_value)
    write_tiled_image(output, _rasterised_tiles(kept, shape, dtype, options.tile_size), shape, dtype,
                      options.tile_size, recorded)
    return ImportResult(len(kept), skipped, classes)


def classed_annotations(annotations: list[Annotation], classes: Sequence[str], name: str
                        ) -> tuple[list[tuple[Annotation, int]], list[str]]:
    """The classified annotations with their class numbers (1.. in the order of ``classes``;
    empty: the sorted names found), and the class names; a class not in ``classes`` is refused."""
    found = sorted({a.class_name for a in annotations if a.class_name})
    classes = list(classes) or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise InputError(f"'{name}' has classes {', '.join(unknown)} that are not among {', '.join(classes)}")
    number = {class_name: k for k, class_name in enumerate(classes, 1)}
    return [(a, number[a.class_name]) for a in annotations if a.class_name], classes


def draw_strip(kept: list[tuple[Annotation, int]], top: int, rows: int, width: int, dtype=np.int64,
               bounds: np.ndarray | None = None) -> np.ndarray:
    """Rows ``top`` .. ``top + rows - 1`` of the image the (annotation, value) pairs draw (later
    wins); ``bounds``: the annotations' (min x, min y, max x, max y), when known."""
    strip = np.zeros((rows, width), dtype)
    bounds = np.array([a.geometry.bounds for a, _ in kept]).reshape(-1, 4) if bounds is None else bounds
    for k in np.nonzero((bounds[:, 3] >= top) & (bounds[:, 1] <= top + rows))[0]:
        _draw(strip, kept[k][0].geometry, kept[k][1], top)
    return strip


def _rasterised_tiles(kept: list, shape: tuple[int, int], dtype, tile_size: int) -> Iterator[np.ndarray]:
    """The tiles of the rasterised image in row-major order, one strip of tiles at a time."""
    height, width = shape
    bounds = np.array([a.geometry.bounds for a, _ in kept]).reshape(-1, 4)
    for top in range(0, height, tile_size):
        strip = draw_strip(kept, top, min(tile_size, height - top), width, dtype, bounds)
        for tile in tile_grid(strip.shape[0], width, tile_size):
            yield strip[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]


def _draw(strip: np.ndarray, geometry, value: int, top: int) -> None:
    """Paint ``geometry`` into the strip whose first row is image row ``top``."""
    kind = geometry.geom_type
    if kind in ("Polygon", "MultiPolygon"):  # drawn in the part of the strip its bounds cover
        min_x, min_y, max_x, max_y = geometry.bounds
        y0, y1 = max(int(np.floor(min_y)) - top, 0), min(int(np.ceil(max_y)) - top + 1, strip.shape[0])
        x0, x1 = max(int(np.floor(min_x)), 0), min(int(np.ceil(max_x)) + 1, strip.shape[1])
        if y1 <= y0 or x1 <= x0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        for polygon in getattr(geometry, "geoms", [geometry]):
            mask[ring_pixels(polygon.exterior.coords, top + y0, x0, mask.shape)] = True
            for interior in polygon.interiors:
                mask[ring_pixels(interior.coords, top + y0, x0, mask.shape)] = False
        strip[y0:y1, x0:x1][mask] = value
        return
    for part in getattr(geometry, "geoms", [geometry]):
        points = np.floor(np.asarray(part.coords)).astype(np.int64) - [0, top]
        pairs = zip(points[:-1], points[1:]) if len(points) > 1 else [(points[0], points[0])]
        for (x0, y0), (x1, y1) in pairs:
            rows, cols = draw.line(int(y0), int(x0), int(y1), int(x1))
            inside = (rows >= 0) & (rows < strip.shape[0]) & (cols >= 0) & (cols < strip.shape[1])
            strip[rows[inside], cols[inside]] = value
