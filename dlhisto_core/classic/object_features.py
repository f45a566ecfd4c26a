"""Per-object features for classifying cells, as QuPath measures its detections, computed strip
by strip over label images of any size.

For each object of a label image, on the grid of its image:

- shape: area, perimeter, major and minor axes (µm² and µm), eccentricity, solidity, circularity;
- intensity of each stain (hematoxylin, eosin, DAB of an RGB image, ``skimage.color.rgb2hed``)
  or channel: mean, standard deviation and maximum inside the object, mean in a ring of
  ``ring_width`` µm around it (background pixels only), and texture: the mean gradient
  magnitude of the first stain inside;
- neighbourhood: how many other objects have their centre within ``neighbour_radius`` µm, and
  the distance to the nearest one.

Lengths are in µm at the label image's pixel size, or at :data:`ASSUMED_PIXEL_SIZE` when it
records none, so that features of images scanned at different magnifications compare.

Memory follows a strip of the image's width (``strip_height`` rows and the ring's margin) and
the tallest object; the table of features itself holds 4 bytes per feature and object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import measure
from skimage.segmentation import expand_labels

from ..base.bounds import bounded, check_bounds
from ..base.errors import InputError
from ..io.slides import image_reader
from .object_classes import label_strip, strip_rows

ASSUMED_PIXEL_SIZE = 0.5
"""µm per pixel of label images that record no pixel size (a 20x scan)."""
SHAPE_FEATURES = ("area_um2", "perimeter_um", "major_axis_um", "minor_axis_um", "eccentricity", "solidity",
                  "circularity")
NEIGHBOUR_FEATURES = ("neighbours", "nearest_neighbour_um")
STAINS = ("hematoxylin", "eosin", "dab")
"""The channels of an RGB (brightfield) image, separated by colour deconvolution."""


@dataclass
class ObjectFeatureOptions:
    """The rings, neighbourhoods and strips of :func:`object_features`."""

    ring_width: float = bounded(2.0, 0.1, 50.0)
    """µm around each object in which the background's intensity is measured."""
    neighbour_radius: float = bounded(50.0, 1.0, 1000.0)
    """µm: objects whose centres lie this close count as neighbours."""
    strip_height: int = bounded(1024, 16, 2**16)
    """Rows of the label image read at a time, at most: fewer of a slide wider than 8192 px
    (``object_classes.strip_rows``), so that memory follows about 8 million pixels."""

    def __post_init__(self):
        check_bounds(self)


@dataclass
class ObjectFeatures:
    """The features of every object of a label image, one row per object in label order."""

    labels: np.ndarray
    """(N,) object ids."""
    centroids: np.ndarray
    """(N, 2) row, column of each object's centre, in label-image pixels."""
    values: np.ndarray
    """(N, F) float32 features."""
    names: list[str]
    """The F feature names."""
    pixel_size: float | None
    """µm per pixel of the label image (None: it records none)."""

    def rows(self) -> list[dict]:
        """The table of features: label, centre, then each feature."""
        return [{"label": int(label), "centroid_y": float(y), "centroid_x": float(x),
                 **dict(zip(self.names, map(float, values)))}
                for label, (y, x), values in zip(self.labels, self.centroids, self.values)]


def channel_names(image_shape: tuple, dtype) -> list[str]:
    """The intensity channels features are measured on: the stains of an 8-bit RGB image, else
    the image's channels."""
    if len(image_shape) == 3 and image_shape[2] == 3 and np.dtype(dtype) == np.uint8:
        return list(STAINS)
    return [f"channel_{c}" for c in range(1 if len(image_shape) == 2 else image_shape[2])]


def feature_names(channels: list[str]) -> list[str]:
    intensity = [f"{c}_{stat}" for c in channels for stat in ("mean", "std", "max", "ring_mean")]
    return [*SHAPE_FEATURES, *intensity, f"{channels[0]}_gradient", *NEIGHBOUR_FEATURES]


