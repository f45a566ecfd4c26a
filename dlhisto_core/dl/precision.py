"""Numerical precision and memory layout of the networks: mixed precision where its results
hold, float32 where they do not.

The ``precision`` option of predict, classify and train:

- ``auto`` (the default): float16 autocast on CUDA (automatic mixed precision; training scales
  its loss), float32 on CPUs;
- ``fp32``: float32 everywhere;
- ``bf16``: bfloat16 autocast, on CPUs too: about 2.2x the float32 speed on CPUs with native
  bfloat16 (AVX-512 BF16, AMX), but less exact.

Inference and training follow the same rule (:func:`network_precision`).

Why float16 and not bfloat16 is the automatic choice: ``benchmarks/precision.py`` runs the
test models in each precision and compares with float32. float16 (10-bit mantissa) keeps
99.97-99.98 % of the class maps and changes the objects' F1 by at most 0.005; bfloat16 (7-bit
mantissa) changes 0.11-0.23 % of the pixels and the test U-Net's F1 by 0.012, short of the bar
of 99.9 % of pixels and an F1 change under 0.005. CPUs run
float16 slowly (10 s instead of 2 s per batch here), so CPUs stay in float32 unless asked.

Inference also runs the network in the layout CPUs and GPUs are fastest in, with no effect on
the numbers beyond the order of float32 sums (:func:`inference_network`): batch normalisation
folded into the convolution before it, weights channels-last. On 2 cores of an EPYC this
alone makes a U-Net's forward 1.85x faster in float32 (``benchmarks/dl_predict.py``).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..base.bounds import PRECISIONS
from ..base.errors import InputError

__all__ = ["PRECISIONS", "Precision", "network_precision", "inference_network"]


@dataclass(frozen=True)
class Precision:
    """How a network runs: autocast to ``dtype`` (None: float32) on ``device``."""

    device: torch.device
    dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        """'bf16', 'fp16' or 'fp32' (logs, summaries, benchmark tables)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def autocast(self):
        """The context in which the network's forward (and loss) run."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Training: scales the loss where float16 gradients could underflow; a no-op otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def network_precision(choice: str, device: torch.device) -> Precision:
    """The precision of predict, classify and train for the option value ``choice`` on ``device``."""
    if choice == "bf16":
        return Precision(device, torch.bfloat16)
    if choice == "auto" and device.type == "cuda":
        return Precision(device, torch.float16)
    return Precision(device)


def inference_network(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` for inference on ``device``: in eval mode, each batch normalisation
    that follows a convolution folded into it, weights channels-last. ``model`` is unchanged
    (it may go on training)."""
    network = copy.deepcopy(model).eval()
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                conv, norm = module._modules[first], module._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module._modules[first] = fuse_conv_bn_eval(conv, norm)
                    module._modules[second] = nn.Identity()
    return network.to(device).to(memory_format=torch.channels_last)


def pick_device(choice: str = "auto") -> torch.device:
    """The torch device of a step's ``device`` option: 'auto' (CUDA when present), 'cpu' or 'cuda'."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but no GPU is available")
    return torch.device(choice)
