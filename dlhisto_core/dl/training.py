"""Training and transfer learning as functions: what ``dlhisto train`` and ``dlhisto transfer``
(and the Galaxy tools of the same names) do, for a Python user.

:func:`train` cuts patches from annotated images and trains a network from scratch;
:func:`transfer` starts from a model package or a weights file and fine-tunes in two phases
(:func:`fine_tune`); both return a :class:`TrainedModel`, whose :meth:`TrainedModel.save` writes
the bioimage.io package, the history and the training curve.

Examples
--------
>>> from dlhisto_core.dl import training
>>> trained = training.train([("test-data/nuclei.tif", "nuclei.tif")],
...                          labels=[("test-data/nuclei_groundtruth.tif", "nuclei_groundtruth.tif")],
...                          data=training.DataOptions(patch_size=64, patches_per_image=8),
...                          options=training.TrainOptions(epochs=1, batch_size=4, device="cpu"),
...                          encoder="mobilenet_v2", log=None)
>>> trained.spec.task, trained.class_names
('instance', ['background', 'interior', 'boundary'])
>>> trained.state.epoch
1
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import augmentation, instances, loop, prediction
from .patches import PatchSet, sample_patches, sample_tiles
from ..models import networks, packages, pretrained
from ..imaging import stain
from .options import DataOptions, TrainOptions, TransferOptions
from .loop import TrainState
from ..base.errors import InputError
from ..io.slides import image_reader
from ..io.images import read_image, read_labels
from ..io.inputs import Named, named
from ..imaging.stain import StainReference
from ..models.spec import InstanceThresholds, ModelSpec
from ..io.outputs import outputs_together
from ..io.tables import read_class_regions

__all__ = ["DataOptions", "TransferOptions", "TrainOptions", "TrainedModel", "train", "transfer", "fine_tune"]

MAX_IMAGE_NAMES = 1000
"""Names of training images a package records (config.dlhisto.training.images); the model card shows a few."""
HOLD_OUT_MIN_IMAGES = 5
"""Segmentation with at least this many annotated images and no validation images given: a
fraction of the images is held out whole to validate, not a fraction of the patches (patches
of one image are alike, so a patch split flatters the model and cannot score whole objects)."""
TUNING_PIXELS = 16 * 2**20
"""Instance models: the object thresholds are tuned on whole annotated images up to this many pixels in all."""


@dataclass
class TrainedModel:
    """A trained network with what its package records."""

    model: torch.nn.Module
    spec: ModelSpec
    state: TrainState
    """Epochs run, best epoch and score, per-epoch history."""
    class_names: list[str]
    images: list[Named]
    data: DataOptions
    options: TrainOptions
    target_normalization: dict | None = None
    origin: str = "trained from scratch"
    stain_reference: StainReference | None = None
    """The stain reference the training images were mapped onto (predict applies it too)."""
    tuning: instances.Tuning | None = None
    """Instance models: the object thresholds, tuned on whole annotated images."""

    def save(self, package: str | os.PathLike, history: str | os.PathLike | None = None,
             curve: str | os.PathLike | None = None, name: str = "dlhisto U-Net", author: str = "dlhisto user") -> None:
        """Write the bioimage.io model package and, if given, the history (JSON) and the training
        curve (PNG): all of them, or none if anything fails."""
        state, spec = self.state, self.spec
        network = {"classification": f"tile classifier ({spec.encoder})",
                   "regression": f"image-to-image (regression) {spec.architecture} ({spec.encoder})"}.get(
            spec.task, f"{spec.task} segmentation {spec.architecture} ({spec.encoder})")
        metric = {"accuracy": "accuracy", "psnr": "PSNR (dB)", "f1": "instance F1 (IoU 0.5, whole images)"}.get(
            state.metric, "Dice")
        training = {"epochs_run": state.epoch, "best_epoch": state.best_epoch,
                    f"best_val_{state.metric}": state.best_score,
                    "loss": "ce" if spec.task == "classification" else self.options.loss or loop.default_loss(spec.task),
                    "patch_size": self.data.patch_size, "seed": self.options.seed, "origin": self.origin,
                    "augmentation": augmentation.describe(self.options.augment, self.options.strong_augment),
                    "images": [image_name for _, image_name in self.images][:MAX_IMAGE_NAMES]}
        info = packages.PackageInfo(
            name=name, description=f"{network} {self.origin} with dlhisto on {len(self.images)} image(s); "
            f"best validation {metric} {state.best_score:.3f} at epoch {state.best_epoch}.",
            class_names=self.class_names, channel_names=[f"channel {c + 1}" for c in range(spec.in_channels)],
            authors=[author], training=training, pixel_size=common_pixel_size(self.images),
            stain_reference=None if self.stain_reference is None else asdict(self.stain_reference),
            instances=None if self.tuning is None else {
                **self.tuning.thresholds.to_dict(), "tuned_on": self.tuning.images, "f1": self.tuning.f1,
                "default_f1": self.tuning.default_f1,
                "panoptic_quality": self.tuning.panoptic_quality, "objects": self.tuning.n_objects})
        first = read_image(*self.images[0]).data
        with outputs_together(package, history, curve) as (package_part, history_part, curve_part):
            packages.export_package(self.model, spec, info, test_patch(first), package_part,
                                         self.target_normalization)
            loop.write_history(state, history_part, curve_part, title=f"{name}: {spec.task}")


def common_pixel_size(images: Sequence[Named]) -> float | None:
    """The pixel size (µm) that all ``images`` record (within 1 %, square pixels), or None."""
    sizes = []
    for path, name in images:
        with image_reader(path, name) as reader:
            if reader.pixel_size is None:
                return None
            sizes += list(reader.pixel_size)
    return float(np.mean(sizes)) if max(sizes) <= min(sizes) * 1.01 else None


def train(images: Sequence[Named | str], labels: Sequence[Named | str] | None = None, *,
          targets: Sequence[Named | str] | None = None, tile_classes: Named | str | None = None,
          class_names: Sequence[str] | None = None, validation: tuple[Sequence, Sequence] | None = None,
          data: DataOptions | None = None, options: TrainOptions | None = None,
          architecture: str = ModelSpec.architecture,
          encoder: str = ModelSpec.encoder, checkpoint: str | os.PathLike | None = None,
          stain_reference: StainReference | None = None, log: Callable[[str], None] | None = print) -> TrainedModel:
    """Train a network from scratch on annotated images.

    Parameters
    ----------
    images : list of paths or (path, name) pairs
        Training images (TIFF, OME-TIFF, PNG, JPEG).
    labels : list, optional
        Semantic and instance tasks: one label image per image, in the same order.
    targets : list, optional
        Regression: one target image per image (e.g. the clean image of a noisy one).
    tile_classes : path or (path, name), optional
        Classification: a table of image name and class, or of classed tiles of the images
        (image, x, y, width, height, class), as :func:`tables.read_class_regions` reads it.
    class_names : list of str, optional
        Names of the classes 0..K-1 (or of a regression's output channels).
    validation : (images, labels or targets), optional
        Images that validate (early stopping, best epoch); never trained on. By default,
        segmentation with :data:`HOLD_OUT_MIN_IMAGES` images or more holds out
        ``options.validation_fraction`` of them (seeded), fewer images a fraction of the patches.
        Instance models are scored on them whole, by the F1 of their objects at IoU 0.5, and
        tune their object thresholds on them (else on the training images).
    data, options : DataOptions, TrainOptions, optional
        Task and patches; optimisation. Defaults when not given.
    architecture, encoder : str
        The network (``unet``, ``unetplusplus``, ``fpn``) and its encoder.
    checkpoint : path, optional
        Written after every epoch; a run finding one resumes from it.
    stain_reference : stain.StainReference, optional
        Map the stains of the (RGB brightfield) images onto this reference before training;
        the package records it and ``predict`` maps slides onto it too.
    log : callable, optional
        Receives one line per epoch; None for silence.

    Returns
    -------
    TrainedModel
        The best network (by validation score) and what its package records.
    """
    data = data or DataOptions()
    options = _options(options, data)
    images = named(images)
    split = None
    if validation is None and data.task in ("instance", "semantic") and labels \
            and len(labels) == len(images) >= HOLD_OUT_MIN_IMAGES:
        images, labels, validation = _held_out(images, named(labels), options)
        (log or _quiet)(f"validation: {len(validation[0])} of {len(images) + len(validation[0])} images held out "
                        f"whole ({', '.join(name for _, name in validation[0])})")
    if validation:
        if data.task == "classification":
            raise InputError("validation images are for segmentation and regression; tile classifiers "
                             "validate on a fraction of the patches")
        n_training = len(images) * data.patches_per_image
        images, second = images + named(validation[0]), [*(labels or targets or []), *validation[1]]
        labels, targets = (None, second) if data.task == "regression" else (second, None)
    with tempfile.TemporaryDirectory(prefix="dlhisto-train-") as work:
        patches, names = _patches(images, labels, targets, tile_classes, class_names, data, options, Path(work),
                                  stain_reference)
        if validation:
            split = (list(range(n_training)), list(range(n_training, patches.n_patches)))
        spec = ModelSpec(data.task, patches.out_channels, patches.n_channels, architecture, encoder)
        model = networks.build_model(spec, seed=options.seed)
        origin = _start_encoder(model, spec, options.encoder_weights, log or _quiet)
        tuning_set = ((named(validation[0]), named(validation[1]), "validation images") if validation
                      else (images, named(labels or []), "training images"))
        scorer = instance_scorer(spec, *tuning_set[:2], stain_reference) \
            if validation and data.task == "instance" else None
        state = loop.fit(model, patches.path, spec.out_channels, options,
                               checkpoint or Path(work) / "checkpoint.pt", log=log or _quiet, split=split,
                               scorer=scorer)
    tuning = tune_objects(model, spec, *tuning_set, stain_reference, log or _quiet) if data.task == "instance" else None
    return TrainedModel(model, spec, state, names, images, data, options, patches.target_normalization,
                        origin=origin, stain_reference=stain_reference, tuning=tuning)


def _held_out(images: list[Named], labels: list[Named], options: TrainOptions) -> tuple[list, list, tuple]:
    """(training images, their labels, (validation images, their labels)): a seeded
    ``options.validation_fraction`` of the images, at least one, held out whole."""
    n = len(images)
    chosen = set(np.random.default_rng(options.seed).permutation(n)[:max(1, round(n * options.validation_fraction))])
    keep = [k for k in range(n) if k not in chosen]
    held = sorted(chosen)
    return ([images[k] for k in keep], [labels[k] for k in keep],
            ([images[k] for k in held], [labels[k] for k in held]))


def _start_encoder(model: torch.nn.Module, spec: ModelSpec, encoder_weights: str, log) -> str:
    """Load the encoder's ImageNet weights when asked and shipped; returns the model's origin."""
    weights = pretrained.imagenet_state_dict(spec.encoder) if encoder_weights == "imagenet" else None
    if weights is None:
        return "trained from scratch"
    counts = networks.load_matching_weights(model, weights, pretrained.IMAGENET[spec.encoder].describe())
    log(f"encoder started from ImageNet weights: {counts['loaded']} tensors")
    return "trained from ImageNet encoder weights"


def transfer(pretrained: Named | str, images: Sequence[Named | str], labels: Sequence[Named | str] | None = None,
             *, targets: Sequence[Named | str] | None = None, tile_classes: Named | str | None = None,
             class_names: Sequence[str] | None = None, data: DataOptions | None = None,
             options: TrainOptions | None = None, phases: TransferOptions | None = None,
             architecture: str = ModelSpec.architecture, encoder: str = ModelSpec.encoder,
             checkpoint: str | os.PathLike | None = None, stain_reference: StainReference | None = None,
             log: Callable[[str], None] | None = print) -> TrainedModel:
    """Fine-tune a pretrained network on annotated images (:func:`fine_tune`).

    ``pretrained`` is a dlhisto model package (which brings its architecture and encoder) or a
    PyTorch state dict / safetensors file (e.g. ImageNet encoder weights) for the network named by
    ``architecture`` and ``encoder``; its weights are read without unpickling code, and those that
    do not fit the new network (another number of classes, say) are left as initialised. The
    other parameters are those of :func:`train`; ``options.epochs`` is the length of phase 1.

    Examples
    --------
    The test U-Net, fine-tuned on one quadrant of the nuclei image (the package brings its
    encoder):

    >>> from dlhisto_core import DataOptions, TrainOptions, TransferOptions, transfer
    >>> trained = transfer("test-data/nuclei_unet.zip", ["test-data/nuclei_q1.tif"],
    ...                    labels=["test-data/nuclei_q1_groundtruth.tif"],
    ...                    data=DataOptions(patch_size=64, patches_per_image=8),
    ...                    options=TrainOptions(epochs=1, batch_size=4, device="cpu"),
    ...                    phases=TransferOptions(finetune_epochs=1), log=None)
    >>> trained.spec.out_channels, trained.spec.encoder, trained.origin
    (3, 'mobilenet_v2', "fine-tuned from 'nuclei_unet.zip'")
    """
    data, phases = data or DataOptions(), phases or TransferOptions()
    options = _options(options, data)
    pretrained_path, name = named([pretrained])[0]
    images = named(images)
    log = log or _quiet
    with tempfile.TemporaryDirectory(prefix="dlhisto-transfer-") as work:
        patches, names = _patches(images, labels, targets, tile_classes, class_names, data, options, Path(work),
                                  stain_reference)
        if packages.is_package(pretrained_path):
            source, source_spec, _ = packages.load_package(pretrained_path, name)
            weights, architecture, encoder = source.state_dict(), source_spec.architecture, source_spec.encoder
        else:
            weights = packages.read_state_dict(pretrained_path, name)
        spec = ModelSpec(data.task, patches.out_channels, patches.n_channels, architecture, encoder)
        model = networks.build_model(spec, seed=options.seed)
        counts = networks.load_matching_weights(model, weights, name)
        log(f"pretrained weights from '{name}': {counts['loaded']} tensors loaded, {counts['ignored']} did not fit, "
            f"{counts['missing']} of the model left as initialised")
        state = fine_tune(model, patches.path, spec.out_channels, options, phases,
                          checkpoint or Path(work) / "checkpoint.pt", log)
    tuning = tune_objects(model, spec, images, named(labels), "training images", stain_reference, log) \
        if data.task == "instance" else None
    return TrainedModel(model, spec, state, names, images, data, options, patches.target_normalization,
                        origin=f"fine-tuned from '{name}'", stain_reference=stain_reference, tuning=tuning)


def fine_tune(model: torch.nn.Module, patches: str | os.PathLike, out_channels: int, options: TrainOptions,
              phases: TransferOptions, checkpoint: str | os.PathLike, log: Callable[[str], None] = print,
              split: tuple[Sequence[int], Sequence[int]] | None = None) -> TrainState:
    """Two-phase transfer learning: ``phases.freeze_stages`` encoder stages frozen for
    ``options.epochs`` epochs, then every layer trainable at the learning rate x
    ``phases.finetune_lr_factor`` for ``phases.finetune_epochs``. If phase 2 ends below the best
    score of phase 1, the model keeps the weights of phase 1. Phase 1 checkpoints beside
    ``checkpoint`` (``.frozen``); both resume."""
    checkpoint = Path(checkpoint)
    frozen = networks.freeze_encoder_stages(model, phases.freeze_stages)
    log(f"phase 1: {phases.freeze_stages} encoder stage(s) frozen ({frozen} parameters), {options.epochs} epochs")
    first = loop.fit(model, patches, out_channels, options, checkpoint.with_name(checkpoint.name + ".frozen"),
                           log=log, split=split)
    if not phases.finetune_epochs:
        return first
    networks.freeze_encoder_stages(model, 0)
    best_frozen = {k: v.clone() for k, v in model.state_dict().items()}
    finetune = dataclasses.replace(options, epochs=phases.finetune_epochs,
                                   learning_rate=options.learning_rate * phases.finetune_lr_factor)
    log(f"phase 2: all layers trainable, learning rate {finetune.learning_rate:g}, {phases.finetune_epochs} epochs")
    second = loop.fit(model, patches, out_channels, finetune, checkpoint, log=log, split=split)
    if second.best_score < first.best_score:
        model.load_state_dict(best_frozen)
    return loop.join_phases(first, second)


def tune_objects(model: torch.nn.Module, spec: ModelSpec, images: list[Named], labels: list[Named], which: str,
                 stain_reference: StainReference | None = None, log: Callable[[str], None] = print) -> instances.Tuning:
    """The object thresholds of an instance model (:func:`instances.tune_thresholds`), tuned on its
    probabilities of whole annotated images, the first up to :data:`TUNING_PIXELS` in all;
    ``which`` says which images they are (recorded in the package)."""
    pairs = [(probabilities(model), truth) for probabilities, truth in _tuning_pairs(spec, images, labels,
                                                                                      stain_reference)]
    tuning = dataclasses.replace(instances.tune_thresholds(pairs), images=f"{which} ({len(pairs)})")
    t = tuning.thresholds
    log(f"object thresholds tuned on {len(pairs)} {which}: interior {t.interior:g}, foreground {t.foreground:g}, "
        f"growth {t.growth} px (F1 {tuning.f1:.3f} at IoU 0.5)")
    return tuning


def instance_scorer(spec: ModelSpec, images: list[Named], labels: list[Named],
                    stain_reference: StainReference | None = None) -> Callable[[torch.nn.Module], float]:
    """A model's F1 at IoU 0.5 on whole annotated images (the first up to :data:`TUNING_PIXELS`),
    with the default object thresholds: the per-epoch score of :func:`train` with validation
    images (tuning each epoch would chase noise)."""
    loaders = list(_tuning_pairs(spec, images, labels, stain_reference))

    def score(model: torch.nn.Module) -> float:
        pairs = [(probabilities(model), truth) for probabilities, truth in loaders]
        return instances.objects_f1(pairs, InstanceThresholds()).f1
    return score


def _tuning_pairs(spec: ModelSpec, images: list[Named], labels: list[Named], stain_reference: StainReference | None):
    """(probabilities of a model, true labels) per annotated image, the first up to
    :data:`TUNING_PIXELS`; the probabilities as a function of the model."""
    pixels = 0
    for (image, image_name), (label, label_name) in zip(images, labels):
        truth = read_labels(label, label_name).data
        if pixels and pixels + truth.size > TUNING_PIXELS:
            return
        with image_reader(image, name=image_name) as reader:
            if reader.shape[:2] != truth.shape:
                raise InputError(f"'{label_name}' is {truth.shape[1]} x {truth.shape[0]} px but '{image_name}' "
                                 f"{reader.shape[1]} x {reader.shape[0]}")
        pixels += truth.size

        def probabilities(model, image=image, image_name=image_name):
            with image_reader(image, name=image_name) as reader:
                source = reader if stain_reference is None else stain.NormalizedReader(reader, stain_reference)
                return prediction.probabilities_in_memory(model, spec, source)
        yield probabilities, truth


def test_patch(image: np.ndarray) -> np.ndarray:
    """A centred (C, Y, X) crop whose sides are multiples of 32, at least 64 (reflect-padded)."""
    data = image[..., None] if image.ndim == 2 else image
    sides = [min(256, max(64, n // 32 * 32)) for n in data.shape[:2]]
    pads = [(0, max(0, s - n)) for s, n in zip(sides, data.shape[:2])] + [(0, 0)]
    data = np.pad(data, pads, mode="reflect")
    y0, x0 = (data.shape[0] - sides[0]) // 2, (data.shape[1] - sides[1]) // 2
    return np.moveaxis(data[y0:y0 + sides[0], x0:x0 + sides[1]], -1, 0).astype(np.float32)


def _options(options: TrainOptions | None, data: DataOptions) -> TrainOptions:
    """The training options, checked against the task before any patch is cut."""
    options = options or TrainOptions()
    loop.make_loss(options.loss, data.task)  # refuses another task's loss
    return options


def _patches(images: list[Named], labels, targets, tile_classes, class_names, data: DataOptions,
             options: TrainOptions, work: Path, stain_reference: StainReference | None = None
             ) -> tuple[PatchSet, list[str]]:
    """Check the training inputs and cut the patches (from the images mapped onto
    ``stain_reference`` when given); returns them and the class names."""
    class_names = list(class_names or [])
    if stain_reference is not None:
        images = _stain_normalized(images, stain_reference, work)
    if data.task == "classification":
        if not tile_classes:
            raise InputError("tile classification needs a table of image name and class (tile classes)")
        regions = read_class_regions(*named([tile_classes])[0])
        given = {name for _, name in images}
        missing = [name for _, name in images if name not in {image for image, _, _ in regions}]
        if missing:
            raise InputError(f"no class for image '{missing[0]}' in the table"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        used = [(image, cls, box) for image, cls, box in regions if image in given]
        class_names = class_names or sorted({cls for _, cls, _ in used})
        unknown = sorted({cls for _, cls, _ in used} - set(class_names))
        if unknown:
            raise InputError(f"class '{unknown[0]}' of the table is not among the class names {', '.join(class_names)}")
        paths = {name: path for path, name in images}
        tiles = [(paths[image], class_names.index(cls), image, box) for image, cls, box in used]
        patches = sample_tiles(tiles, work / "patches.h5", data.patch_size, data.patches_per_image,
                                       options.seed)
        patches.out_channels = len(class_names)
        return patches, class_names
    second, what = (targets, "target images") if data.task == "regression" else (labels, "label images")
    if not second or len(images) != len(second):
        raise InputError(f"{len(images)} images but {len(second or [])} {what}: give one per image")
    pairs = [(image, other, image_name, other_name) for (image, image_name), (other, other_name)
             in zip(images, named(second))]
    patches = sample_patches(pairs, work / "patches.h5", data.task, data.patch_size, data.patches_per_image,
                                     options.seed, data.target_normalization)
    if data.task == "regression":  # the names of the output channels
        class_names = class_names or [f"channel {k + 1}" for k in range(patches.out_channels)]
    else:
        class_names = class_names or (["background", "interior", "boundary"] if data.task == "instance"
                                      else [f"class {k}" for k in range(patches.out_channels)])
    if len(class_names) != patches.out_channels:
        what = "output channels" if data.task == "regression" else f"classes (0..{patches.out_channels - 1})"
        raise InputError(f"{len(class_names)} class names for {patches.out_channels} {what}")
    return patches, class_names


def _stain_normalized(images: list[Named], reference: StainReference, work: Path) -> list[Named]:
    """Copies of the images with their stains mapped onto ``reference`` (same names)."""
    copies = []
    for index, (path, name) in enumerate(images):
        copy = work / f"stain-normalised-{index}.tif"
        stain.normalize_slide(path, copy, reference, name=name)
        copies.append((str(copy), name))
    return copies


def _quiet(line: str) -> None:
    """A log that drops its lines."""
