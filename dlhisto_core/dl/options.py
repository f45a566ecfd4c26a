"""Options of the deep-learning steps (train, transfer, predict, classify), without PyTorch: each
parameter's default, bounds and choices, declared once, read by the Python API, the command line
(``bounds.add_option``) and the check of the Galaxy tools' parameters."""

from __future__ import annotations

from dataclasses import dataclass

from ..classic.segmentation import MAX_AREA
from ..base.errors import InputError
from ..io.pixel_size import PIXEL_SIZE_RANGE_UM
from ..models.spec import ENCODER_WEIGHTS, TASKS
from ..base.bounds import DEVICES, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_PATCH_SIZE, MAX_PATCHES_PER_IMAGE, MAX_SEED, PRECISIONS, bounded, check_bounds, check_choices, choice
from ..io.tiling import MAX_TILE_SIZE

SEGMENTATION_LOSSES = ("ce", "dice", "ce_dice")
REGRESSION_LOSSES = ("l1", "l2")
LOSSES = SEGMENTATION_LOSSES + REGRESSION_LOSSES
TARGET_NORMALIZATIONS = ("input", "dataset")
"""How regression targets are scaled: with their input's percentiles, or with those of all targets."""


def default_loss(task: str) -> str:
    """The loss a task trains with when none is chosen: l1 for regression, ce_dice for
    segmentation (tile classes always train with cross-entropy)."""
    return {"classification": "ce", "regression": "l1"}.get(task, "ce_dice")


@dataclass
class TrainOptions:
    """The training loop."""

    epochs: int = bounded(10, 1, MAX_EPOCHS)
    batch_size: int = bounded(8, 1, MAX_BATCH_SIZE)
    learning_rate: float = bounded(1e-3, 1e-9, 10)
    """The first epoch's; it decays along a cosine to almost 0 at the last (``loop.learning_rate_at``)."""
    loss: str | None = choice(None, LOSSES)
    """One of LOSSES; None: the task's default (:func:`default_loss`)."""
    validation_fraction: float = bounded(0.2, 0, 1)
    """Of the images held out whole to validate (segmentation with 5 images or more), else of the patches."""
    patience: int = bounded(8, 1, MAX_EPOCHS)
    """Stop when the validation score (Dice, instance F1, accuracy or PSNR) has not improved for this many epochs."""
    seed: int = bounded(0, 0, MAX_SEED)
    augment: bool = True
    """Flips, rotations, elastic deformation, colour jitter (:mod:`augmentation`)."""
    strong_augment: bool = False
    """With ``augment``, also scale (0.6-1.6x), stain (HED), intensity, blur, noise and, beside
    fluorescence nuclei, cytoplasm-like halos: for models meant to hold on other labs' images
    (the pretrained models train with it). Slower to learn: give it more epochs."""
    device: str = choice("auto", DEVICES)
    precision: str = choice("auto", PRECISIONS)
    """One of PRECISIONS: 'auto' is automatic mixed precision (float16) on CUDA, float32 on CPUs (:mod:`precision`)."""
    encoder_weights: str = choice("imagenet", ENCODER_WEIGHTS)
    """A new network's encoder: 'imagenet' starts it from ImageNet weights where dlhisto ships
    them (mobilenet_v2), 'none' from random ones. (Transfer learning starts from its own weights.)"""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)
        if not 0 < self.validation_fraction < 1:  # bounds are inclusive; both ends leave a split empty
            raise InputError(f"the validation fraction must be between 0 and 1, got {self.validation_fraction}")


