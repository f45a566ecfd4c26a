"""Object classification the QuPath way: a random forest on each object's measurements (shape,
stain intensities inside and around it, texture, neighbourhood; :mod:`classic.object_features`)
trained from a few classified objects, then applied to every object of a slide.

Training objects come from a table (label -> class), a class map (scribbles, or a type map:
each object takes the class of most of its pixels) or QuPath GeoJSON (classified detections,
annotations or points), read by :mod:`classic.object_classes`. A trained classifier is saved as
a zip like the pixel classifier (:mod:`forest_files`: the forest is never unpickled).

Examples
--------
Nuclei of test-data/nuclei.tif classed large or small by a user (here: by their area), learnt
from their measurements:

>>> import numpy as np
>>> from dlhisto_core import object_classifier
>>> from dlhisto_core.classic.object_classes import ObjectClasses
>>> from dlhisto_core.classic.object_features import object_features
>>> measured = object_features("test-data/nuclei_labels.tif", "test-data/nuclei.tif")
>>> large = measured.values[:, 0] > np.median(measured.values[:, 0])
>>> truth = ObjectClasses(measured.labels, large + 1, ["small", "large"])
>>> classifier = object_classifier.train([("test-data/nuclei.tif", "test-data/nuclei_labels.tif", truth)])
>>> classifier.training["out_of_bag_accuracy"] > 0.9
True
>>> result = object_classifier.classify_objects(classifier, "test-data/nuclei.tif", "test-data/nuclei_labels.tif")
>>> len(result.rows()), result.columns()[:5]
(112, ['label', 'centroid_y', 'centroid_x', 'class', 'p_large'])
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
from ..base.threads import cpu_threads
from ..classic.object_classes import ANNOTATION_KINDS, ObjectClasses, read_object_classes  # noqa: F401 (API)
from ..classic.object_features import ObjectFeatureOptions, object_features
from ..io.geojson import ExportOptions, class_colour, features_of_labels
from .forest_files import load_forest, save_forest
from .pixel_classifier import ForestOptions

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

FORMAT = "dlhisto-object-classifier"
FORMAT_VERSION = 1
OBJECT_COLUMNS = ("label", "centroid_y", "centroid_x", "class")
"""The first columns of the table of classified objects; then p_<class> for each class."""


@dataclass
class ObjectClassifier:
    forest: RandomForestClassifier
    feature_names: list[str]
    class_names: list[str]
    features: ObjectFeatureOptions = field(default_factory=ObjectFeatureOptions)
    pixel_size: float | None = None
    """The training label images' pixel size (µm), None when they record none."""
    training: dict = field(default_factory=dict)
    """Objects and out-of-bag accuracy (recall) per class and overall."""


@dataclass
class ClassifiedObjects:
    """Every object of a label image with its class and class probabilities."""

    labels: np.ndarray
    """(N,) object ids."""
    centroids: np.ndarray
    """(N, 2) row, column of each object's centre, in label-image pixels."""
    classes: np.ndarray
    """(N,) class numbers 1..K (0: none, e.g. no typed pixel under the object)."""
    probabilities: np.ndarray
    """(N, K): the classifier's, or the share of the object's pixels of each type."""
    class_names: list[str]

    def rows(self) -> list[dict]:
        """The table of classified objects (:data:`OBJECT_COLUMNS`, then p_<class>)."""
        return [{"label": int(label), "centroid_y": float(y), "centroid_x": float(x),
                 "class": self.class_names[k - 1] if k else "",
                 **{f"p_{c}": float(p) for c, p in zip(self.class_names, ps)}}
                for label, (y, x), k, ps in zip(self.labels, self.centroids, self.classes, self.probabilities)]

    def columns(self) -> list[str]:
        return [*OBJECT_COLUMNS, *(f"p_{c}" for c in self.class_names)]

    def as_object_classes(self) -> ObjectClasses:
        """The classed objects (those of class 0 left out)."""
        classed = self.classes > 0
        return ObjectClasses(self.labels[classed], self.classes[classed], self.class_names)


def train(examples: Sequence[tuple], class_names: Sequence[str] | None = None, forest: ForestOptions | None = None,
          features: ObjectFeatureOptions | None = None) -> ObjectClassifier:
    """Train a random forest on the features of the classified objects of (image, labels,
    :class:`ObjectClasses`[, image name, labels name]) examples (``dlhisto object_classifier_train``).

    Classes are numbered as ``class_names`` (default: the sorted names of all examples); an
    example's class not among them is refused. The accuracy is estimated out of bag.
    """
    from sklearn.ensemble import RandomForestClassifier

    if not examples:
        raise InputError("give at least one image with its objects and their classes")
    forest_options, features = forest or ForestOptions(), features or ObjectFeatureOptions()
    names = list(class_names) if class_names else sorted({n for *_, c in (e[:3] for e in examples) for n in c.names})
    x, y, sizes = [], [], set()
    for image, labels, classes, *display_names in examples:
        image_name, labels_name = display_names or (None, None)
        classes = classes.renumbered(names, f"the classes of '{labels_name or labels}'")
        table = object_features(labels, image, features, labels_name, image_name)
        index = np.searchsorted(table.labels, classes.labels)
        x.append(table.values[index])
        y.append(classes.classes)
        sizes.add(table.pixel_size)
    x_all, y_all = np.concatenate(x), np.concatenate(y)
    if len(np.unique(y_all)) < 2:
        raise InputError("the classified objects must hold at least two classes")
    model = RandomForestClassifier(n_estimators=forest_options.trees, random_state=forest_options.seed,
                                   n_jobs=cpu_threads() or -1, oob_score=True, class_weight="balanced")
    with warnings.catch_warnings():  # with few trees some objects are in every bootstrap: counted as errors
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
        model.fit(x_all, y_all)
    model.n_jobs = None
    judged = ~np.isnan(model.oob_decision_function_).any(axis=1)
    out_of_bag = np.zeros_like(y_all)
    out_of_bag[judged] = model.classes_[np.argmax(model.oob_decision_function_[judged], axis=1)]
    rows = [{"class": n, "objects": int((y_all == k).sum()),
             "out_of_bag_accuracy": float((out_of_bag[y_all == k] == k).mean()) if (y_all == k).any() else None}
            for k, n in enumerate(names, 1)]
    training = {"n_trees": forest_options.trees, "seed": forest_options.seed, "objects": int(len(y_all)),
                "out_of_bag_accuracy": float((out_of_bag == y_all).mean()), "classes": rows}
    pixel_size = sizes.pop() if len(sizes) == 1 else None
    return ObjectClassifier(model, table.names, names, features, pixel_size, training)