def object_features(labels, image, options: ObjectFeatureOptions | None = None, labels_name: str | None = None,
                    image_name: str | None = None) -> ObjectFeatures:
    """The features of every object of ``labels`` (a label image: path, reader or array)
    measured on ``image`` (the same grid; a slide is read at the labels' pixel size).

    Examples
    --------
    >>> features = object_features("test-data/nuclei_labels.tif", "test-data/nuclei.tif")
    >>> len(features.labels), features.names[:2]
    (112, ['area_um2', 'perimeter_um'])
    """
    options = options or ObjectFeatureOptions()
    with image_reader(labels, labels_name) as label_reader:
        recorded = label_reader.pixel_size[1] if label_reader.pixel_size else None
        with image_reader(image, image_name, _image_pixel_size(image, image_name, recorded)) as image_reader_:
            if image_reader_.shape[:2] != label_reader.shape[:2]:
                raise InputError(f"the labels '{label_reader.name}' are {_size(label_reader.shape)} pixels, the "
                                 f"image '{image_reader_.name}' {_size(image_reader_.shape)}: they must cover the "
                                 "same pixels")
            return _by_strips(label_reader, image_reader_, options, recorded)


def _image_pixel_size(image, name, labels_pixel_size: float | None) -> float | None:
    """The pixel size to read the image at: the labels' when both record one and they differ
    (labels made at a model's working pixel size), else the image's own."""
    if labels_pixel_size is None:
        return None
    with image_reader(image, name) as reader:
        return labels_pixel_size if reader.pixel_size is not None else None


def _by_strips(labels, image, options: ObjectFeatureOptions, recorded: float | None) -> ObjectFeatures:
    pixel_size = recorded or ASSUMED_PIXEL_SIZE
    channels = channel_names(image.shape, image.dtype)
    height, width = labels.shape[:2]
    ring = max(1, round(options.ring_width / pixel_size))
    margin = 2 * ring + 2  # a ring pixel goes to the nearest object: neighbours within two rings count
    done = np.zeros(1, bool)  # by object id: measured in an earlier strip
    ids, centres, values = [], [], []
    step = strip_rows(width, options.strip_height)
    top, rows = 0, step
    while top < height:
        bottom = min(top + rows, height)
        lo, hi = max(top - margin, 0), min(bottom + margin, height)
        strip = label_strip(labels, lo, hi - lo, width)
        present, first, last = _row_spans(strip)
        if present.size and present[-1] >= len(done):
            done = np.concatenate([done, np.zeros(int(present[-1]) + 1 - len(done), bool)])
        starting = ~done[present] & (lo + first >= top) & (lo + first < bottom)  # objects owned by their top row
        complete = (lo + last + 1 + margin <= hi) | (hi == height)  # with their ring inside the strip
        pending = starting & ~complete  # left for the next strip, which starts at the first of them
        owned = present[starting & complete]
        if owned.size:
            intensity = _intensities(image.read_region(lo, 0, hi - lo, width), channels)
            ids_, centres_, values_ = _strip_features(strip, intensity, owned, ring, pixel_size)
            ids.append(ids_)
            centres.append(centres_ + [lo, 0])
            values.append(values_)
            done[owned] = True
        if not pending.any():
            top, rows = bottom, step
        elif int((lo + first[pending]).min()) > top:
            top, rows = int((lo + first[pending]).min()), step
        else:  # an object taller than the strip: read more rows at once
            rows *= 2
    ids_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    order = np.argsort(ids_all)
    centroids = np.concatenate(centres)[order] if ids else np.zeros((0, 2))
    table = np.concatenate(values)[order] if ids else np.zeros((0, len(feature_names(channels)) - 2), np.float32)
    neighbours = _neighbourhood(centroids * pixel_size, options.neighbour_radius)
    return ObjectFeatures(ids_all[order], centroids, np.hstack([table, neighbours]).astype(np.float32),
                          feature_names(channels), recorded)


