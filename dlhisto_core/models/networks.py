"""Networks: segmentation-models-pytorch U-Nets (and relatives) and tile classifiers built on
the same encoders, with the helpers transfer learning needs (freezing encoder stages, loading
weights that fit).

Models are always created without downloading anything (``encoder_weights=None``); pretrained
weights arrive as files and are loaded with :func:`load_matching_weights`.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from ..base.errors import InputError
from .spec import ARCHITECTURE_NAMES, ModelSpec

ARCHITECTURES = dict(zip(ARCHITECTURE_NAMES, (smp.Unet, smp.UnetPlusPlus, smp.FPN)))


class TileClassifier(nn.Module):
    """An smp encoder, global average pooling and a linear layer: one class per tile."""

    def __init__(self, encoder: str, in_channels: int, n_classes: int):
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, weights=None)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(self.encoder.out_channels[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """A freshly initialised network for ``spec`` (no download: pretrained weights come as files);
    with ``seed``, the same initial weights every time."""
    if seed is not None:
        torch.manual_seed(seed)
    if spec.task == "classification":
        return TileClassifier(spec.encoder, spec.in_channels, spec.out_channels)
    return ARCHITECTURES[spec.architecture](encoder_name=spec.encoder, encoder_weights=None,
                                            in_channels=spec.in_channels, classes=spec.out_channels)


def encoder_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The encoder's 5 stages from the input side, one per resolution: the stem (1/2), then
    each downsampling block (1/4 ... 1/32)."""
    encoder = model.encoder
    if hasattr(encoder, "layer1"):  # ResNets
        return [[encoder.conv1, encoder.bn1], [encoder.layer1], [encoder.layer2], [encoder.layer3],
                [encoder.layer4]]
    features = list(encoder.features)  # MobileNetV2: stages end where smp takes its skip features
    ends = [i + 1 for i in encoder._out_indexes] + [len(features)]
    starts = [0] + ends[:-1]
    return [features[a:b] for a, b in zip(starts, ends)][:5]


def freeze_encoder_stages(model: nn.Module, n_stages: int) -> int:
    """Stop training the first ``n_stages`` encoder stages (and unfreeze everything else).

    Returns the number of frozen parameters. Frozen stages keep their batch-norm statistics too.
    """
    stages = encoder_stages(model)
    if not 0 <= n_stages <= len(stages):
        raise InputError(f"the encoder has {len(stages)} stages; cannot freeze {n_stages}")
    for parameter in model.parameters():
        parameter.requires_grad = True
    frozen = 0
    for stage in stages[:n_stages]:
        for parameter in _parameters(stage):
            parameter.requires_grad = False
            frozen += parameter.numel()
    return frozen


def _parameters(stage: list[nn.Module]) -> list[nn.Parameter]:
    return [p for module in stage for p in module.parameters()]


def set_frozen_stages_to_eval(model: nn.Module) -> None:
    """Keep batch-norm statistics of frozen stages fixed while the rest trains."""
    for stage in encoder_stages(model):
        params = _parameters(stage)
        if params and not any(p.requires_grad for p in params):
            for module in stage:
                module.eval()


def load_matching_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> dict:
    """Copy every tensor of ``state_dict`` whose name and shape fit the model, under ``model`` or
    its ``encoder`` (a bare ImageNet encoder state dict fits the encoder).

    A first convolution made for another number of input channels (RGB weights, grey images) is
    adapted as segmentation-models-pytorch does: summed over the channels for one channel,
    repeated and rescaled for more. Refuses weights that fit nothing. Returns counts: loaded,
    ignored (in the file, not fitting), missing (in the model, left as they were).
    """
    own = model.state_dict()
    candidates = {}
    for prefix in ("", "encoder."):
        mapped = {prefix + k: v for k, v in state_dict.items()}
        fitting = {k: _fit_input_channels(v, own[k].shape) for k, v in mapped.items() if k in own}
        fitting = {k: v for k, v in fitting.items() if v is not None}
        if len(fitting) > len(candidates):
            candidates = fitting
    if not candidates:
        raise InputError(f"no weight in '{source}' fits this model (wrong architecture or encoder?)")
    model.load_state_dict(candidates, strict=False)
    return {"loaded": len(candidates), "ignored": len(state_dict) - len(candidates),
            "missing": len(own) - len(candidates)}


def _fit_input_channels(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``weight`` if it has ``shape``; a convolution differing only in its input channels, adapted;
    otherwise None."""
    if weight.shape == shape:
        return weight
    if weight.ndim != 4 or len(shape) != 4 or weight.shape[0] != shape[0] or weight.shape[2:] != shape[2:]:
        return None
    have, want = weight.shape[1], shape[1]
    if want == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-want // have)
    return weight.repeat(1, repeats, 1, 1)[:, :want] * (have / want)


