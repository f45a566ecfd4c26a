"""k-fold cross-validation of a segmentation method on annotated images, with a held-out test set.

Three roles, never mixed: the annotated images of the pool are cut into k folds; for each fold
the method is *trained* on the other folds, judged on the fold itself (*validation*), and on
the *test* images, which no fold ever trains or tunes on. Each role's score is pooled over its
images (as in :mod:`scoring`); the table ends with the mean and standard deviation over the
folds, the figures to report ("F1 0.81 +- 0.03 over 5 folds").

What "training" means per method:

- ``classic``: the smoothing sigma is chosen among candidates, the one scoring best on the
  training folds (the rest of the pipeline as given);
- ``pixel_classifier``: a random forest on filter-bank features of pixels drawn from the
  training folds' labels (a given number per class and image, like sparse annotations);
- ``unet``: a U-Net trained on patches of the training folds, which also choose its best epoch
  and (objects) tune its thresholds, as ``train`` does without validation images (a part of the
  training folds' images held out whole, or of their patches); then predicted tile by tile as
  ``predict`` does. The validation fold never chooses anything, so its score is a held-out one.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..evaluation import scoring
from ..base.errors import InputError
from ..imaging.features import FeatureSettings
from ..io.images import read_image, read_labels, single_channel
from ..io.writers import write_labels
from ..models.spec import ENCODERS
from ..base.bounds import MAX_SEED, MAX_TREES, bounded, check_bounds, check_choices, choice
from ..dl.options import DataOptions, TrainOptions
from ..imaging.preprocessing import MAX_SIGMA
from ..classic.segmentation import ClassicOptions, objects_from_mask, segment_classic

METHODS = ("classic", "pixel_classifier", "unet")
CROSSVAL_TASKS = ("instance", "semantic")
SUMMARY_ROLES = ("validation", "test")
INSTANCE_SCORES = ("f1", "precision", "recall", "average_precision", "panoptic_quality", "aji")
SEMANTIC_SCORES = ("pixel_accuracy", "mean_iou", "mean_dice")


class AnnotatedImage(NamedTuple):
    image: str
    labels: str
    name: str


@dataclass
class CrossValOptions:
    method: str = choice("classic", ("classic", "pixel_classifier", "unet"))
    task: str = choice("instance", CROSSVAL_TASKS)
    """instance: labels are objects (one id each), scored by matching at ``iou_threshold``;
    semantic: labels are classes 0..K-1, scored pixel by pixel (background 0 left out of the means)."""
    folds: int = bounded(5, 2, 100)
    seed: int = bounded(0, 0, MAX_SEED)
    iou_threshold: float = bounded(0.5, 0, 1)
    classic: ClassicOptions = field(default_factory=ClassicOptions)
    """classic: the pipeline's settings (sigma aside); every method: min_area and the watershed
    settings that turn a foreground into objects (U-Net: min_area applies to object interiors)."""
    sigmas: tuple[float, ...] = bounded((1.0, 2.0, 3.0, 4.0), 0, MAX_SIGMA)
    """classic: candidate smoothing sigmas, chosen on the training folds."""
    features: FeatureSettings = field(default_factory=FeatureSettings)
    pixels_per_class: int = bounded(2000, 1, 10**7)
    trees: int = bounded(100, 1, MAX_TREES)
    train: TrainOptions = field(default_factory=TrainOptions)
    """unet: each fold's training, as the train step takes it (the same defaults); its ``seed``
    is this ``seed``."""
    data: DataOptions = field(default_factory=DataOptions)
    """unet: the training patches (``patch_size``, ``patches_per_image``); their task is this ``task``."""
    encoder: str = choice("mobilenet_v2", ENCODERS)

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        if self.folds < 2:
            raise InputError(f"cross-validation needs at least 2 folds, got {self.folds}")
        if not 0 < self.iou_threshold <= 1:
            raise InputError(f"the IoU threshold must be between 0 and 1, got {self.iou_threshold}")
        if self.method == "classic" and not self.sigmas:
            raise InputError("give at least one candidate sigma")
        if self.pixels_per_class < 1:
            raise InputError(f"pixels per class must be at least 1, got {self.pixels_per_class}")
        check_bounds(self)
        check_choices(self)


Segmenter = Callable[[AnnotatedImage], np.ndarray]
"""A trained method: an annotated image -> its predicted labels (objects or classes)."""


def make_folds(n_images: int, folds: int, seed: int) -> list[list[int]]:
    """Indices of the images of each fold: a seeded shuffle dealt out like cards (sizes differ by
    at most one)."""
    order = np.random.default_rng(seed).permutation(n_images)
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def cross_validate(pool: Sequence[AnnotatedImage], test: Sequence[AnnotatedImage], options: CrossValOptions,
                   log: Callable[[str], None] | None = print) -> list[dict]:
    """k-fold cross-validation with a held-out test set (``dlhisto crossval``): rows (fold, role,
    images, trained on, chosen settings, scores) for every fold and role, then the mean and
    standard deviation of each score over the folds, per role.

    Examples
    --------
    >>> from dlhisto_core import AnnotatedImage, CrossValOptions, cross_validate
    >>> pool = [AnnotatedImage(f"test-data/nuclei_q{q}.tif", f"test-data/nuclei_q{q}_groundtruth.tif", f"q{q}")
    ...         for q in (1, 2, 3)]
    >>> rows = cross_validate(pool, [], CrossValOptions(folds=3, sigmas=(2.0, 3.0)), log=None)
    >>> mean = next(r for r in rows if r["fold"] == "mean")
    >>> mean["role"], 0.5 < mean["f1"] < 1
    ('validation', True)
    """
    if len(pool) < options.folds:
        raise InputError(f"{options.folds} folds need at least {options.folds} annotated images, got {len(pool)}")
    overlap = sorted({i.name for i in pool} & {i.name for i in test})
    if overlap:
        raise InputError(f"image '{overlap[0]}' is both in the cross-validation pool and in the test set")
    log = log or (lambda line: None)
    n_classes = _n_classes([*pool, *test], options.task)
    rows = []
    for k, validation_indices in enumerate(make_folds(len(pool), options.folds, options.seed), 1):
        training = [item for i, item in enumerate(pool) if i not in validation_indices]
        validation = [pool[i] for i in validation_indices]
        log(f"fold {k}/{options.folds}: training on {len(training)} image(s), validating on "
            + ", ".join(item.name for item in validation))
        with tempfile.TemporaryDirectory(prefix="dlhisto-crossval-") as work:
            segmenter, settings = TRAINERS[options.method](training, validation, options, n_classes, Path(work))
            for role, items in (("validation", validation), ("test", test)):
                if items:
                    scores = score(segmenter, items, options, n_classes)
                    rows.append({"fold": k, "role": role, "images": ",".join(i.name for i in items),
                                 "trained_on": len(training), **settings, **scores})
                    log(f"  {role}: " + ", ".join(f"{key} {scores[key]:.3f}" for key in _score_keys(options)[:3]))
    return rows + mean_and_sd(rows, _score_keys(options))


def describe(rows: Sequence[dict], options: CrossValOptions) -> list[str]:
    """A line per role of :func:`cross_validate`'s rows: the mean and sd of the main score."""
    key = INSTANCE_SCORES[0] if options.task == "instance" else "mean_iou"
    lines = []
    for row in rows:
        if row["fold"] == "mean":
            sd = next(r for r in rows if r["fold"] == "sd" and r["role"] == row["role"])[key]
            lines.append(f"{row['role']}: {key} {row[key]:.3f} +- {sd:.3f} over {options.folds} folds")
    return lines


