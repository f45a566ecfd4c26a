"""Which class (cell type) each object of a label image has, read from what users give:

- a table with the columns ``label`` and ``class`` (as ``object_classifier_apply`` writes it);
- a class map (an image of class numbers, 0 = none): each object takes the class most of its
  classed pixels have, as HoVer-Net's type vote (a type map) or from a few scribbles;
- QuPath GeoJSON: classified detections, annotations or points, drawn as a class map on the
  label image's grid, then voted.

Images are read strip by strip: memory follows a strip and the number of classed objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..base.errors import InputError
from ..io import untrusted
from ..io.slides import image_reader
from ..io.tables import read_table

STRIP_PIXELS = 2**23
"""Pixels read at a time: 1024 rows of an 8192 px wide image, fewer of a wider slide."""


def strip_rows(width: int, most: int = 1024) -> int:
    """Rows of an image ``width`` pixels wide to read at a time: at most ``most``, about
    :data:`STRIP_PIXELS` pixels, at least 16."""
    return max(16, min(most, STRIP_PIXELS // max(width, 1)))


ANNOTATION_KINDS = ("auto", "table", "class_map", "geojson")
"""What a file of object classes is: a label -> class table, a class map image, QuPath GeoJSON;
auto: told by its first bytes."""
_IMAGE_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff")


@dataclass
class ObjectClasses:
    """Classes of some objects: ``classes[i]`` (1..K, a number into ``names``) of object ``labels[i]``."""

    labels: np.ndarray
    classes: np.ndarray
    names: list[str]

    def renumbered(self, names: Sequence[str], what: str) -> "ObjectClasses":
        """The same classes numbered as in ``names`` (a classifier's); unknown names refused."""
        unknown = sorted(set(self.names) - set(names))
        if unknown:
            raise InputError(f"{what} has class(es) {', '.join(unknown)} unknown to the classifier "
                             f"(it knows {', '.join(names)})")
        number = np.array([0] + [list(names).index(n) + 1 for n in self.names])
        return ObjectClasses(self.labels, number[self.classes], list(names))


def read_object_classes(path, labels, kind: str = "auto", class_names: Sequence[str] = (), name: str | None = None,
                        labels_name: str | None = None, downsample: float = 1.0) -> ObjectClasses:
    """The classes of some objects of ``labels`` from a file of one of :data:`ANNOTATION_KINDS`,
    numbered as ``class_names`` when given (a class not among them is refused); ``downsample``:
    slide pixels per label pixel, for GeoJSON."""
    kind = kind_of(path) if kind == "auto" else kind
    if kind == "table":
        classes = from_table(path, labels, name, labels_name)
        return classes.renumbered(class_names, f"'{name or Path(path).name}'") if class_names else classes
    if kind == "class_map":
        return from_class_map(path, labels, class_names or None, name, labels_name)
    if kind == "geojson":
        return from_geojson(path, labels, class_names, name, labels_name, downsample)
    raise InputError(f"unknown kind of object classes '{kind}'; one of {', '.join(ANNOTATION_KINDS)}")


def kind_of(path) -> str:
    """class_map for an array or a TIFF, PNG or JPEG file, geojson for a JSON object, else table."""
    if not isinstance(path, (str, os.PathLike)):
        return "class_map"
    with open(path, "rb") as fh:
        start = fh.read(64)
    if start.startswith(_IMAGE_MAGIC):
        return "class_map"
    return "geojson" if start.lstrip().startswith(b"{") else "table"


def label_ids(labels, name: str | None = None) -> np.ndarray:
    """The object ids present in a label image (path, reader or array), read strip by strip."""
    found = []
    with image_reader(labels, name) as reader:
        height, width = reader.shape[:2]
        step = strip_rows(width)
        for top in range(0, height, step):
            found.append(np.unique(label_strip(reader, top, min(step, height - top), width)))
    ids = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return ids[ids > 0]


def from_table(path: str | os.PathLike, labels, name: str | None = None, labels_name: str | None = None
               ) -> ObjectClasses:
    """Classes from a table with the columns ``label`` and ``class``; every label must be an
    object of ``labels``."""
    name = name or Path(path).name
    rows = read_table(path, name, ("label", "class"))
    try:
        ids = np.array([int(row["label"]) for row in rows], np.int64)
    except (TypeError, ValueError):
        raise InputError(f"'{name}': the label column must hold whole numbers (object ids)") from None
    names = sorted({row["class"] for row in rows if row["class"]})
    untrusted.check_class_count(len(names), f"'{name}'")
    if not names:
        raise InputError(f"'{name}' gives no object a class")
    missing = np.setdiff1d(ids, label_ids(labels, labels_name))
    if missing.size:
        raise InputError(f"'{name}' names {missing.size} object(s) not in the label image, e.g. label {missing[0]}")
    classed = np.array([bool(row["class"]) for row in rows])
    classes = np.array([names.index(row["class"]) + 1 for row in rows if row["class"]], np.int64)
    return ObjectClasses(ids[classed], classes, names)


def from_class_map(class_map, labels, class_names: Sequence[str] | None = None, name: str | None = None,
                   labels_name: str | None = None) -> ObjectClasses:
    """Classes voted by the pixels of a class map (1..K, 0 = none) of the label image's size:
    each object takes the class most of its classed pixels have (ties: the lower number);
    objects without classed pixels get none."""
    with image_reader(labels, labels_name) as label_reader, image_reader(class_map, name) as map_reader:
        _check_map(map_reader, label_reader)
        votes, top_class = _vote(label_reader, _map_strips(map_reader, label_reader.shape[1]))
    names = list(class_names) if class_names else [f"class {k}" for k in range(1, top_class + 1)]
    if top_class > len(names):
        raise InputError(f"the class map '{map_reader.name}' uses class {top_class}; {len(names)} class names given")
    untrusted.check_class_count(len(names), "the class names")
    return ObjectClasses(*votes, names)


@dataclass
class VoteShares:
    """The share of each class among the classed pixels of some objects."""

    labels: np.ndarray
    shares: np.ndarray
    """(N, K)."""


def vote_shares(class_map, labels, n_classes: int, name: str | None = None, labels_name: str | None = None
                ) -> VoteShares:
    """For each object with classed pixels in ``class_map`` (1..n_classes, 0 = none), the share
    of each class among them (the votes behind :func:`from_class_map`)."""
    with image_reader(labels, labels_name) as label_reader, image_reader(class_map, name) as map_reader:
        _check_map(map_reader, label_reader)
        counts, top_class = _counts(label_reader, _map_strips(map_reader, label_reader.shape[1]))
    if top_class > n_classes:
        raise InputError(f"the class map '{map_reader.name}' uses class {top_class}; {n_classes} class names given")
    return _shares(counts, n_classes)


def from_geojson(path: str | os.PathLike, labels, class_names: Sequence[str] = (), name: str | None = None,
                 labels_name: str | None = None, downsample: float = 1.0) -> ObjectClasses:
    """Classes of the objects under QuPath's classified objects (detections, annotations,
    points; slide coordinates divided by ``downsample`` onto the label image), voted as the
    pixels of a class map (:func:`from_class_map`). ``class_names``: the classes and their
    order (default: the sorted names of the file); a class of the file not among them is refused."""
    from ..io.geojson import classed_annotations, draw_strip, read_annotations

    name = name or Path(path).name
    kept, names = classed_annotations(read_annotations(path, name, downsample), class_names, name)
    if not kept:
        raise InputError(f"'{name}' holds no classified object")
    bounds = np.array([a.geometry.bounds for a, _ in kept])
    with image_reader(labels, labels_name) as label_reader:
        width = label_reader.shape[1]
        votes, _ = _vote(label_reader, lambda top, rows: draw_strip(kept, top, rows, width, bounds=bounds))
    return ObjectClasses(*votes, names)


def _check_map(map_reader, label_reader) -> None:
    """Refuse a class map that is not one channel of whole numbers of the labels' size."""
    if map_reader.shape[:2] != label_reader.shape[:2] or len(map_reader.shape) != 2:
        raise InputError(f"the class map '{map_reader.name}' is {_size(map_reader.shape)} pixels, the labels "
                         f"'{label_reader.name}' {_size(label_reader.shape)}: it must have their size and one channel")
    if map_reader.dtype.kind not in "biu":
        raise InputError(f"the class map '{map_reader.name}' must hold whole numbers (0 = no class)")


def _map_strips(map_reader, width: int):
    """``class_strip(top, rows)`` of a class map's reader, negative classes refused."""
    def class_strip(top: int, rows: int) -> np.ndarray:
        classes = np.asarray(map_reader.read_region(top, 0, rows, width)).astype(np.int64)
        if classes.size and classes.min() < 0:
            raise InputError(f"the class map '{map_reader.name}' holds negative classes")
        return classes
    return class_strip


def _counts(label_reader, class_strip) -> tuple[dict[tuple[int, int], int], int]:
    """Classed pixels per (object, class), and the highest class seen; ``class_strip(top,
    rows)`` gives the classes of the label image's rows."""
    counts: dict[tuple[int, int], int] = {}
    top_class = 0
    height, width = label_reader.shape[:2]
    step = strip_rows(width)
    for top in range(0, height, step):
        rows = min(step, height - top)
        objects = label_strip(label_reader, top, rows, width)
        classes = class_strip(top, rows)
        voting = (objects > 0) & (classes > 0)
        pairs, n = np.unique(np.stack([objects[voting], classes[voting]]), axis=1, return_counts=True)
        for (label, k), count in zip(pairs.T.tolist(), n.tolist()):
            counts[(label, k)] = counts.get((label, k), 0) + count
        top_class = max(top_class, int(classes.max()) if classes.size else 0)
    return counts, top_class


def _shares(counts: dict[tuple[int, int], int], n_classes: int) -> VoteShares:
    """The share of each class 1..n_classes among each object's classed pixels."""
    pairs = np.array(list(counts), np.int64).reshape(-1, 2)
    ids, rows = np.unique(pairs[:, 0], return_inverse=True)
    shares = np.zeros((len(ids), n_classes))
    shares[rows, pairs[:, 1] - 1] = list(counts.values())
    return VoteShares(ids, shares / np.maximum(shares.sum(axis=1, keepdims=True), 1))


def _vote(label_reader, class_strip) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """(ids, classes) of the objects by the majority of their classed pixels (ties: the lower
    class), and the highest class seen."""
    counts, top_class = _counts(label_reader, class_strip)
    voted = _shares(counts, max(top_class, 1))  # a map with no class: no votes
    return (voted.labels, voted.shares.argmax(axis=1).astype(np.int64) + 1), top_class


def label_strip(reader, top: int, rows: int, width: int) -> np.ndarray:
    """Rows ``top`` .. ``top + rows - 1`` of a label image as int64; anything but one channel of
    whole numbers at least 0 refused."""
    strip = np.asarray(reader.read_region(top, 0, rows, width))
    if strip.ndim != 2 or strip.dtype.kind not in "iu":
        raise InputError(f"'{reader.name}' is not a label image (one channel of whole numbers)")
    if strip.dtype.kind == "i" and strip.size and strip.min() < 0:
        raise InputError(f"'{reader.name}' holds negative labels")
    return strip.astype(np.int64, copy=False)


def _size(shape) -> str:
    return f"{shape[1]} x {shape[0]}"
