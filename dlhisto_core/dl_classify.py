"""Tile classification: one class per image, or per tile of a whole slide, with a CNN encoder.

Each image or tile is normalised on its own (percentiles 1 and 99.8 of all channels together,
which keeps the colours of the stains), as the training tiles were, and mirrored to a multiple
of 32 pixels for the encoder.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .dl_data import normalize_for_network
from .dl_models import pick_device
from .errors import InputError
from .image_io import image_reader
from .model_spec import ModelSpec
from .options import MAX_BATCH_SIZE, check_number
from .tiling import MAX_TILE_SIZE, Tile, tile_grid


def classify(model: torch.nn.Module, spec: ModelSpec, class_names: Sequence[str], images: Sequence[tuple[str, str]],
             tile_size: int | None = None, batch_size: int = 16, device: str = "auto") -> Iterator[dict]:
    """One row per image (or per tile of ``tile_size`` pixels): position, size, class and the
    probability of each class."""
    if spec.task != "classification":
        raise InputError(f"this model does {spec.task} segmentation; use Predict with a U-Net for it")
    check_number(tile_size, "tile size", 64, MAX_TILE_SIZE)
    check_number(batch_size, "batch size", 1, MAX_BATCH_SIZE)
    if tile_size is not None and tile_size % 32:
        raise InputError(f"the tile size must be a multiple of 32, at least 64, got {tile_size}")
    torch_device = pick_device(device)
    model = model.to(torch_device).eval()
    for path, name in images:
        with image_reader(path, name=name) as reader:
            n_channels = 1 if len(reader.shape) == 2 else reader.shape[2]
            if n_channels != spec.in_channels:
                raise InputError(f"the model expects {spec.in_channels}-channel images; '{name}' has {n_channels}")
            tiles = list(tile_grid(*reader.shape[:2], tile_size)) if tile_size else \
                [Tile(0, 0, *reader.shape[:2])]
            for start in range(0, len(tiles), batch_size):
                batch = tiles[start:start + batch_size]
                inputs = [_network_input(reader.read_region(t.y, t.x, t.height, t.width), tile_size) for t in batch]
                for tile, probabilities in zip(batch, _probabilities(model, inputs, torch_device)):
                    row = {"image": name, "x": tile.x, "y": tile.y, "width": tile.width, "height": tile.height,
                           "class": class_names[int(probabilities.argmax())]}
                    row.update({f"p_{c}": float(p) for c, p in zip(class_names, probabilities)})
                    yield row


def _network_input(region: np.ndarray, tile_size: int | None) -> np.ndarray:
    """(C, S, S) normalised and mirrored to the tile size (whole images: to a multiple of 32)."""
    data = normalize_for_network(region, joint=True)
    height, width = data.shape[1:]
    target = (tile_size, tile_size) if tile_size else tuple(max(64, -(-n // 32) * 32) for n in (height, width))
    pads = ((0, 0), (0, target[0] - height), (0, target[1] - width))
    if pads[1][1] or pads[2][1]:
        data = np.pad(data, pads, mode="reflect" if min(height, width) > 1 else "edge")
    return data


@torch.inference_mode()
def _probabilities(model, inputs: list[np.ndarray], device) -> np.ndarray:
    if len({x.shape for x in inputs}) == 1:
        logits = model(torch.from_numpy(np.stack(inputs)).to(device))
    else:  # whole images of different sizes: one at a time
        logits = torch.cat([model(torch.from_numpy(x[None]).to(device)) for x in inputs])
    return torch.softmax(logits, dim=1).cpu().numpy()