def mean_and_sd(rows: Sequence[dict], keys: Sequence[str]) -> list[dict]:
    """Mean and sample standard deviation (ddof 1) of each score over the folds, per role."""
    summary = []
    for role in SUMMARY_ROLES:
        of_role = [r for r in rows if r["role"] == role]
        if not of_role:
            continue
        values = {key: [float(r[key]) for r in of_role] for key in keys}
        for statistic, reduce in (("mean", statistics.fmean), ("sd", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)):
            summary.append({"fold": statistic, "role": role, **{key: reduce(v) for key, v in values.items()}})
    return summary


def score(segmenter: Segmenter, items: Sequence[AnnotatedImage], options: CrossValOptions, n_classes: int) -> dict:
    """The role's score, pooled over its images."""
    loaded = [(read_labels(item.labels, item.name).data.astype(np.int64), segmenter(item), item.name) for item in items]
    if options.task == "instance":
        pooled = scoring.instance_rows(loaded, [options.iou_threshold])[-1]
        return {"tp": pooled["tp"], "fp": pooled["fp"], "fn": pooled["fn"],
                **{key: pooled[key] for key in INSTANCE_SCORES}}
    rows, confusion = scoring.class_rows(loaded, [str(k) for k in range(n_classes)])
    foreground = [r for r in rows if r["image"] == scoring.ALL_IMAGES][1:]
    return {"pixel_accuracy": float(np.trace(confusion) / confusion.sum()),
            "mean_iou": float(np.mean([r["iou"] or 0.0 for r in foreground])),
            "mean_dice": float(np.mean([r["dice"] or 0.0 for r in foreground]))}


def _score_keys(options: CrossValOptions) -> tuple[str, ...]:
    return INSTANCE_SCORES if options.task == "instance" else SEMANTIC_SCORES


def _n_classes(items: Sequence[AnnotatedImage], task: str) -> int:
    """Classes of the semantic task (largest label + 1, at least 2); 2 (background, object) for objects."""
    if task == "instance":
        return 2
    return max(2, max(int(read_labels(item.labels, item.name).data.max()) for item in items) + 1)


