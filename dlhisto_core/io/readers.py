"""Readers of one image level, region by region: TIFF / OME-TIFF with tifffile, arrays in
memory, and any reader resampled to another pixel size.

Every reader follows one protocol (``shape``, ``dtype``, ``pixel_size``, ``name``,
``read_region``, ``overview``), so the steps work on slides of any size tile by tile. A TIFF
is read from its own bytes only (an OME-TIFF whose OME-XML points at other files is refused,
and tifffile is never let open another file) and sizes are checked before decoding. Every
image is a 2-D array ``(Y, X)`` or a channels-last array ``(Y, X, C)``; anything else (a
z-stack, a time series) is refused with an :class:`InputError` naming the axes found.
"""

from __future__ import annotations
import collections
import functools
import math
import os
import threading
from pathlib import Path
import numpy as np
from PIL import Image as PILImage
from ..base.errors import InputError, one_line
from .pixel_size import _tiff_pixel_size, check_pixel_size
from .images import read_image, sniff_format
from .tiff_structure import MAX_IMAGE_PIXELS
from .pixel_size import SAME_PIXEL_SIZE
from .images import _channel_axis, _check_finite, _check_size_and_type, _first_series, _select_yxc, check_image, open_tiff


OVERVIEW_SIDE = 2048
"""Longest side of a slide's overview (:meth:`Reader.overview`): what tissue detection looks at."""


