"""One engine runs every model over images and slides, window by window, in bounded memory.

A model is behind a small interface (:class:`WindowModel`): normalised windows in, outputs out.
dlhisto's networks (:class:`NetworkWindows`) and bioimage.io packages made elsewhere
(:class:`~dlhisto_core.dl.foreign.ForeignWindows`) both implement it, so every model honours the
same options: device, precision, batch size, overlap, flips and background skipping.

The slide is cut into output tiles of ``T`` pixels (the TIFF tiles of the outputs). Two ways
to put windows together, chosen by the model:

- blended (dlhisto's networks, no halo): window (i, j) starts at the corner of output tile
  (i, j) and reaches ``overlap`` pixels into the next tiles. Where two windows overlap, their
  outputs are blended with weights sin^2 / cos^2 that add up to exactly 1, so there is no seam
  and every pixel near a window edge is mostly predicted by the window that sees it with
  context. Because each window only spills into the tiles right of and below its own tile, an
  output tile is complete as soon as its own window is done: tiles are written in TIFF order
  while the slide is read, and only the overlap strips of one row of windows are held;
- cropped (a bioimage.io ``halo``): each output tile is cut from the centre of a window of a
  size the network takes, at least ``halo`` pixels from the window's sides except at the
  image's border, as bioimageio.core tiles an image.

Before the pass, the model takes the statistics it normalises with from the slide (dlhisto's:
per-channel percentiles of a subsample, every pixel up to 4 Mpx). For ``skip_background``,
tissue is found on the slide's overview (a coarse pyramid level, about 2048 pixels on its
longest side, :meth:`readers.Reader.overview`): an Otsu threshold of the tissue signal (colour
saturation of brightfield RGB, capped at BRIGHTFIELD_TISSUE; intensity otherwise) gives a tissue mask, and a window whose
footprint on it holds too little tissue is neither read nor sent through the network: it is
the model's background output (class 0 with probability 1).

Where there are cores to spare (a GPU node, or a CPU job with more cores than PyTorch uses),
windows are read and normalised in one worker thread and go through the network in another
(:mod:`pipeline`) while the caller's thread stitches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from skimage.filters import threshold_otsu

from ..base.errors import InputError
from ..base.pipeline import in_thread, spare_cores
from ..imaging.intensity import channel_range, scale_channels
from ..io.readers import Reader
from ..io.tiling import Tile, tile_grid
from ..models.packages import target_scale
from ..models.spec import ModelSpec
from .options import PredictOptions
from .patches import SAMPLE_PIXELS
from .precision import Precision, inference_network, network_precision, pick_device


@dataclass
class WindowCount:
    """Windows the engine ran, and those it skipped as background."""

    windows: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Layout:
    """How a model's windows cover the output tiles: ``tile`` pixels each; a window of ``window``
    (height, width) pixels; ``halo`` (y, x) None for blended windows, else the context kept
    around each cropped tile."""

    tile: int
    window: tuple[int, int]
    halo: tuple[int, int] | None = None


class WindowModel(Protocol):
    """A model as the engine runs it."""

    name: str
    in_channels: int
    out_channels: int

    def layout(self, options: PredictOptions) -> Layout:
        """Tile and window sizes for these options."""

    def place(self, options: PredictOptions) -> Precision:
        """Put the network on the options' device; the precision it runs in there."""

    def normaliser(self, reader) -> Callable[[np.ndarray], np.ndarray]:
        """From the image's statistics: a function of a (h, w, C) window to the (C, h, w) float32
        input of the network."""

    def pad(self, region: np.ndarray, widths: list[tuple[int, int]]) -> np.ndarray:
        """A region read at the image's border, extended by ``widths`` (y and x) as the model wants."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's values (B, K, h, w) of a batch (B, C, h, w) on the device, run under the
        precision's autocast."""

    def activation(self, values: torch.Tensor) -> torch.Tensor:
        """The outputs of the network's float32 values (e.g. their softmax), outside autocast."""

    def background(self) -> np.ndarray:
        """The (K,) output of a background window, or an InputError: the model cannot skip."""

    def finish(self, values: np.ndarray) -> np.ndarray:
        """A stitched (h, w, K) output tile in the output's units."""


