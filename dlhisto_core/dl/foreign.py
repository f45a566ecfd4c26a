"""Prediction with bioimage.io packages made elsewhere (:mod:`models.zoo`), through the engine
every model runs on (:mod:`engine`): the same device, precision, batching and flips as
dlhisto's own networks.

Windows have a size the network takes (at least the tile plus its context on each side, where
it can choose); each output tile is the centre of its window, ``halo`` pixels (or half the
``overlap``, if larger) away from the window's sides except at the image's border, so that no
tile is cut where the network lacks context. The package's preprocessing runs with statistics
of the whole image (as bioimageio.core takes them), its postprocessing window by window up to
the first step that needs statistics of the whole output, and the rest once that output is
written and measured.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.errors import InputError
from ..io.outputs import outputs_together
from ..io.readers import TiledImageReader
from ..io.slides import image_reader
from ..io.tables import write_row
from ..io.writers import write_tiled_image
from ..models.zoo import ZooModel, apply_all, from_tensor, measure, to_tensor
from .engine import Engine, Layout, WindowCount, read_window
from .options import PredictOptions
from .precision import Precision, network_precision, pick_device

MAX_STATS_PIXELS = 64 * 2**20
"""Beyond this many pixels, per-sample statistics come from the image's overview."""
MIN_TILE = 64
"""Smallest output tile (:func:`tiling.check_tile_size`)."""