def classify_objects(classifier: ObjectClassifier, image, labels, image_name: str | None = None,
                     labels_name: str | None = None) -> ClassifiedObjects:
    """The class of every object of ``labels`` (a label image on the grid of ``image``, or made
    at another pixel size, e.g. by ``predict``: the image is then read at the labels' pixel size).
    """
    table = object_features(labels, image, classifier.features, labels_name, image_name)
    if table.names != classifier.feature_names:
        raise InputError(f"the classifier was trained on features {', '.join(classifier.feature_names[7:10])}...; "
                         f"this image gives {', '.join(table.names[7:10])}... (another kind of image)")
    n = len(classifier.class_names)
    probabilities = np.zeros((len(table.labels), n), np.float32)
    if len(table.labels):
        probabilities[:, classifier.forest.classes_ - 1] = classifier.forest.predict_proba(table.values)
    return ClassifiedObjects(table.labels, table.centroids, probabilities.argmax(axis=1) + 1, probabilities,
                             list(classifier.class_names))


def type_objects(labels, type_map, class_names: Sequence[str], labels_name: str | None = None,
                 type_map_name: str | None = None) -> ClassifiedObjects:
    """Every object of ``labels`` typed by the vote of its pixels in ``type_map`` (1..K, 0 =
    none; e.g. the class map a types network such as ``nuclei_types_he`` predicts, HoVer-Net's
    rule): its class is the type most of its pixels have, its probabilities the share of each."""
    from ..classic.cell_counts import object_centres
    from ..classic.object_classes import vote_shares

    centres, _, _ = object_centres(labels, labels_name)
    shares = vote_shares(type_map, labels, len(class_names), type_map_name, labels_name)
    found = np.zeros((len(centres.labels), len(class_names)), np.float32)
    index = np.searchsorted(centres.labels, shares.labels)
    found[index] = shares.shares
    classes = np.where(found.sum(axis=1) > 0, found.argmax(axis=1) + 1, 0)
    return ClassifiedObjects(centres.labels, np.stack([centres.rows, centres.columns], axis=1), classes, found,
                             list(class_names))


def classified_features(labels, classes: ObjectClasses, options: ExportOptions | None = None,
                        labels_name: str | None = None) -> Iterator[dict]:
    """The objects of ``labels`` as QuPath GeoJSON detections, each classified with its class's
    name and colour (objects without a class are left unclassified)."""
    from ..io.slides import image_reader

    by_label = dict(zip(classes.labels.tolist(), classes.classes.tolist()))
    with image_reader(labels, labels_name) as reader:
        for feature in features_of_labels(reader, options):
            k = by_label.get(feature["properties"]["measurements"]["label"])
            if k is not None:
                feature["properties"]["classification"] = {"name": classes.names[k - 1], "color": class_colour(k - 1)}
            yield feature


def training_table(classifier: ObjectClassifier) -> tuple[list[dict], list[str]]:
    """The training report: objects and out-of-bag accuracy per class, then 'all'."""
    training = classifier.training
    return training["classes"] + [{"class": "all", "objects": training["objects"],
                                   "out_of_bag_accuracy": training["out_of_bag_accuracy"]}], \
        ["class", "objects", "out_of_bag_accuracy"]


def save(classifier: ObjectClassifier, path: str | os.PathLike) -> None:
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "dlhisto_version": __version__,
                "feature_names": classifier.feature_names, "class_names": classifier.class_names,
                "ring_width": classifier.features.ring_width, "neighbour_radius": classifier.features.neighbour_radius,
                "pixel_size": classifier.pixel_size, "training": classifier.training}
    save_forest(path, metadata, classifier.forest)


def load(path: str | os.PathLike, name: str | None = None) -> ObjectClassifier:
    """Open a classifier written by :func:`save`; anything else is refused without being executed."""
    from . import classifier_schema

    name = name or Path(path).name
    checked, forest = load_forest(path, name, FORMAT, "a dlhisto object classifier",
                                  classifier_schema.ObjectClassifierMetadata)
    known_classes = np.arange(1, len(checked.class_names) + 1)
    if getattr(forest, "n_features_in_", None) != len(checked.feature_names) \
            or not np.isin(forest.classes_, known_classes).all():
        raise InputError(f"'{name}': its forest does not fit classifier.json ({len(checked.feature_names)} features, "
                         f"classes 1 to {len(checked.class_names)})")
    options = ObjectFeatureOptions(ring_width=checked.ring_width, neighbour_radius=checked.neighbour_radius)
    return ObjectClassifier(forest, list(checked.feature_names), list(checked.class_names), options,
                            checked.pixel_size, checked.training)

