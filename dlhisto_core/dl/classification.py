"""Tile classification: one class per image, or per tile of a whole slide, with a CNN encoder.

Each image or tile is normalised on its own (percentiles 1 and 99.8 of all channels together,
which keeps the colours of the stains), as the training tiles were, and mirrored to a multiple
of 32 pixels for the encoder.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..imaging.intensity import normalize_for_network
from .precision import pick_device
from .precision import Precision, inference_network, network_precision
from ..base.errors import InputError
from .engine import tissue_map
from .options import ClassifyOptions
from .prediction import at_model_pixel_size
from ..io.slides import image_reader
from ..io.inputs import named
from ..io.outputs import outputs_together
from ..io.slides import downsample_to_slide
from ..models.spec import ModelSpec
from ..imaging.stain import NormalizedReader
from ..io.tables import write_table
from ..io.tiling import Tile, tile_grid


def classify(package, images: Sequence, options: ClassifyOptions | None = None, table=None,
             geojson=None) -> list[dict]:
    """Classify images, or the tiles of slides, with a tile classifier package, as ``dlhisto
    classify`` (the Galaxy tool) does.

    Parameters
    ----------
    package : path or (path, name)
        A package made by ``train`` with the task 'classification'.
    images : list of path or (path, name)
    options : ClassifyOptions, optional
        ``tile_size`` None classifies each image as a whole. Without a ``pixel_size``, images
        that record theirs are read at the pixel size the model was trained at (when the
        package records it), the others as they are.
    table : path, optional
        Where to write the rows (TSV).
    geojson : path, optional
        The tiles of one image as QuPath GeoJSON ``tile`` objects in the slide's coordinates,
        classified: a tissue map to open over the slide in QuPath (:func:`geojson.tile_features`).

    Returns
    -------
    list of dict
        One row per image or tile: image, x, y, width, height, class and ``p_<class>``, the
        probability of each class.

    Examples
    --------
    >>> from dlhisto_core import classify
    >>> rows = classify("test-data/stain_classifier.zip", ["test-data/he.jpg", "test-data/ihc.png"])
    >>> [(row["image"], row["class"]) for row in rows]
    [('he.jpg', 'H&E'), ('ihc.png', 'IHC')]
    """
    from ..models import packages
    from ..models.packages import load_package

    options = options or ClassifyOptions()
    path, model_name = named([package])[0]
    images = named(images)
    if geojson and (len(images) != 1 or not options.tile_size):
        raise InputError("a GeoJSON tissue map is made of the tiles of one image: give one image and a tile size")
    model, spec, rdf = load_package(path, model_name)
    class_names = rdf["outputs"][0]["axes"][1]["channel_names"]
    trained_at = packages.pixel_size(rdf)
    rows = list(classify_tiles(model, spec, class_names, images, options, trained_at,
                               packages.stain_reference(rdf, model_name)))
    with outputs_together(table, geojson) as (table_path, geojson_path):
        if table_path:
            write_table(table_path, rows, ["image", "x", "y", "width", "height", "class",
                                           *[f"p_{c}" for c in class_names]])
        if geojson_path:
            from ..io.geojson import tile_features, write_features

            image, name = images[0]
            working = at_model_pixel_size(options, trained_at, image, name).pixel_size
            tissue_rows = [row for row in rows if row["class"] != BACKGROUND]
            write_features(geojson_path, tile_features(tissue_rows, class_names,
                                                       downsample_to_slide(image, name, working)))
    return rows


BACKGROUND = "background"
"""The class of tiles left out for lack of tissue (``ClassifyOptions.skip_background``)."""


def classify_tiles(model: torch.nn.Module, spec: ModelSpec, class_names: Sequence[str], images: Sequence[tuple[str, str]],
                   options: ClassifyOptions | None = None, trained_at: float | None = None,
                   stain_reference=None) -> Iterator[dict]:
    """One row per image (or per tile of ``options.tile_size`` pixels) of (path, name) pairs,
    arrays or readers with a loaded model: position, size, class and the probability of each class.
    ``trained_at``: the model's pixel size (µm), the default working pixel size of images that
    record one; ``stain_reference``: the stains the images are mapped onto as they are read."""

    options = options or ClassifyOptions()
    if spec.task != "classification":
        raise InputError(f"this model does {spec.task} segmentation; use Predict with a U-Net for it")
    tile_size = options.tile_size
    torch_device = pick_device(options.device)
    precision = network_precision(options.precision, torch_device)
    model = inference_network(model, torch_device)
    for path, name in images:
        pixel_size = at_model_pixel_size(options, trained_at, path, name).pixel_size
        with image_reader(path, name=name, pixel_size=pixel_size) as reader:
            if stain_reference is not None:
                reader = NormalizedReader(reader, stain_reference)
            n_channels = 1 if len(reader.shape) == 2 else reader.shape[2]
            if n_channels != spec.in_channels:
                raise InputError(f"the model expects {spec.in_channels}-channel images; '{name}' has {n_channels}")
            tiles = list(tile_grid(*reader.shape[:2], tile_size)) if tile_size else \
                [Tile(0, 0, *reader.shape[:2])]
            tissue = tissue_map(reader) if options.skip_background and tile_size else None
            for start in range(0, len(tiles), options.batch_size):
                batch = tiles[start:start + options.batch_size]
                kept = [t for t in batch if tissue is None or tissue.fraction(t.y, t.x, tile_size) >= options.min_tissue]
                inputs = [_network_input(reader.read_region(t.y, t.x, t.height, t.width), tile_size) for t in kept]
                found = dict(zip(kept, _probabilities(model, inputs, precision))) if kept else {}
                for tile in batch:  # in tile order, background tiles (not run) among them
                    row = {"image": name, "x": tile.x, "y": tile.y, "width": tile.width, "height": tile.height}
                    if tile in found:
                        row["class"] = class_names[int(found[tile].argmax())]
                        row.update({f"p_{c}": float(p) for c, p in zip(class_names, found[tile])})
                    else:
                        row["class"] = BACKGROUND
                        row.update({f"p_{c}": 0.0 for c in class_names})
                    yield row


def describe(rows: Sequence[dict], by_tile: bool) -> str:
    """One line: how many images or tiles of the rows of :func:`classify` went to each class."""
    class_names = [key[2:] for key in rows[0] if key.startswith("p_")] if rows else []
    counts = {c: sum(r["class"] == c for r in rows) for c in [*class_names, BACKGROUND]}
    if not counts[BACKGROUND]:
        del counts[BACKGROUND]
    return f"{len(rows)} {'tiles' if by_tile else 'images'}: " + ", ".join(f"{n} {c}" for c, n in counts.items())


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
def _probabilities(model, inputs: list[np.ndarray], precision: Precision) -> np.ndarray:
    device = precision.device
    with precision.autocast():
        if len({x.shape for x in inputs}) == 1:
            logits = model(torch.from_numpy(np.stack(inputs)).to(device))
        else:  # whole images of different sizes: one at a time
            logits = torch.cat([model(torch.from_numpy(x[None]).to(device)) for x in inputs])
    return torch.softmax(logits.float(), dim=1).cpu().numpy()
