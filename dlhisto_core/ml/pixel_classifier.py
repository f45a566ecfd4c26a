"""Pixel classification the ilastik way: a random forest on filter-bank features, trained from
sparse annotations (label images where 0 = not annotated and 1..K = classes).

A trained classifier is saved as a zip holding ``classifier.json`` (feature settings, class
names, channels, the training images' pixel size, training figures) and ``forest.skops``: scikit-learn's forest
(:mod:`forest_files`: never unpickled).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .. import __version__
from ..base.errors import InputError
from ..imaging.features import FeatureSettings, features_of_tile
from ..io.readers import TiledImageReader
from ..io.slides import image_reader
from ..io.writers import write_tiled_image
from ..base.bounds import MAX_SEED, MAX_TREES, bounded, check_bounds
from ..io.pixel_size import SAME_PIXEL_SIZE
from .forest_files import load_forest, save_forest
from ..base.threads import cpu_threads
from ..io.tiling import MAX_TILE_SIZE, Tile, check_tile_size, map_in_order, tile_grid

if TYPE_CHECKING:  # scikit-learn, skops and pydantic load when a classifier is trained, saved or loaded
    from sklearn.ensemble import RandomForestClassifier

FORMAT = "dlhisto-pixel-classifier"
FORMAT_VERSION = 1
MAX_CLASSES = 255
"""The class map is stored as uint8."""


@dataclass
class ForestOptions:
    """The random forest of ``pixel_classifier_train``."""

    trees: int = bounded(100, 1, MAX_TREES)
    seed: int = bounded(0, 0, MAX_SEED)
    """The same seed and annotations give the same classifier."""

    def __post_init__(self):
        check_bounds(self)


@dataclass
class ClassifyPixelsOptions:
    """``pixel_classifier_predict``: the image is classified tile by tile."""

    tile_size: int = bounded(512, 64, MAX_TILE_SIZE)
    """Tile size in pixels, a multiple of 16."""
    pixel_size: float | None = None
    """Work at this pixel size (µm). None: at the classifier's training pixel size when both it
    and the image record one (the filters' scales are in pixels), else at the image's own."""

    def __post_init__(self):
        check_bounds(self)
        check_tile_size(self.tile_size)


@dataclass
class PixelClassifier:
    forest: RandomForestClassifier
    settings: FeatureSettings
    class_names: list[str]
    n_channels: int
    training: dict = field(default_factory=dict)
    """Figures from training: annotated pixels and out-of-bag accuracy, per class and overall."""
    pixel_size: float | None = None
    """The training images' pixel size (µm), None when they record none or differ."""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def check_class(self, k: int) -> None:
        """Refuse a class number that is not one of 1..K."""
        if not 1 <= k <= self.n_classes:
            raise InputError(f"the classifier knows classes 1 to {self.n_classes}; class {k} does not exist")


def annotated_pixels(image_path, labels_path, settings: FeatureSettings,
                     tile_size: int = ClassifyPixelsOptions.tile_size,
                     name: str | None = None, labels_name: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and classes of the annotated pixels of one image, and its channel count.

    Works tile by tile and skips tiles without annotations, so a sparsely annotated slide
    costs little time and memory.
    """
    features, classes = [], []
    with TiledImageReader(image_path, name=name) as image, \
            TiledImageReader(labels_path, name=labels_name) as labels:
        if labels.shape[:2] != image.shape[:2] or len(labels.shape) != 2:
            raise InputError(f"the annotation '{labels.name}' is {_size(labels.shape)}, "
                             f"its image '{image.name}' {_size(image.shape)}: they must match, with one channel")
        if labels.dtype.kind not in "biu":
            raise InputError(f"the annotation '{labels.name}' must hold whole numbers (0 = not annotated)")
        for tile in tile_grid(*image.shape[:2], tile_size):
            tile_labels = labels.read_region(tile.y, tile.x, tile.height, tile.width)
            if tile_labels.min() < 0:
                raise InputError(f"the annotation '{labels.name}' holds negative values")
            annotated = tile_labels > 0
            if not annotated.any():
                continue
            features.append(features_of_tile(image, tile, settings)[annotated])
            classes.append(tile_labels[annotated].astype(np.int64))
        n_channels = 1 if len(image.shape) == 2 else image.shape[2]
    if not features:
        return np.empty((0, len(settings.names(n_channels))), np.float32), np.empty(0, np.int64), n_channels
    return np.concatenate(features), np.concatenate(classes), n_channels


def train(pairs: Sequence[tuple], settings: FeatureSettings | None = None, class_names: Sequence[str] | None = None,
          forest: ForestOptions | None = None, validation_pairs: Sequence[tuple] = (),
          tile_size: int = ClassifyPixelsOptions.tile_size) -> PixelClassifier:
    """Train a random forest on the annotated pixels of (image, annotation[, names]) pairs
    (``dlhisto pixel_classifier_train``; :func:`save` writes it, :func:`classify_pixels` applies it).

    The accuracy is estimated out of bag (each pixel judged by the trees that did not train on
    it) and, when ``validation_pairs`` are given, on their annotated pixels, never used to train.

    Examples
    --------
    >>> from dlhisto_core import pixel_classifier
    >>> from dlhisto_core.imaging.features import FeatureSettings
    >>> from dlhisto_core.ml.pixel_classifier import ForestOptions
    >>> forest = pixel_classifier.train([("test-data/nuclei.tif", "test-data/nuclei_scribbles.tif")],
    ...                                 FeatureSettings(), ["nucleus", "background"], ForestOptions(trees=20))
    >>> forest.class_names, forest.training["out_of_bag_accuracy"] > 0.9
    (['nucleus', 'background'], True)
    """
    from sklearn.ensemble import RandomForestClassifier

    if not pairs:
        raise InputError("give at least one image with its annotation")
    settings, forest_options = settings or FeatureSettings(), forest or ForestOptions()
    n_trees, seed = forest_options.trees, forest_options.seed
    x, y, n_channels = _annotated_pixels_of(pairs, settings, tile_size)
    present = np.unique(y)
    if len(present) < 2:
        raise InputError("the annotations must mark at least two classes "
                         f"(found {'none' if not len(present) else 'only class ' + str(present[0])})")
    n_classes = int(present.max())
    if n_classes > MAX_CLASSES:
        raise InputError(f"at most {MAX_CLASSES} classes are supported, the annotations use {n_classes}")
    names = list(class_names) if class_names else [f"class {k}" for k in range(1, n_classes + 1)]
    if len(names) != n_classes:
        raise InputError(f"{len(names)} class names given for annotations using classes 1 to {n_classes}")
    forest = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=cpu_threads() or -1,
                                    oob_score=True, class_weight="balanced")
    with warnings.catch_warnings():  # with few trees some pixels are in every bootstrap: handled below
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
        forest.fit(x, y)
    forest.n_jobs = None  # do not store this machine's parallelism in the file
    judged = ~np.isnan(forest.oob_decision_function_).any(axis=1)
    out_of_bag = np.zeros_like(y)  # class 0 never matches: pixels no tree left out count as errors
    out_of_bag[judged] = forest.classes_[np.argmax(forest.oob_decision_function_[judged], axis=1)]
    per_class, overall = _accuracy("annotated_pixels", "out_of_bag_accuracy", y, out_of_bag, n_classes)
    rows = [{"class": name, **stats} for name, stats in zip(names, per_class)]
    training = {"n_trees": n_trees, "seed": seed, **overall}
    if validation_pairs:
        x_val, y_val, val_channels = _annotated_pixels_of(validation_pairs, settings, tile_size)
        if val_channels != n_channels:
            raise InputError(f"the validation images have {val_channels} channels, the training images {n_channels}")
        if y_val.size and y_val.max() > n_classes:
            raise InputError(f"the validation annotations use class {y_val.max()}, unknown in training")
        predicted = forest.predict(x_val) if y_val.size else y_val
        per_class, overall = _accuracy("validation_pixels", "validation_accuracy", y_val, predicted, n_classes)
        for row, stats in zip(rows, per_class):
            row.update(stats)
        training.update(overall)
    training["classes"] = rows
    return PixelClassifier(forest, settings, names, n_channels, training, _common_pixel_size(pairs))


def _common_pixel_size(pairs: Sequence[tuple]) -> float | None:
    """The pixel size the training images share (within 1 %), or None."""
    sizes = []
    for image_path, _, *names in pairs:
        with image_reader(image_path, name=names[0] if names else None) as reader:
            sizes.append(reader.pixel_size[1] if reader.pixel_size else None)
    if None in sizes or max(sizes) > min(sizes) * (1 + SAME_PIXEL_SIZE):
        return None
    return sizes[0]


def _annotated_pixels_of(pairs: Sequence[tuple], settings: FeatureSettings, tile_size: int
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and classes of the annotated pixels of several (image, annotation[, names])."""
    features, classes, channel_counts = [], [], set()
    for image_path, labels_path, *names in pairs:
        x, y, n_channels = annotated_pixels(image_path, labels_path, settings, tile_size, *names)
        features.append(x)
        classes.append(y)
        channel_counts.add(n_channels)
    if len(channel_counts) > 1:
        raise InputError(f"the images have different numbers of channels ({sorted(channel_counts)})")
    return np.concatenate(features), np.concatenate(classes), channel_counts.pop()


def _accuracy(count_key: str, accuracy_key: str, truth: np.ndarray, predicted: np.ndarray,
              n_classes: int) -> tuple[list[dict], dict]:
    """Pixel count and accuracy (recall) of each class, and overall, under the given key names."""
    per_class = []
    for k in range(1, n_classes + 1):
        of_class = truth == k
        per_class.append({count_key: int(of_class.sum()),
                          accuracy_key: float((predicted[of_class] == k).mean()) if of_class.any() else None})
    overall = {count_key: int(truth.size), accuracy_key: float((predicted == truth).mean()) if truth.size else None}
    return per_class, overall


def predict_tile(classifier: PixelClassifier, reader: TiledImageReader, tile: Tile) -> np.ndarray:
    """Per-class probabilities (h, w, K) for one tile; classes never annotated get 0."""
    features = features_of_tile(reader, tile, classifier.settings)
    flat = classifier.forest.predict_proba(features.reshape(-1, features.shape[-1]))
    probabilities = np.zeros((flat.shape[0], classifier.n_classes), np.float32)
    probabilities[:, classifier.forest.classes_ - 1] = flat
    return probabilities.reshape(tile.height, tile.width, classifier.n_classes)


def predict_tiles(classifier: PixelClassifier, reader: TiledImageReader,
                  tile_size: int = ClassifyPixelsOptions.tile_size
                  ) -> Iterator[tuple[Tile, np.ndarray]]:
    """Probabilities tile by tile, in TIFF tile order; memory follows the tile, not the image."""
    n_channels = 1 if len(reader.shape) == 2 else reader.shape[2]
    if n_channels != classifier.n_channels:
        raise InputError(f"the classifier was trained on {classifier.n_channels}-channel images; "
                         f"'{reader.name}' has {n_channels}")
    tiles = list(tile_grid(*reader.shape[:2], tile_size))
    yield from zip(tiles, map_in_order(lambda tile: predict_tile(classifier, reader, tile), tiles))


def classify_pixels(classifier: PixelClassifier, image_path, probabilities_path, classes_path,
                    options: ClassifyPixelsOptions | None = None, name: str | None = None
                    ) -> tuple[float, float] | None:
    """Write per-class probabilities (float32, YXS) and the class map (uint8, 1..K) of an image
    (a file, a reader or an array) as tiled OME-TIFFs, one tile at a time, at the pixel size
    ``options`` asks for or the classifier was trained at. Returns the outputs' pixel size."""
    options = options or ClassifyPixelsOptions()
    tile_size = options.tile_size
    with image_reader(image_path, name=name,
                      pixel_size=working_pixel_size(classifier, image_path, options, name)) as reader:
        pixel_size = reader.pixel_size
        shape = reader.shape[:2] + (classifier.n_classes,)
        tiles = (probabilities for _, probabilities in predict_tiles(classifier, reader, tile_size))
        write_tiled_image(probabilities_path, tiles, shape, np.float32, tile_size, pixel_size)
    with TiledImageReader(probabilities_path) as probabilities:
        class_tiles = (probabilities.read_region(t.y, t.x, t.height, t.width).argmax(axis=-1).astype(np.uint8) + 1
                       for t in tile_grid(*shape[:2], tile_size))
        write_tiled_image(classes_path, class_tiles, shape[:2], np.uint8, tile_size, pixel_size)
    return pixel_size


def working_pixel_size(classifier: PixelClassifier, image, options: ClassifyPixelsOptions,
                       name: str | None = None) -> float | None:
    """The pixel size (µm) ``classify_pixels`` works at: the one asked for, else the classifier's
    when the image records one too, else None (the image's own)."""
    if options.pixel_size is not None or classifier.pixel_size is None:
        return options.pixel_size
    with image_reader(image, name=name) as reader:
        return classifier.pixel_size if reader.pixel_size is not None else None


def objects_of_class(classifier: PixelClassifier, classes_path, probabilities_path, object_class: int,
                     labels_path, measurements_path, summary_path, min_area: int, min_distance: int | None = None,
                     image_name: str = "image", tile_size: int = ClassifyPixelsOptions.tile_size) -> dict:
    """Label the objects of class ``object_class`` (1..K) of a class map written by
    :func:`classify_pixels` (touching ones split by watershed when ``min_distance`` is given),
    measure them (intensity: the class's probability) and write the label image, the table of
    measurements and the one-row summary, which is returned. Memory follows the image's width and
    the tallest object, not its area (:mod:`tiled_objects`)."""
    from ..classic.measure import write_object_tables
    from ..classic.tiled_objects import objects_by_strips

    classifier.check_class(object_class)
    with TiledImageReader(classes_path) as classes, TiledImageReader(probabilities_path) as probabilities:
        height, width = classes.shape[:2]
        rows = objects_by_strips(
            lambda top, count: classes.read_region(top, 0, count, width) == object_class,
            lambda top, count: probabilities.read_region(top, 0, count, width)[..., object_class - 1],
            (height, width), tile_size, labels_path, min_area, min_distance, classes.pixel_size)
        return write_object_tables(measurements_path, summary_path, rows, classes.pixel_size, image_name,
                                   height * width, object_class=classifier.class_names[object_class - 1])


def training_table(classifier: PixelClassifier) -> tuple[list[dict], list[str]]:
    """The rows and columns of the training report: annotated pixels and accuracy per class,
    then 'all'."""
    training = classifier.training
    columns = ["class", "annotated_pixels", "out_of_bag_accuracy"]
    if "validation_accuracy" in training:
        columns += ["validation_pixels", "validation_accuracy"]
    return training["classes"] + [{"class": "all", **{c: training[c] for c in columns[1:]}}], columns


def save(classifier: PixelClassifier, path: str | os.PathLike) -> None:
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dlhisto_version": __version__,
        "features": classifier.settings.to_dict(), "class_names": classifier.class_names,
        "n_channels": classifier.n_channels, "feature_names": classifier.settings.names(classifier.n_channels),
        "pixel_size": classifier.pixel_size, "training": classifier.training,
    }
    save_forest(path, metadata, classifier.forest)


def load(path: str | os.PathLike, name: str | None = None) -> PixelClassifier:
    """Open a classifier written by :func:`save`; anything else is refused without being executed
    (:func:`forest_files.load_forest`), classifier.json checked against
    :class:`classifier_schema.ClassifierMetadata`."""
    from . import classifier_schema

    name = name or Path(path).name
    checked, forest = load_forest(path, name, FORMAT, "a dlhisto pixel classifier", classifier_schema.ClassifierMetadata)
    settings = FeatureSettings.from_dict(checked.features.model_dump())
    n_features = len(settings.names(checked.n_channels))
    known_classes = np.arange(1, len(checked.class_names) + 1)
    if getattr(forest, "n_features_in_", None) != n_features or not np.isin(forest.classes_, known_classes).all():
        raise InputError(f"'{name}': its forest does not fit classifier.json ({n_features} features, "
                         f"classes 1 to {len(checked.class_names)})")
    return PixelClassifier(forest, settings, list(checked.class_names), checked.n_channels, checked.training,
                           checked.pixel_size)


def _size(shape) -> str:
    return f"{shape[1]}x{shape[0]}" + (f"x{shape[2]}" if len(shape) == 3 else "")