def strided_image(read_region, shape: tuple[int, int], longest: int) -> np.ndarray:
    """Every k-th pixel of an image of ``shape`` read through ``read_region(y, x, height, width)``
    in strips of about 4 Mpx, k such that the longest side becomes at most ``longest``."""
    height, width = shape
    stride = max(1, math.ceil(max(height, width) / longest))
    rows = max(stride, (2**22 // max(width, 1)) // stride * stride)
    # copies: the strided views would keep every strip whole until the end (800 MB for 20k x 20k px)
    return np.concatenate([read_region(top, 0, rows, width)[::stride, ::stride].copy()
                           for top in range(0, height, rows)])


def overview_level(sides: list[int], current: int, longest: int) -> int:
    """The pyramid level an overview is read from: the coarsest from ``current`` on whose longest
    side (``sides``, one per level) is at least ``longest / 2``, or ``current``."""
    return max((k for k in range(current, len(sides)) if sides[k] >= longest / 2), default=current)


class Reader:
    """The reader protocol of the slide steps: ``shape`` ((Y, X) or (Y, X, C)), ``dtype``,
    ``pixel_size`` ((y, x) µm or None), ``name``, ``n_levels``, ``read_region(y, x, height,
    width)`` and ``overview()``; a context manager whose exit releases what ``close`` holds."""

    n_levels = 1

    def overview(self, longest: int = OVERVIEW_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
        """The whole image at low resolution (longest side about ``longest`` pixels) and its scale
        (overview pixels per image pixel, y and x). Here: every k-th pixel, read in strips; pyramidal
        readers read a coarse level instead."""
        image = strided_image(self.read_region, self.shape[:2], longest)
        return image, (image.shape[0] / self.shape[0], image.shape[1] / self.shape[1])

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


CHUNK_CACHE_BYTES = 16 * 2**20
"""Decoded TIFF tiles a reader keeps, the most recently used: a prediction window shares the
tiles of its right edge with the next window, which finds them here (a row of windows decodes
each tile once instead of twice). Holding the tiles the next row of windows shares would take a
row of tiles of the slide's width; peak memory is kept flat instead."""


@functools.cache
def _chunk_cache_class():
    """The class of :func:`cached_chunks`, defined on first use (zarr is imported lazily)."""
    from zarr.storage import WrapperStore

    class ChunkCache(WrapperStore):
        """The decoded chunks (TIFF tiles or strips) of tifffile's zarr store, the most recently
        used kept up to :data:`CHUNK_CACHE_BYTES`."""

        def __init__(self, store):
            super().__init__(store)
            self._chunks: collections.OrderedDict = collections.OrderedDict()
            self._bytes, self._lock = 0, threading.Lock()

        async def get(self, key, prototype, byte_range=None):
            if byte_range is None:
                with self._lock:
                    if key in self._chunks:
                        self._chunks.move_to_end(key)
                        return self._chunks[key]
            value = await self._store.get(key, prototype, byte_range)
            if byte_range is None and value is not None and not key.endswith(".json") and \
                    len(value) <= CHUNK_CACHE_BYTES // 4:
                with self._lock:
                    self._chunks[key] = value
                    self._bytes += len(value)
                    while self._bytes > CHUNK_CACHE_BYTES:
                        self._bytes -= len(self._chunks.popitem(last=False)[1])
            return value

    return ChunkCache


def cached_chunks(store):
    """tifffile's zarr ``store`` keeping its last decoded chunks (up to :data:`CHUNK_CACHE_BYTES`)."""
    return _chunk_cache_class()(store)


class TiledImageReader(Reader):
    """Read regions of a large (tiled, possibly pyramidal) TIFF without loading the whole slide.

    Only the TIFF tiles or strips that a region touches are decoded, so memory follows the
    region size, not the slide size; the last decoded tiles are kept (up to
    :data:`CHUNK_CACHE_BYTES`), so that neighbouring regions do not decode them again. PNG and JPEG
    cannot be read in parts; they are loaded whole (they are small in practice).
    """

    def __init__(self, path: str | os.PathLike, level: int = 0, name: str | None = None):
        import zarr

        self.name = name or Path(path).name
        self._tif = None
        kind = sniff_format(path, self.name)
        if kind != "tiff":
            image = read_image(path, self.name)
            self._array = image.data
            self.pixel_size = image.pixel_size
            self.shape = image.data.shape
            self.dtype = image.data.dtype
            self.n_levels = 1
            return
        try:
            self._tif = open_tiff(path, self.name)
            series = _first_series(self._tif, self.name)
            self.n_levels = len(series.levels)
            if not 0 <= level < self.n_levels:
                raise InputError(f"'{self.name}' has {self.n_levels} resolution levels; level {level} does not exist")
            array = zarr.open(cached_chunks(series.aszarr(level=level)), mode="r")
            axes = series.levels[level].axes
            self.pixel_size = _tiff_pixel_size(self._tif, self.name)
        except InputError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise InputError(f"cannot read '{self.name}' as TIFF: {one_line(exc)}") from exc
        if self.pixel_size is not None and level > 0:
            scale = series.levels[0].shape[axes.index("Y")] / array.shape[axes.index("Y")]
            self.pixel_size = (self.pixel_size[0] * scale, self.pixel_size[1] * scale)
        self._array = array
        self._series, self._level = series, level
        self._axes = axes
        self._channel_axis = _channel_axis(axes, array.shape, self.name)
        height, width = array.shape[axes.index("Y")], array.shape[axes.index("X")]
        self.shape = (height, width) if self._channel_axis is None else \
            (height, width, array.shape[self._channel_axis])
        self.dtype = np.dtype(array.dtype)
        _check_size_and_type(self.shape, self.dtype, self.name)

    def read_region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return pixels [y:y+height, x:x+width] (clipped to the image) as (h, w) or (h, w, C)."""
        ys = slice(max(y, 0), min(y + height, self.shape[0]))
        xs = slice(max(x, 0), min(x + width, self.shape[1]))
        if self._tif is None:
            return self._array[ys, xs]
        try:
            region = _select_yxc(self._array, self._axes, self._channel_axis, ys, xs)
        except MemoryError:
            raise
        except Exception as exc:  # a decoder failure: the file is damaged (truncated, corrupt tiles)
            raise InputError(f"cannot read '{self.name}' as TIFF: {one_line(exc)}") from exc
        _check_finite(region, self.name)
        return region

    def overview(self, longest: int = OVERVIEW_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
        """From the coarsest pyramid level whose longest side is at least ``longest / 2`` (or
        this level), every k-th pixel down to about ``longest``."""
        if self._tif is None or self.n_levels == 1:
            return super().overview(longest)
        import zarr

        y_axis, x_axis = self._axes.index("Y"), self._axes.index("X")
        coarse = overview_level([max(level.shape[y_axis], level.shape[x_axis]) for level in self._series.levels],
                                self._level, longest)
        array = zarr.open(self._series.aszarr(level=coarse), mode="r")
        height, width = array.shape[y_axis], array.shape[x_axis]

        def read(y: int, x: int, rows: int, columns: int) -> np.ndarray:
            try:
                return _select_yxc(array, self._axes, self._channel_axis, slice(y, min(y + rows, height)),
                                   slice(x, min(x + columns, width)))
            except Exception as exc:
                raise InputError(f"cannot read '{self.name}' as TIFF: {one_line(exc)}") from exc

        image = strided_image(read, (height, width), longest)  # in strips: the level may still be large
        return image, (image.shape[0] / self.shape[0], image.shape[1] / self.shape[1])

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None


class ArrayReader(Reader):
    """The reader protocol (:class:`Reader`) over an image already in memory, so that the slide
    steps take arrays as well as files."""

    def __init__(self, data: np.ndarray, pixel_size: tuple[float, float] | None = None, name: str = "array"):
        data = np.asarray(data)
        if data.ndim not in (2, 3):
            raise InputError(f"'{name}' must be a (Y, X) or (Y, X, C) array, got shape {data.shape}")
        check_image(data, name)
        if pixel_size is not None:
            check_pixel_size(pixel_size, f"'{name}' has")
        self._array, self.pixel_size, self.name = data, pixel_size, name
        self.shape, self.dtype = data.shape, data.dtype

    def read_region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return pixels [y:y+height, x:x+width] (clipped to the image) as (h, w) or (h, w, C)."""
        return self._array[max(y, 0):min(y + height, self.shape[0]), max(x, 0):min(x + width, self.shape[1])]


MAX_ENLARGEMENT = 16
"""Most a slide is enlarged to reach a working pixel size (a 0.03 µm model on a 0.5 µm scan)."""


RESAMPLING_MARGIN = 2
"""Source pixels read around a resampled region, so that neighbouring regions join without seams."""


class ResampledReader(Reader):
    """A reader at another pixel size than the one it reads from: each region is read with a
    small margin from ``source`` and resized (area averaging when shrinking, bilinear when
    enlarging)."""

    def __init__(self, source, pixel_size: tuple[float, float]):
        if source.pixel_size is None:
            raise InputError(f"'{source.name}' records no pixel size: it cannot be read at {pixel_size[0]:g} µm")
        self.source, self.pixel_size, self.name = source, pixel_size, source.name
        self.dtype = np.dtype(np.uint8) if source.dtype == np.uint8 else np.dtype(np.float32)
        self.scale = (source.pixel_size[0] / pixel_size[0], source.pixel_size[1] / pixel_size[1])
        if max(self.scale) > MAX_ENLARGEMENT:
            raise InputError(f"reading '{source.name}' ({source.pixel_size[1]:g} µm per pixel) at {pixel_size[1]:g} µm "
                             f"would enlarge it {max(self.scale):.4g} times; at most {MAX_ENLARGEMENT} are accepted")
        height, width = (max(1, round(n * s)) for n, s in zip(source.shape[:2], self.scale))
        if height * width > MAX_IMAGE_PIXELS:
            raise InputError(f"'{source.name}' at {pixel_size[1]:g} µm would be {width} x {height} pixels; at most "
                             f"{MAX_IMAGE_PIXELS / 1e9:.0f} gigapixels are accepted")
        self.shape = (height, width, *source.shape[2:])

    def read_region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return pixels [y:y+height, x:x+width] at this pixel size (clipped to the image). Each
        output pixel is computed from the source pixels it covers, wherever the region starts,
        so that regions join without seams."""
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + height, self.shape[0]), min(x + width, self.shape[1])
        (sy, sx), m = self.scale, RESAMPLING_MARGIN
        top, left = max(math.floor(y0 / sy) - m, 0), max(math.floor(x0 / sx) - m, 0)
        bottom, right = math.ceil(y1 / sy) + m, math.ceil(x1 / sx) + m
        region = self.source.read_region(top, left, bottom - top, right - left)
        missing = (bottom - top - region.shape[0], right - left - region.shape[1])  # beyond the last row or column
        if any(missing):
            region = np.pad(region, [(0, missing[0]), (0, missing[1])] + [(0, 0)] * (region.ndim - 2), mode="edge")
        box = (x0 / sx - left, y0 / sy - top, x1 / sx - left, y1 / sy - top)
        return _resize(region, (x1 - x0, y1 - y0), box).astype(self.dtype, copy=False)

    def overview(self, longest: int = OVERVIEW_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
        """The source's overview, its scale converted to this pixel size."""
        image, (sy, sx) = self.source.overview(longest)
        return image, (sy / self.scale[0], sx / self.scale[1])

    def close(self) -> None:
        self.source.close()


def at_pixel_size(reader, pixel_size: float):
    """``reader`` (one level, already open) at ``pixel_size`` µm: itself when within 1 %, else
    resampled."""
    check_pixel_size((pixel_size, pixel_size), "the working pixel size is")
    if reader.pixel_size is None:
        raise InputError(f"'{reader.name}' records no pixel size: give it one (e.g. Preprocess) before working at "
                         f"{pixel_size:g} µm")
    if abs(reader.pixel_size[0] / pixel_size - 1) <= SAME_PIXEL_SIZE:
        return reader
    return ResampledReader(reader, (pixel_size, pixel_size))


def _resize(region: np.ndarray, size: tuple[int, int], box: tuple[float, ...]) -> np.ndarray:
    """The part ``box`` (left, top, right, bottom, in pixels of ``region``) resampled to
    ``size`` (width, height): area averaging when shrinking, bilinear when enlarging."""
    shrinking = size[0] < box[2] - box[0]
    method = PILImage.Resampling.BOX if shrinking else PILImage.Resampling.BILINEAR
    if region.dtype == np.uint8 and (region.ndim == 2 or region.shape[2] == 3):
        return np.asarray(PILImage.fromarray(region).resize(size, method, box=box))
    channels = region[..., None] if region.ndim == 2 else region
    resized = np.stack([np.asarray(PILImage.fromarray(channels[..., c].astype(np.float32)).resize(size, method, box=box))
                        for c in range(channels.shape[2])], axis=-1)
    return resized[..., 0] if region.ndim == 2 else resized
