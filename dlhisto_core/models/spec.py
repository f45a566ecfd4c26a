"""What a dlhisto network is, without PyTorch: the names of its tasks, architectures and
encoders, their limits, and :class:`ModelSpec`, which model packages record. Loading a
package's metadata (and checking it) therefore needs no deep-learning library."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..base.errors import InputError
from ..base.bounds import MAX_IN_CHANNELS

ARCHITECTURE_NAMES = ("unet", "unetplusplus", "fpn")
"""segmentation-models-pytorch networks dlhisto builds (``networks.ARCHITECTURES``)."""
ENCODERS = ("resnet18", "resnet34", "mobilenet_v2")
ENCODER_WEIGHTS = ("imagenet", "none")
"""How a new network's encoder starts: from ImageNet weights where dlhisto ships them
(:data:`pretrained.IMAGENET`), or random."""
TASKS = ("semantic", "instance", "classification", "regression")
MAX_CLASSES = 256
"""Most classes (or regression output channels) a model may have: class maps are 8-bit."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network before loading its weights."""

    task: str
    out_channels: int
    """The network's output channels: one per class, or the channels of a regression (image
    restoration or translation). Packages record it as ``n_classes``."""
    in_channels: int
    architecture: str = "unet"
    encoder: str = "mobilenet_v2"

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputError(f"unknown task '{self.task}'; choose one of {', '.join(TASKS)}")
        if self.architecture not in ARCHITECTURE_NAMES:
            raise InputError(f"unknown architecture '{self.architecture}'; choose one of {', '.join(ARCHITECTURE_NAMES)}")
        if self.encoder not in ENCODERS:
            raise InputError(f"unknown encoder '{self.encoder}'; choose one of {', '.join(ENCODERS)}")
        if self.out_channels < (1 if self.task == "regression" else 2) or self.in_channels < 1:
            raise InputError(f"a model needs at least 2 classes (or 1 output channel) and 1 input channel, "
                             f"got {self.out_channels} and {self.in_channels}")
        if self.out_channels > MAX_CLASSES or self.in_channels > MAX_IN_CHANNELS:
            raise InputError(f"a model has at most {MAX_CLASSES} classes (or output channels) and "
                             f"{MAX_IN_CHANNELS} input channels, got {self.out_channels} and {self.in_channels}")

    def to_dict(self) -> dict:
        """The fields as a package's ``config.dlhisto.model`` holds them."""
        data = asdict(self)
        return {"task": data.pop("task"), "n_classes": data.pop("out_channels"), **data}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return cls(data["task"], data["n_classes"], data["in_channels"], data["architecture"], data["encoder"])


@dataclass(frozen=True)
class InstanceThresholds:
    """How the probabilities become objects (the module's docstring says how)."""

    interior: float = 0.5
    """A seed pixel has an interior probability above this."""
    foreground: float = 0.5
    """Seeds grow over pixels whose interior + boundary probability is above this."""
    growth: int = 2
    """... by at most this many pixels."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded, name: str) -> "InstanceThresholds":
        """The thresholds a package records (config.dlhisto.instances), checked."""
        try:
            thresholds = cls(float(recorded["interior"]), float(recorded["foreground"]), int(recorded["growth"]))
        except (KeyError, TypeError, ValueError):
            thresholds = None
        if thresholds is None or not (0 < thresholds.interior < 1 and 0 < thresholds.foreground < 1
                                      and 0 <= thresholds.growth <= MAX_GROWTH):
            raise InputError(f"'{name}': config.dlhisto.instances is not a set of thresholds "
                             f"(interior and foreground between 0 and 1, growth 0 to {MAX_GROWTH})")
        return thresholds


MAX_GROWTH = 16
"""Largest growth (pixels) a package may record: the halo of each tile in the second pass."""