def _row_spans(strip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object ids of a label strip and the first and last row each occupies (vectorised:
    scipy's find_objects lists every id up to the largest, a million on a slide)."""
    where = np.flatnonzero(strip)
    found = strip.ravel()[where]
    order = np.argsort(found, kind="stable")
    found, rows = found[order], where[order] // strip.shape[1]
    present, starts = np.unique(found, return_index=True)
    if not present.size:
        return present, present, present
    return present, np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts)


def _intensities(region: np.ndarray, channels: list[str]) -> np.ndarray:
    """(H, W, C) float32: stain concentrations of an RGB region, else its channels."""
    from skimage.color import rgb2hed

    if channels[0] == STAINS[0]:
        return rgb2hed(region).astype(np.float32)
    return region.reshape(*region.shape[:2], -1).astype(np.float32)


def _strip_features(strip: np.ndarray, intensity: np.ndarray, owned: np.ndarray, ring: int, pixel_size: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, centres (strip rows) and features but the neighbourhood of the objects ``owned``."""
    mine = np.where(np.isin(strip, owned), strip, 0)
    numbered = np.where(mine > 0, np.searchsorted(owned, mine) + 1, 0)  # 1..n: regionprops lists ids up to the largest
    table = measure.regionprops_table(numbered, properties=("label", "area", "perimeter", "axis_major_length",
                                                            "axis_minor_length", "eccentricity", "solidity",
                                                            "centroid"))
    ids = owned[table["label"] - 1]
    area, perimeter = table["area"], table["perimeter"]
    circularity = np.where(perimeter > 0, 4 * math.pi * area / np.maximum(perimeter, 1e-9) ** 2, 1.0)
    columns = [area * pixel_size ** 2, perimeter * pixel_size, table["axis_major_length"] * pixel_size,
               table["axis_minor_length"] * pixel_size, table["eccentricity"], table["solidity"],
               np.minimum(circularity, 1.0)]
    rings = np.where(strip == 0, expand_labels(strip, ring), 0)
    gradient = np.hypot(ndimage.sobel(intensity[..., 0], 0), ndimage.sobel(intensity[..., 0], 1))
    inside, around = _Groups(mine, ids), _Groups(rings, ids)
    for c in range(intensity.shape[2]):
        channel = intensity[..., c]
        mean, spread, top = inside.statistics(channel)
        ring_mean = around.statistics(channel)[0]
        columns += [mean, spread, top, np.where(np.isnan(ring_mean), mean, ring_mean)]
    columns.append(inside.statistics(gradient)[0])
    centres = np.stack([table["centroid-0"], table["centroid-1"]], axis=1)
    return ids, centres, np.stack([np.asarray(c, np.float64) for c in columns], axis=1).astype(np.float32)


class _Groups:
    """The pixels of each of the objects ``ids`` in a label strip, sorted once by object, so
    that the mean, standard deviation and maximum of any channel over every object cost one
    pass (scipy.ndimage sorts the whole strip for each maximum)."""

    def __init__(self, labels: np.ndarray, ids: np.ndarray):
        flat = labels.ravel()
        self.where = np.flatnonzero(flat)
        order = np.argsort(flat[self.where], kind="stable")
        self.where = self.where[order]
        present, self.starts, self.counts = np.unique(flat[self.where], return_index=True, return_counts=True)
        self.slot = np.searchsorted(present, ids)  # each id's group; ids without pixels give NaN
        self.found = (self.slot < len(present)) & (present[np.minimum(self.slot, len(present) - 1)] == ids) \
            if len(present) else np.zeros(len(ids), bool)

    def statistics(self, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, standard deviation and maximum of ``channel`` over each object (NaN if empty)."""
        out = np.full((3, len(self.found)), np.nan)
        if not len(self.counts):
            return out[0], out[1], out[2]
        values = channel.ravel()[self.where].astype(np.float64)
        sums = np.add.reduceat(values, self.starts)
        mean = sums / self.counts
        squares = np.add.reduceat(values ** 2, self.starts) / self.counts - mean ** 2
        slot = self.slot[self.found]
        out[:, self.found] = [mean[slot], np.sqrt(np.maximum(squares, 0))[slot],
                              np.maximum.reduceat(values, self.starts)[slot]]
        return out[0], out[1], out[2]


def _neighbourhood(centres_um: np.ndarray, radius: float) -> np.ndarray:
    """(N, 2): other objects within ``radius`` µm, distance (µm) to the nearest other one."""
    from scipy.spatial import cKDTree

    if len(centres_um) < 2:
        return np.tile([0.0, radius], (len(centres_um), 1)).astype(np.float32)
    tree = cKDTree(centres_um)
    counts = tree.query_ball_point(centres_um, radius, return_length=True) - 1
    nearest = tree.query(centres_um, k=2)[0][:, 1]
    return np.stack([counts, nearest], axis=1).astype(np.float32)


def _size(shape) -> str:
    return f"{shape[1]} x {shape[0]}"