class Engine:
    """Runs a :class:`WindowModel` over a slide and yields its output tiles in TIFF order."""

    def __init__(self, model: WindowModel, options: PredictOptions):
        self.model, self.options = model, options
        self.layout = model.layout(options)
        self.background = model.background() if options.skip_background else None
        self.precision = model.place(options)

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def describe(self) -> str:
        """Device and precision, e.g. 'cpu, fp32'."""
        return f"{self.device}, {self.precision.name}"

    def tiles(self, reader, count: WindowCount) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield (Tile, values (h, w, K) float32) for every output tile, row by row, counting
        the windows in ``count``."""
        n_channels = 1 if len(reader.shape) == 2 else reader.shape[2]
        if n_channels != self.model.in_channels:
            raise InputError(f"the model expects {self.model.in_channels}-channel images; "
                             f"'{reader.name}' has {n_channels}")
        normalise = self.model.normaliser(reader)
        tissue = tissue_map(reader) if self.options.skip_background else None
        reading = self._read_windows(reader, normalise, tissue, count)
        if spare_cores(self.device.type, torch.get_num_threads()):
            depth = 2 * self.options.batch_size
            reading = in_thread(reading, depth, "dlhisto-read")
            windows = in_thread(self._network_outputs(reading), depth, "dlhisto-network")
        else:
            windows = self._network_outputs(reading)
        try:
            stitched = _cropped(windows, reader.shape[:2], self.layout) if self.layout.halo else \
                _blended(windows, reader.shape[:2], self.layout.tile, self.options.overlap, self._background_window())
            for tile, values in stitched:
                yield tile, self.model.finish(values)
        finally:
            windows.close()

    def _background_window(self) -> np.ndarray | None:
        if self.background is None:
            return None
        size = self.layout.window[0]
        return np.broadcast_to(self.background.astype(np.float32)[:, None, None],
                               (len(self.background), size, size)).copy()

    def _read_windows(self, reader, normalise, tissue: TissueMap | None, count: WindowCount):
        """The normalised (C, h, w) window of every output tile in row-major order, or None for
        a background window (not read)."""
        height, width = reader.shape[:2]
        (window_y, window_x), step = self.layout.window, self.layout.tile
        for y in range(0, height, step):
            for x in range(0, width, step):
                count.windows += 1
                top, left = window_corner(y, x, (height, width), self.layout)
                if tissue is not None and tissue.fraction(top, left, window_y) < self.options.min_tissue:
                    count.skipped += 1
                    yield None
                else:
                    yield normalise(read_window(reader, top, left, (window_y, window_x), self.model.pad))

    def _network_outputs(self, windows):
        """The outputs (K, h, w) of the windows in order, None for background windows.

        Windows with tissue go through the network in full batches, filled across rows, so that
        every forward pass has the same shape (steady speed and memory); background windows
        waiting for a batch to fill are only counted, not stored.
        """
        pending: list[np.ndarray | None] = []
        n_tissue = 0
        try:
            for window in windows:
                pending.append(window)
                n_tissue += window is not None
                if n_tissue == self.options.batch_size:
                    yield from self._run_batch(pending)
                    pending, n_tissue = [], 0
            yield from self._run_batch(pending)
        finally:
            windows.close()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Outputs of a batch; with ``options.flips``, the mean over the batch and its flips
        along x, y and both, each flipped back."""
        outputs = None
        for dims in ([(), (3,), (2,), (2, 3)] if self.options.flips else [()]):
            flipped = torch.flip(batch, dims) if dims else batch
            with self.precision.autocast():
                values = self.model.forward(flipped).float()
            values = self.model.activation(values)
            values = torch.flip(values, dims) if dims else values
            outputs = values if outputs is None else outputs + values
        return outputs / 4 if self.options.flips else outputs

    def _run_batch(self, pending: list[np.ndarray | None]):
        batch = [window for window in pending if window is not None]
        outputs = iter([])
        if batch:
            with torch.inference_mode():
                outputs = iter(self._forward(torch.from_numpy(np.stack(batch)).to(self.device)).cpu().numpy())
        for window in pending:
            yield None if window is None else next(outputs)


def window_corner(y: int, x: int, shape: tuple[int, int], layout: Layout) -> tuple[int, int]:
    """Top left corner of the window of the output tile at (y, x): the tile's own corner for
    blended windows; for cropped ones, ``halo`` before it, inside the image extended by the halo
    wherever the window fits there (as bioimageio.core places its blocks)."""
    if layout.halo is None:
        return y, x
    (height, width), (window_y, window_x), (halo_y, halo_x) = shape, layout.window, layout.halo
    return (max(min(y - halo_y, height + halo_y - window_y), -halo_y),
            max(min(x - halo_x, width + halo_x - window_x), -halo_x))


def read_window(reader, top: int, left: int, size: tuple[int, int], pad) -> np.ndarray:
    """The (h, w, C) window at (top, left), extended by ``pad`` where it reaches past the image."""
    (image_height, image_width), (height, width) = reader.shape[:2], size
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image_height), min(left + width, image_width)
    region = reader.read_region(y0, x0, y1 - y0, x1 - x0)
    region = region[..., None] if region.ndim == 2 else region
    widths = [(y0 - top, top + height - y1), (x0 - left, left + width - x1)]
    return pad(region, widths) if any(a or b for a, b in widths) else region