class ForeignWindows:
    """A :class:`ZooModel` as the engine's :class:`~engine.WindowModel`."""

    def __init__(self, model: ZooModel):
        self.zoo, self.name = model, model.name
        self.in_channels, self.out_channels = model.n_channels, len(model.channel_names)
        self.reference = None
        """The preprocessed statistics image, which output steps may refer to (set by :meth:`normaliser`)."""
        batch_axes = [axis for axis in model.description.inputs[0].axes if axis.type == "batch"]
        self._batches = bool(batch_axes) and getattr(batch_axes[0], "size", None) != 1 \
            and "batch" in model.output_axes
        """Whether several windows go through the network in one call, along its batch axis."""

    def layout(self, options: PredictOptions) -> Layout:
        """Per axis: the window is the smallest the network takes around a tile of ``tile_size``
        and its context; the context is the halo, or half the overlap where larger and the window
        still leaves a tile of :data:`MIN_TILE`; tiles (multiples of 16, as TIFF's) are what the
        windows leave, the same along y and x."""
        context, window = {}, {}
        for axis in ("y", "x"):
            halo = self.zoo.halo[axis]
            wanted = max(halo, options.overlap // 2)
            window[axis] = window_size(*self.zoo.window_sizes[axis], options.tile_size + 2 * wanted)
            if window[axis] - 2 * halo < MIN_TILE:
                raise InputError(f"'{self.name}': its {window[axis]} px windows leave less than {MIN_TILE} px along "
                                 f"{axis} once its halo of {halo} is cut off; dlhisto writes tiles of {MIN_TILE} px or more")
            context[axis] = max(halo, min(wanted, (window[axis] - MIN_TILE) // 2))
        tile = min((window[axis] - 2 * context[axis]) // 16 * 16 for axis in ("y", "x"))
        return Layout(tile, (window["y"], window["x"]), (context["y"], context["x"]))

    def place(self, options: PredictOptions) -> Precision:
        network = self.zoo.network
        if network.runs_on_cpu_only:
            if options.device == "cuda" or options.precision == "bf16":
                raise InputError(f"'{self.name}' has ONNX weights only, which dlhisto runs on the CPU in float32: "
                                 "ask for --device cpu or auto and --precision fp32 or auto")
            return Precision(torch.device("cpu"))
        device = pick_device(options.device)
        network.to(device)
        return network_precision(options.precision, device)

    def normaliser(self, reader):
        axes, pre = self.zoo.input_axes, self.zoo.description.inputs[0].preprocessing
        stats_input = to_tensor(_stats_image(reader, self), axes)
        stats = measure(pre, stats_input, axes)
        self.reference = {str(self.zoo.description.inputs[0].id): (apply_all(pre, stats_input, axes, stats), axes)}

        def normalise(window: np.ndarray) -> np.ndarray:
            processed = apply_all(pre, to_tensor(window, axes), axes, stats)
            return np.ascontiguousarray(np.moveaxis(from_tensor(processed, axes), -1, 0))
        return normalise

    def pad(self, region: np.ndarray, widths: list[tuple[int, int]]) -> np.ndarray:
        return np.pad(region, [*widths, (0, 0)], **self.zoo.padding)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The windows in the input's axes, through the network in one call where the package's
        batch axis takes several (one by one where it has none or a batch of 1), then the output's
        postprocessing that needs no statistics of the whole output."""
        zoo, device = self.zoo, batch.device
        tensors = [to_tensor(np.moveaxis(window, 0, -1), zoo.input_axes) for window in batch.float().cpu().numpy()]
        groups = [np.concatenate(tensors, axis=zoo.input_axes.index("batch"))] if self._batches else \
            tensors
        head = zoo.window_postprocessing
        outputs = []
        for group in groups:
            output = zoo.network.run(torch.from_numpy(group).to(device)).float().cpu().numpy()
            output = apply_all(head, output, zoo.output_axes, [{}] * len(head))
            parts = np.split(output, len(group), axis=zoo.output_axes.index("batch")) if self._batches else [output]
            outputs += [np.moveaxis(from_tensor(part, zoo.output_axes), -1, 0) for part in parts]
        return torch.from_numpy(np.stack(outputs)).to(device)

    def activation(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def background(self) -> np.ndarray:
        raise InputError(f"background skipping needs to know which output is background: '{self.name}' is a "
                         "bioimage.io model from elsewhere; predict without --skip-background")

    def finish(self, values: np.ndarray) -> np.ndarray:
        return values


def window_size(min_size: int, step: int, wanted: int) -> int:
    """The smallest size the network takes that is at least ``wanted`` (or its fixed size)."""
    if step == 0 or wanted <= min_size:
        return min_size
    return min_size + step * math.ceil((wanted - min_size) / step)


@dataclass
class ZooSummary:
    """What a foreign model's prediction produced (one row of the summary table)."""

    model: str
    shape: tuple[int, int]
    windows: int
    channel_names: list[str]
    channel_means: list[float]
    device: str = "cpu, fp32"
    """Where and in which precision the network ran."""

    def row(self, image_name: str) -> dict:
        return {"image": image_name, "model": self.model, "height": self.shape[0], "width": self.shape[1],
                "windows": self.windows, **{f"mean_{n}": m for n, m in zip(self.channel_names, self.channel_means)}}

    def describe(self) -> str:
        means = ", ".join(f"{n} {m:.4g}" for n, m in zip(self.channel_names, self.channel_means))
        return f"{self.shape[1]} x {self.shape[0]} px in {self.windows} windows ({self.device}); mean output: {means}"


def predict_zoo(model: ZooModel, image, output_path=None, classes_path=None, summary_path=None,
                tile_size: int = 512, pixel_size: float | None = None, image_name: str | None = None,
                options: PredictOptions | None = None) -> ZooSummary:
    """Run a foreign model over an image or slide window by window, and write its output (float32
    OME-TIFF, channels last), its class map (the most probable channel, 0..C-1; a single channel
    thresholded at 0.5) and a one-row summary, together or not at all.

    ``options`` (device, precision, batch size, overlap, flips) replace ``tile_size`` and
    ``pixel_size``; without them the windows reach exactly the package's halo around each tile.
    """
    options = options or PredictOptions(tile_size=tile_size, overlap=0, pixel_size=pixel_size)
    windows = ForeignWindows(model)
    engine = Engine(windows, options)
    step = engine.layout.tile
    with outputs_together(output_path, classes_path, summary_path) as (output, classes, summary_file), \
            tempfile.TemporaryDirectory(prefix="dlhisto-zoo-") as work, \
            image_reader(image, name=image_name, pixel_size=options.pixel_size) as reader:
        height, width = reader.shape[:2]
        channels = 1 if len(reader.shape) == 2 else reader.shape[2]
        if channels != model.n_channels:
            raise InputError(f"'{model.name}' takes {model.n_channels}-channel images; '{reader.name}' has {channels}")
        count, means = WindowCount(), _ChannelMeans(windows.out_channels)
        out_shape = (height, width, windows.out_channels) if windows.out_channels > 1 else (height, width)
        tiles = (values for _, values in engine.tiles(reader, count))
        target = output or Path(work) / "output.ome.tif"  # the class map is made from it
        tail = model.whole_output_postprocessing
        if tail:  # the output before those steps, measured, then processed tile by tile
            first = Path(work) / "before_statistics.ome.tif"
            write_tiled_image(first, map(_squeezed, tiles), out_shape, np.float32, step, reader.pixel_size)
            tiles = _processed_tiles(first, tail, windows.reference, out_shape, step)
        write_tiled_image(target, (_squeezed(means.add(t)) for t in tiles), out_shape, np.float32, step,
                          reader.pixel_size)
        if classes:
            _write_classes(target, classes, out_shape, step, reader.pixel_size)
        result = ZooSummary(model.name, (height, width), count.windows, model.channel_names, means.means(),
                            engine.describe())
        if summary_file:
            write_row(summary_file, result.row(image_name or reader.name))
        return result


class _ChannelMeans:
    """The mean of each channel over the tiles of an output, (Y, X, C) tile by tile."""

    def __init__(self, channels: int):
        self.sums, self.count = np.zeros(channels), 0

    def add(self, tile: np.ndarray) -> np.ndarray:
        self.sums += tile.reshape(-1, tile.shape[-1]).sum(axis=0)
        self.count += tile.shape[0] * tile.shape[1]
        return tile

    def means(self) -> list[float]:
        return list(self.sums / max(self.count, 1))


def _squeezed(tile: np.ndarray) -> np.ndarray:
    """A (Y, X, C) tile as written: (Y, X) for one channel."""
    return tile if tile.shape[-1] > 1 else tile[..., 0]


def _stored_tiles(output, shape, tile_size: int):
    """The tiles of an open output (:class:`TiledImageReader`), (Y, X, C), in the order written."""
    for y in range(0, shape[0], tile_size):
        for x in range(0, shape[1], tile_size):
            values = output.read_region(y, x, tile_size, tile_size)
            yield values[..., None] if values.ndim == 2 else values


def _processed_tiles(first: Path, steps, reference, shape, tile_size: int):
    """The tiles of the output written to ``first`` with the postprocessing ``steps`` applied, their
    statistics taken on the whole output (its overview beyond :data:`MAX_STATS_PIXELS`)."""
    axes = ["y", "x", "channel"]
    with TiledImageReader(first) as output:
        whole = output.overview()[0] if shape[0] * shape[1] > MAX_STATS_PIXELS else output.read_region(
            0, 0, shape[0], shape[1])
        stats = measure(steps, whole[..., None] if whole.ndim == 2 else whole, axes, reference)
        del whole
        for tile in _stored_tiles(output, shape, tile_size):
            yield apply_all(steps, tile, axes, stats)


def _stats_image(reader, windows: ForeignWindows) -> np.ndarray:
    """The pixels per-sample statistics come from, as the reference takes them: the whole image
    extended by the halo as the package pads it; for a large slide, its overview."""
    (height, width), halo = reader.shape[:2], windows.zoo.halo
    if height * width > MAX_STATS_PIXELS:
        return reader.overview()[0]
    return read_window(reader, -halo["y"], -halo["x"], (height + 2 * halo["y"], width + 2 * halo["x"]), windows.pad)


def _write_classes(output_path, classes_path, shape, tile_size: int, pixel_size) -> None:
    """The class map of a written output: the most probable channel, or one channel >= 0.5."""
    def classes_of(values: np.ndarray) -> np.ndarray:
        return (values[..., 0] >= 0.5 if values.shape[-1] == 1 else values.argmax(axis=-1)).astype(np.uint8)

    with TiledImageReader(output_path) as output:
        write_tiled_image(classes_path, map(classes_of, _stored_tiles(output, shape, tile_size)), shape[:2], np.uint8,
                          tile_size, pixel_size)