@dataclass
class DataOptions:
    """What the network learns and the patches it learns from."""

    task: str = choice("instance", TASKS)
    """semantic: classes 0..K-1; instance: objects -> background/interior/boundary; classification:
    one class per image (tile); regression: the pixel values of target images."""
    patch_size: int = bounded(128, 16, MAX_PATCH_SIZE)
    """Side of the training patches in pixels: a multiple of 16 (32 for classification)."""
    patches_per_image: int = bounded(64, 1, MAX_PATCHES_PER_IMAGE)
    target_normalization: str = choice("input", TARGET_NORMALIZATIONS)
    """Regression: scale each target with its input's percentiles (input: restoration) or with
    the percentiles of all targets (dataset: another modality)."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)


@dataclass
class TransferOptions:
    """The two phases of fine-tuning (``training.fine_tune``)."""

    freeze_stages: int = bounded(5, 0, 5)
    """Encoder stages (from the input side) kept fixed in phase 1; 5: the whole encoder."""
    finetune_epochs: int = bounded(10, 0, MAX_EPOCHS)
    """Phase 2: epochs with every layer trainable (0: no phase 2)."""
    finetune_lr_factor: float = bounded(0.1, 1e-6, 10)
    """Phase 2 learning rate = this x the phase 1 learning rate."""

    def __post_init__(self):
        check_bounds(self)


@dataclass
class PredictOptions:
    """Whole-slide prediction."""

    tile_size: int = bounded(512, 64, MAX_TILE_SIZE)
    """Output tile size; a multiple of 32."""
    overlap: int = bounded(64, 0, MAX_TILE_SIZE)
    """Pixels by which neighbouring windows overlap and are blended; a multiple of 32, at most tile_size."""
    batch_size: int = bounded(4, 1, MAX_BATCH_SIZE)
    device: str = choice("auto", DEVICES)
    precision: str = choice("auto", PRECISIONS)
    """One of PRECISIONS: 'auto' is float16 autocast on CUDA, float32 on CPUs; 'bf16' is faster on
    CPUs with AVX-512 BF16 but less exact (:mod:`precision`)."""
    skip_background: bool = False
    min_tissue: float = bounded(0.01, 0, 1)
    """With skip_background: windows with a smaller fraction of tissue pixels are skipped."""
    min_area: int = bounded(0, 0, MAX_AREA)
    """Instance output: objects with a smaller interior (pixels) are dropped."""
    flips: bool = False
    """Test-time augmentation: average the network's outputs over the window and its three
    flips (4 times the work; smoother probabilities, a little more accurate)."""
    pixel_size: float | None = bounded(None, *PIXEL_SIZE_RANGE_UM)
    """Work at this pixel size (µm): read the slide's pyramid level nearest to it that is not
    coarser and resample the rest; the outputs have this pixel size. None: the pixel size the
    model was trained at when the package and the slide both record one, else the slide's own."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)
        if self.tile_size % 32:  # the ranges are the fields' bounds
            raise InputError(f"the tile size must be a multiple of 32, at least 64, got {self.tile_size}")
        if self.overlap % 32 or self.overlap > self.tile_size:
            raise InputError(f"the overlap must be a multiple of 32 between 0 and the tile size, got {self.overlap}")


@dataclass
class ClassifyOptions:
    """Tile classification (``dlhisto classify``)."""

    tile_size: int | None = bounded(None, 64, MAX_TILE_SIZE)
    """Cut each image into tiles of this size (a multiple of 32) and classify every tile; None:
    one class per image."""
    batch_size: int = bounded(16, 1, MAX_BATCH_SIZE)
    device: str = choice("auto", DEVICES)
    precision: str = choice("auto", PRECISIONS)
    """As :class:`PredictOptions`."""
    pixel_size: float | None = bounded(None, *PIXEL_SIZE_RANGE_UM)
    """Classify the images at this pixel size (µm), as :class:`PredictOptions` reads them."""
    skip_background: bool = False
    """With tiles: a tile with too little tissue (found on the slide's overview, as predict finds
    it) is not classified; its class is 'background' and it is left out of the tissue map."""
    min_tissue: float = bounded(0.5, 0, 1)
    """With skip_background: tiles with a smaller fraction of tissue are background."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)
        if self.tile_size is not None and self.tile_size % 32:
            raise InputError(f"the tile size must be a multiple of 32, at least 64, got {self.tile_size}")