def _plane(item: AnnotatedImage) -> np.ndarray:
    image = read_image(item.image, item.name)
    plane = single_channel(image.data, None)
    labels_shape = read_labels(item.labels, item.name).data.shape
    if plane.shape != labels_shape:
        raise InputError(f"labels of '{item.name}' ({labels_shape[1]}x{labels_shape[0]}) do not match the size of "
                         f"the image ({plane.shape[1]}x{plane.shape[0]})")
    return plane


def train_classic(training, validation, options: CrossValOptions, n_classes: int, work: Path):
    """Choose sigma on the training folds by F1 (instance) or mean IoU (semantic)."""
    if options.task == "semantic" and n_classes > 2:
        raise InputError(f"the classic pipeline separates objects from background; the labels have {n_classes} classes")
    planes = {item.name: _plane(item) for item in [*training, *validation]}

    def segmenter_for(sigma: float) -> Segmenter:
        classic = replace(options.classic, sigma=sigma)

        def segment(item: AnnotatedImage) -> np.ndarray:
            plane = planes[item.name] if item.name in planes else _plane(item)
            labels = segment_classic(plane, classic).labels.astype(np.int64)
            return labels if options.task == "instance" else (labels > 0).astype(np.int64)
        return segment

    key = _score_keys(options)[0]
    trials = [(score(segmenter_for(s), training, options, n_classes)[key], -s, s) for s in options.sigmas]
    best = max(trials)[2]  # best score; on a tie the smaller sigma
    return segmenter_for(best), {"sigma": best}


def train_pixel_classifier(training, validation, options: CrossValOptions, n_classes: int, work: Path):
    """Random forest on pixels drawn from the training labels (class k+1 = label class k; for
    objects: 1 background, 2 object)."""
    from ..ml import pixel_classifier

    rng = np.random.default_rng(options.seed)
    pairs = []
    for i, item in enumerate(training):
        labels = read_labels(item.labels, item.name).data
        classes = (labels > 0).astype(np.int64) if options.task == "instance" else labels.astype(np.int64)
        annotation = np.zeros(classes.shape, np.uint8)
        for k in np.unique(classes):
            where = np.flatnonzero(classes == k)
            annotation.flat[rng.choice(where, min(options.pixels_per_class, where.size), replace=False)] = k + 1
        path = work / f"annotation_{i}.tif"
        write_labels(path, annotation)
        pairs.append((item.image, path, item.name, f"labels of {item.name}"))
    classifier = pixel_classifier.train(pairs, options.features,
                                        forest=pixel_classifier.ForestOptions(options.trees, options.seed))

    def segment(item: AnnotatedImage) -> np.ndarray:
        probabilities, classes = work / "probabilities.tif", work / "classes.tif"
        pixel_classifier.classify_pixels(classifier, item.image, probabilities, classes, name=item.name)
        predicted = read_labels(classes).data.astype(np.int64) - 1
        if options.task == "instance":
            classic = options.classic
            return objects_from_mask(predicted == 1, classic.min_area,
                                     classic.min_distance if classic.watershed else None).astype(np.int64)
        return predicted
    return segment, {"pixels_per_class": options.pixels_per_class}


def train_unet(training, validation, options: CrossValOptions, n_classes: int, work: Path):
    """U-Net trained, stopped early and tuned on the training folds alone (``train``'s own split);
    ``validation`` only scores it."""
    from ..dl import prediction
    from ..dl.training import train

    def pairs(items):
        return [(item.image, item.name) for item in items], [(item.labels, f"labels of {item.name}") for item in items]

    images, labels = pairs(training)
    trained = train(images, labels,
                    data=replace(options.data, task=options.task), options=replace(options.train, seed=options.seed),
                    architecture="unet", encoder=options.encoder, log=None)
    model, spec, state = trained.model, trained.spec, trained.state
    predict_options = prediction.PredictOptions(tile_size=256, overlap=64, batch_size=options.train.batch_size,
                                                device=options.train.device, min_area=options.classic.min_area)

    def segment(item: AnnotatedImage) -> np.ndarray:
        output = work / "prediction.tif"
        if options.task == "instance":
            prediction.predict_slide(model, spec, item.image, predict_options, objects_path=output, name=item.name,
                                     thresholds=trained.tuning.thresholds)
        else:
            prediction.predict_slide(model, spec, item.image, predict_options, classes_path=output, name=item.name)
        return read_labels(output).data.astype(np.int64)
    tuned = {} if trained.tuning is None else {"tuned_on": trained.tuning.images}
    return segment, {"best_epoch": state.best_epoch, **tuned}


TRAINERS = {"classic": train_classic, "pixel_classifier": train_pixel_classifier, "unet": train_unet}