def _cropped(windows, shape: tuple[int, int], layout: Layout):
    """Each output tile cut from the centre of its own window."""
    height, width = shape
    for tile in tile_grid(height, width, layout.tile):
        window = next(windows)
        top, left = window_corner(tile.y, tile.x, shape, layout)
        dy, dx = tile.y - top, tile.x - left
        yield tile, np.moveaxis(window[:, dy:dy + tile.height, dx:dx + tile.width], 0, -1)


def _blended(windows, shape: tuple[int, int], size: int, overlap: int, background: np.ndarray | None):
    """Output tiles of windows that reach ``overlap`` pixels into the tiles right of and below
    theirs, blended (:func:`blend_weights`). A tile whose own window and every window reaching
    into it are background is the background without any blending."""
    height, width = shape
    rows, cols = -(-height // size), -(-width // size)
    blend = _Blend(rows, cols, size, overlap, background)
    # the strips each window of the row above spills into the tiles below, None for background
    above: dict[int, np.ndarray | None] = {}
    for i in range(rows):
        below: dict[int, np.ndarray | None] = {}
        right = None  # the strip the window to the left spills into this tile
        for j in range(cols):
            window = next(windows)
            tile = Tile(i * size, j * size, min(size, height - i * size), min(size, width - j * size))
            corner = above.pop(j - 1, None) if i > 0 and j > 0 else None
            neighbours_background = (j == 0 or right is None) and (
                i == 0 or (above.get(j) is None and (j == 0 or corner is None)))
            if window is None and (neighbours_background or not overlap):
                right, below[j] = None, None
                yield tile, blend.background_tile[:tile.height, :tile.width]
                continue
            values = blend.tile(window, i, j, right, above.get(j), corner)
            right = None if window is None or not overlap else values[:, :size, size:].copy()  # copies: views
            below[j] = None if window is None or not overlap else values[:, size:, :].copy()  # keep whole windows
            yield tile, np.moveaxis(values[:, :tile.height, :tile.width], 0, -1)
        above = below


class _Blend:
    """The blending weights of every window of a slide, and how a tile sums its windows' parts."""

    def __init__(self, rows: int, cols: int, size: int, overlap: int, background: np.ndarray | None):
        self.size, self.overlap = size, overlap
        self.row_weights = [blend_weights(i, rows, size, overlap) for i in range(rows)]
        self.column_weights = [blend_weights(j, cols, size, overlap) for j in range(cols)]
        self.background = background
        if background is not None:
            self.background_tile = np.moveaxis(background[:, :size, :size], 0, -1)
            self.background_tile.flags.writeable = False

    def weighted(self, window: np.ndarray | None, i: int, j: int) -> np.ndarray:
        """Window (i, j)'s outputs times its blending weights, in place (None: a background
        window). The weights differ from 1 only in the bands of the overlaps."""
        values = self.background.copy() if window is None else window
        along_y, along_x = self.row_weights[i], self.column_weights[j]
        for band in (slice(0, self.overlap), slice(self.size, self.size + self.overlap)):
            values[:, band, :] *= along_y[band, None]
            values[:, :, band] *= along_x[band]
        return values

    def tile(self, window, i: int, j: int, right, above, corner) -> np.ndarray:
        """Window (i, j) weighted, with the parts of the windows left, above and above-left of
        it added to its own tile (a background neighbour's part computed again)."""
        size, overlap = self.size, self.overlap
        values = self.weighted(window, i, j)
        tile = values[:, :size, :size]  # the strips below and right of it are apart
        if overlap:
            if j > 0:
                tile[:, :, :overlap] += right if right is not None else self.weighted(None, i, j - 1)[:, :size, size:]
            if i > 0:
                strip = above if above is not None else self.weighted(None, i - 1, j)[:, size:, :]
                tile[:, :overlap, :] += strip[:, :, :size]
                if j > 0:
                    corner = corner if corner is not None else self.weighted(None, i - 1, j - 1)[:, size:, :]
                    tile[:, :overlap, :overlap] += corner[:, :, size:]
        return values


def blend_weights(index: int, count: int, tile_size: int, overlap: int) -> np.ndarray:
    """1-D weights of window ``index`` of ``count`` along one axis: rising over its first
    ``overlap`` pixels (shared with the previous window), 1 inside, falling over the last ones."""
    weights = np.ones(tile_size + overlap, np.float32)
    if overlap:
        rising = np.sin(np.pi / 2 * (np.arange(overlap) + 0.5) / overlap) ** 2
        if index > 0:
            weights[:overlap] = rising
        weights[tile_size:] = 1 - rising if index < count - 1 else 0
    return weights


# ---- dlhisto's networks ----

class NetworkWindows:
    """A dlhisto network (:mod:`models.networks`) as a :class:`WindowModel`: windows normalised
    with the slide's percentiles (as in training), softmax probabilities for segmentation, pixel
    values in the target's units for regression."""

    def __init__(self, network: torch.nn.Module, spec: ModelSpec, target_normalization: dict | None = None,
                 name: str = "the model"):
        if (spec.task == "regression") != (target_normalization is not None):
            raise ValueError("regression models, and only they, need a target normalisation")
        self.network, self.spec, self.name = network, spec, name
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        self.target_normalization = target_normalization
        self._gain = self._offset = None

    def layout(self, options: PredictOptions) -> Layout:
        size = options.tile_size + options.overlap
        return Layout(options.tile_size, (size, size))

    def place(self, options: PredictOptions) -> Precision:
        device = pick_device(options.device)
        self.network = inference_network(self.network, device)
        return network_precision(options.precision, device)

    def normaliser(self, reader) -> Callable[[np.ndarray], np.ndarray]:
        low, high = slide_range(reader)
        if self.target_normalization is not None:
            self._gain, self._offset = target_scale(self.target_normalization, low, high)
        return lambda window: scale_channels(window, low, high)

    @staticmethod
    def pad(region: np.ndarray, widths: list[tuple[int, int]]) -> np.ndarray:
        mode = "reflect" if min(region.shape[:2]) > 1 else "edge"
        return np.pad(region, [*widths, (0, 0)], mode=mode)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch)

    def activation(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.spec.task == "regression" else torch.softmax(values, dim=1)

    def background(self) -> np.ndarray:
        if self.spec.task == "regression":
            raise InputError("background skipping is for segmentation models; this model predicts pixel values")
        background = np.zeros(self.out_channels, np.float32)
        background[0] = 1
        return background

    def finish(self, values: np.ndarray) -> np.ndarray:
        return values if self._gain is None else values * self._gain + self._offset


def slide_range(reader: Reader, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The normalisation percentiles of each channel, from pixels on a regular grid of the
    slide (every pixel up to :data:`patches.SAMPLE_PIXELS`)."""
    height, width = reader.shape[:2]
    stride = max(1, math.ceil(math.sqrt(height * width / SAMPLE_PIXELS)))
    samples = []
    for tile in tile_grid(height, width, chunk):
        region = reader.read_region(tile.y, tile.x, tile.height, tile.width)
        samples.append(region[(-tile.y) % stride::stride, (-tile.x) % stride::stride].reshape(-1, *region.shape[2:]))
    return channel_range(np.concatenate(samples)[:, None])  # (N, 1[, C]): an image of one column


# ---- where the tissue is ----

@dataclass
class TissueMap:
    """Where the tissue is, on the slide's overview: ``mask`` (bool) and ``scale`` (overview
    pixels per slide pixel, y and x)."""

    mask: np.ndarray
    scale: tuple[float, float]

    def fraction(self, y: int, x: int, size: int) -> float:
        """The tissue fraction of the slide's square window at (y, x) of ``size`` pixels."""
        (sy, sx), (height, width) = self.scale, self.mask.shape
        top, left = min(max(int(y * sy), 0), height - 1), min(max(int(x * sx), 0), width - 1)
        bottom, right = max(math.ceil((y + size) * sy), top + 1), max(math.ceil((x + size) * sx), left + 1)
        return float(self.mask[top:bottom, left:right].mean())


BRIGHTFIELD_TISSUE = 0.15
"""Colour saturation above which a brightfield pixel is tissue whatever Otsu's threshold says:
glass is below 0.05, pale stroma about 0.3; on a crop with no glass, Otsu would split the
tissue itself (pale stroma from dark tumour)."""


def tissue_map(reader) -> TissueMap:
    """The tissue mask of a slide from its overview: Otsu's threshold of the tissue signal
    (for brightfield, at most :data:`BRIGHTFIELD_TISSUE`)."""
    overview, scale = reader.overview()
    signal = tissue_signal(overview)
    threshold = float(threshold_otsu(signal)) if signal.min() < signal.max() else float(signal.max())
    if overview.ndim == 3 and overview.shape[2] in (3, 4):
        threshold = min(threshold, BRIGHTFIELD_TISSUE)
    return TissueMap(signal > threshold, scale)


def tissue_signal(region: np.ndarray) -> np.ndarray:
    """Per pixel: colour saturation for RGB brightfield (glass is grey-white), intensity otherwise."""
    if region.ndim == 3 and region.shape[2] in (3, 4):
        rgb = region[..., :3].astype(np.float32)
        brightest = rgb.max(axis=-1)
        return (brightest - rgb.min(axis=-1)) / np.maximum(brightest, 1e-6)
    return (region.mean(axis=-1) if region.ndim == 3 else region).astype(np.float32)
