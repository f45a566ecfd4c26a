"""Reading and writing images: TIFF / OME-TIFF (with pixel size), PNG, JPEG, label images.

Galaxy hands datasets over as ``dataset_N.dat``, so formats are recognised from the file's
first bytes, never from its name. Every image comes back as a 2-D array ``(Y, X)`` or a
channels-last array ``(Y, X, C)``; anything else (a z-stack, a time series) is refused with
an :class:`InputError` naming the axes found.

Files are hostile until checked: a TIFF is read from its own bytes only (an OME-TIFF whose
OME-XML points at other files is refused, and tifffile is never let open another file), sizes
are checked before decoding, bit depths are kept (16-bit PNG included) and the pixel size must
be a positive, finite, plausible length.

Outputs are written through :func:`outputs.atomic_output`, so a failed step never leaves a
half-written file where Galaxy (or a user) would pick it up.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import queue
import re
import tempfile
import threading
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageOps
from skimage import color

from .errors import InputError, one_line
from .tiff_structure import check_tiff_structure
from .outputs import atomic_output
from .tiling import tile_grid

MIN_SIDE = 2
"""Smallest accepted width and height, in pixels."""

SUPPORTED_DTYPES = (np.bool_, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32,
                    np.float32, np.float64)

_MAGIC = {
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
    b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg",
}

_UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
               "mm": 1e3, "cm": 1e4, "m": 1e6}

CHANNEL_AXES = "CSIQ"
"""tifffile axis codes treated as channels when they are the only non-spatial axis."""

logging.getLogger("tifffile").addHandler(logging.NullHandler())  # damage is reported by the InputError, in one line


@dataclass
class Image:
    """Pixels plus the physical pixel size, when the file records one."""

    data: np.ndarray
    pixel_size: tuple[float, float] | None = None
    """(y, x) size of one pixel in micrometres, or None when unknown."""

    @property
    def n_channels(self) -> int:
        return 1 if self.data.ndim == 2 else self.data.shape[2]


def sniff_format(path: str | os.PathLike, name: str | None = None) -> str:
    """Return 'tiff', 'png' or 'jpeg' from the file's magic bytes."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise InputError(f"cannot read '{name}': no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise InputError(f"cannot read '{name}': the file is empty")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    raise InputError(f"'{name}' is not a TIFF, PNG or JPEG image")


def read_image(path: str | os.PathLike, name: str | None = None) -> Image:
    """Read a whole 2-D image (grey, RGB or multichannel) and its pixel size.

    ``name`` is how error messages call the image (Galaxy passes the dataset's name, since
    the file itself is called ``dataset_<id>.dat``); by default the file name.
    """
    name = name or Path(path).name
    kind = sniff_format(path, name)
    try:
        if kind == "tiff":
            with open_tiff(path, name) as tif:
                series = _first_series(tif, name)
                _check_fits_in_memory(series, name)
                data = series.asarray()
                axes = series.axes
                pixel_size = _tiff_pixel_size(tif, name)
        else:
            data = _read_png_or_jpeg(path, kind, name)
            axes = "YXS" if data.ndim == 3 else "YX"
            pixel_size = None
    except InputError:
        raise
    except Exception as exc:  # any decoder failure means the file is damaged or not an image
        raise InputError(f"cannot read '{name}' as {kind.upper()}: {one_line(exc)}") from exc
    data = _to_yxc(data, axes, name)
    check_image(data, name)
    return Image(data, pixel_size)


def read_labels(path: str | os.PathLike, name: str | None = None) -> Image:
    """Read a label image: one channel, non-negative whole numbers, 0 = background."""
    name = name or Path(path).name
    image = read_image(path, name)
    labels = image.data
    if labels.ndim != 2:
        raise InputError(f"'{name}' is not a label image: it has {labels.shape[2]} channels, expected 1")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(f"'{name}' is not a label image: it holds fractional values")
    if labels.dtype.kind in "fi" and labels.min() < 0:
        raise InputError(f"'{name}' is not a label image: it holds negative values")
    if labels.dtype.kind != "u" and labels.dtype != np.bool_:
        labels = labels.astype(np.uint32)
    return Image(labels.astype(smallest_label_dtype(int(labels.max()))), image.pixel_size)


def check_image(data: np.ndarray, name: str = "image") -> None:
    """Refuse images that no step can work on: too small, wrong dtype, NaN or infinite values."""
    _check_size_and_type(data.shape, data.dtype, name)
    _check_finite(data, name)


def _check_size_and_type(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    height, width = shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputError(f"'{name}' is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if dtype.type not in SUPPORTED_DTYPES:
        raise InputError(f"'{name}' has pixel type {dtype}, which is not supported")


def _check_finite(data: np.ndarray, name: str) -> None:
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputError(f"'{name}' contains NaN or infinite pixel values")


def _first_series(tif: tifffile.TiffFile, name: str) -> tifffile.TiffPageSeries:
    if not tif.series:
        raise InputError(f"cannot read '{name}' as TIFF: it holds no readable image (damaged file?)")
    return tif.series[0]


def open_tiff(path: str | os.PathLike, name: str) -> tifffile.TiffFile:
    """Open a TIFF so that only this file is ever read.

    tifffile follows references to other files in three layouts: multi-file OME-TIFF (the
    OME-XML names files by UUID and FileName), Micro-Manager MMStack and NDTiff series (sibling
    files found by name). Those layouts are switched off, and an OME-XML that names another
    file is refused, so that a crafted upload cannot make a job return another file's pixels.
    Sizes, tiles and data offsets are checked first (:func:`tiff_structure.check_tiff_structure`).
    """
    check_tiff_structure(path, name)
    tif = tifffile.TiffFile(path, _multifile=False, is_mmstack=False, is_ndtiff=False)
    try:
        if tif.is_ome and tif.ome_metadata:
            _check_ome_references(tif.ome_metadata, name, Path(path).name)
    except BaseException:
        tif.close()
        raise
    return tif


def _check_ome_references(ome_xml: str, name: str, file_name: str) -> None:
    """Refuse an OME-XML whose image planes lie in other files, or that defines XML entities."""
    if "<!ENTITY" in ome_xml or "<!DOCTYPE" in ome_xml:
        raise InputError(f"'{name}' has OME-XML with a document type or entities, which OME-TIFF does not use; refused")
    root = _parse_ome(ome_xml)
    if root is None:
        return
    if any(el.tag.endswith("}BinaryOnly") or el.tag == "BinaryOnly" for el in root):
        raise InputError(f"'{name}' is one file of a multi-file OME-TIFF whose metadata lie in another file; "
                         "dlhisto reads only the file it is given: convert the set into one OME-TIFF")
    own = root.get("UUID")
    for uuid in (el for el in root.iter() if el.tag.endswith("}UUID") or el.tag == "UUID"):
        referenced = uuid.get("FileName", "")
        if own is None and uuid.text and Path(referenced).name in (name, file_name):
            own = uuid.text  # no UUID of its own: the file names itself
        if uuid.text != own:
            raise InputError(f"'{name}' is one file of a multi-file OME-TIFF: its OME-XML refers to "
                             f"'{one_line(referenced or uuid.text or '')}'; dlhisto reads only the file it is "
                             "given: convert the set into one OME-TIFF")


def _parse_ome(ome_xml: str) -> ET.Element | None:
    try:
        return ET.fromstring(ome_xml)
    except ET.ParseError:
        return None  # tifffile then reads the pages as a plain TIFF


def _check_fits_in_memory(series: tifffile.TiffPageSeries, name: str) -> None:
    """Refuse, before decoding, an image whose pixels alone would not fit in this computer's memory
    (a damaged or forged header can declare any size)."""
    sizes = dict(zip(series.axes, series.shape))
    _check_decoded_size(series.nbytes, sizes.get("X", "?"), sizes.get("Y", "?"), name)


def single_channel(data: np.ndarray, channel: int | None = None) -> np.ndarray:
    """The plane to segment: the given channel (0-based), or the luminance of an RGB image."""
    if data.ndim == 2:
        if channel not in (None, 0):
            raise InputError(f"the image has one channel; channel {channel + 1} does not exist")
        return data
    n_channels = data.shape[2]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise InputError(f"the image has {n_channels} channels; channel {channel + 1} does not exist")
        return data[..., channel]
    if n_channels in (3, 4):
        return color.rgb2gray(data[..., :3]).astype(np.float32)
    raise InputError(f"the image has {n_channels} channels; choose the one to segment")


def smallest_label_dtype(max_label: int) -> np.dtype:
    """uint16 while the labels fit, uint32 beyond (what Fiji, napari and QuPath read)."""
    if max_label < 2**16:
        return np.dtype(np.uint16)
    if max_label < 2**32:
        return np.dtype(np.uint32)
    raise InputError(f"{max_label} objects do not fit in a 32-bit label image")


def write_image(path: str | os.PathLike, data: np.ndarray,
                pixel_size: tuple[float, float] | None = None) -> None:
    """Write a (Y, X) or (Y, X, C) array as a zlib-compressed OME-TIFF.

    RGB uint8 images are stored as RGB; other multichannel images as one plane per channel.
    The pixel size goes into the OME-XML and the TIFF resolution tags.
    """
    if data.ndim == 3 and not (data.shape[2] in (3, 4) and data.dtype == np.uint8):
        stored, axes = np.moveaxis(data, 2, 0), "CYX"
    else:
        stored, axes = data, ("YXS" if data.ndim == 3 else "YX")
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, stored, compression="zlib", photometric="rgb" if axes == "YXS" else "minisblack",
                         **_ome_options(axes, pixel_size))


def write_tiled_image(path: str | os.PathLike, tiles: Iterator[np.ndarray], shape: tuple[int, ...],
                      dtype, tile_size: int, pixel_size: tuple[float, float] | None = None) -> None:
    """Write a tiled OME-TIFF from tiles given in row-major order, never holding the whole image.

    ``shape`` is (Y, X) or (Y, X, C); channels are stored interleaved (axes YXS), so that each
    tile is written once, as it comes.
    """
    axes = "YXS" if len(shape) == 3 else "YX"
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, tiles, shape=shape, dtype=dtype, tile=(tile_size, tile_size), compression="zlib",
                         photometric="minisblack", planarconfig="contig" if len(shape) == 3 else None,
                         **_ome_options(axes, pixel_size))


class TileSink:
    """A tiled OME-TIFF written in a background thread from tiles handed over one at a time.

    Several sinks fed from one loop write several outputs in a single pass over a slide, and
    the compression runs while the caller computes the next tile. Use it as a context manager:
    on a clean exit it waits for the file and re-raises any error of the writer; when the block
    fails, the file is abandoned and nothing is left at ``path``.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype, tile_size: int,
                 pixel_size: tuple[float, float] | None = None):
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._aborted = self._ended = False
        self._thread = threading.Thread(target=self._write, args=(path, shape, dtype, tile_size, pixel_size),
                                        daemon=True)
        self._thread.start()

    def _write(self, path, shape, dtype, tile_size, pixel_size) -> None:
        try:
            write_tiled_image(path, self._tiles(), shape, dtype, tile_size, pixel_size)
        except BaseException as exc:  # handed to the caller by put() and __exit__()
            self._error = exc
            while not self._ended:  # let the producer finish without blocking
                self._ended = self._queue.get() is None

    def _tiles(self) -> Iterator[np.ndarray]:
        while (tile := self._queue.get()) is not None:
            yield tile
        self._ended = True
        if self._aborted:
            raise InputError("output abandoned")

    def put(self, tile: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(tile)

    def __enter__(self) -> "TileSink":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._aborted = exc_type is not None
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and not self._aborted:
            raise self._error


def write_pyramid(path: str | os.PathLike, level0: str | os.PathLike, tile_size: int,
                  pixel_size: tuple[float, float] | None = None, labels: bool = False) -> int:
    """Copy the tiled TIFF ``level0`` into a pyramidal OME-TIFF at ``path``: full resolution, then
    SubIFD levels halving the size until it fits one tile. Probabilities are averaged over 2x2
    pixels; class maps and label images (``labels``) keep one pixel in four, so values stay
    valid labels. Works tile by tile; returns the number of levels."""
    with tempfile.TemporaryDirectory(prefix="dlhisto-pyramid-") as folder:
        levels = [Path(level0)]
        while True:
            with TiledImageReader(levels[-1]) as reader:
                shape, dtype = reader.shape, reader.dtype
                if max(shape[:2]) <= tile_size:
                    break
                smaller = (-(-shape[0] // 2), -(-shape[1] // 2)) + shape[2:]
                tiles = (_halve(reader.read_region(2 * t.y, 2 * t.x, 2 * t.height, 2 * t.width), labels)
                         for t in tile_grid(*smaller[:2], tile_size))
                levels.append(Path(folder) / f"level{len(levels)}.tif")
                write_tiled_image(levels[-1], tiles, smaller, dtype, tile_size)
        axes = "YXS" if len(shape) == 3 else "YX"
        with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, ome=True, bigtiff=True) as tif:
            for index, level in enumerate(levels):
                with TiledImageReader(level) as reader:
                    tiles = (reader.read_region(t.y, t.x, t.height, t.width) for t in tile_grid(*reader.shape[:2], tile_size))
                    options = _ome_options(axes, pixel_size) if index == 0 else {"subfiletype": 1}
                    options.pop("ome", None)
                    if index == 0:
                        options["subifds"] = len(levels) - 1
                    tif.write(tiles, shape=reader.shape, dtype=reader.dtype, tile=(tile_size, tile_size),
                              compression="zlib", photometric="minisblack",
                              planarconfig="contig" if len(reader.shape) == 3 else None, **options)
    return len(levels)


def _halve(region: np.ndarray, labels: bool) -> np.ndarray:
    """2x2 downsampling: keep the top-left pixel (labels) or average (values; edges padded)."""
    if labels:
        return region[::2, ::2]
    height, width = region.shape[:2]
    if height % 2 or width % 2:
        pads = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (region.ndim - 2)
        region = np.pad(region, pads, mode="edge")
    averaged = region.reshape(region.shape[0] // 2, 2, region.shape[1] // 2, 2, *region.shape[2:]).mean(axis=(1, 3))
    return averaged.astype(region.dtype)


def _ome_options(axes: str, pixel_size: tuple[float, float] | None) -> dict:
    """tifffile arguments for an OME-TIFF with these axes and pixel size (OME-XML and resolution tags)."""
    metadata: dict = {"axes": axes}
    options: dict = {"ome": True, "metadata": metadata}
    if pixel_size is not None:
        size_y, size_x = pixel_size
        metadata.update(PhysicalSizeY=size_y, PhysicalSizeYUnit="µm", PhysicalSizeX=size_x, PhysicalSizeXUnit="µm")
        options.update(resolution=(1e4 / size_x, 1e4 / size_y), resolutionunit="CENTIMETER")
    return options


def write_labels(path: str | os.PathLike, labels: np.ndarray,
                 pixel_size: tuple[float, float] | None = None) -> None:
    """Write a label image as OME-TIFF in the smallest unsigned type that holds it."""
    dtype = smallest_label_dtype(int(labels.max()) if labels.size else 0)
    write_image(path, labels.astype(dtype, copy=False), pixel_size)


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


@contextlib.contextmanager
def image_reader(source, name: str | None = None, pixel_size: float | None = None):
    """A reader of ``source`` for the duration of a ``with`` block: a path is opened (scanner
    formats with OpenSlide, other images with :class:`TiledImageReader`, see
    :func:`slides.open_slide`) and closed after; an array or :class:`Image` is wrapped in an
    :class:`ArrayReader`; a reader (anything with ``read_region``) is used as it is and left
    open. With ``pixel_size`` (µm), the reader gives the image at that pixel size: from the
    nearest pyramid level that is not coarser, resampled when it differs."""
    from . import slides

    if hasattr(source, "read_region") or isinstance(source, (np.ndarray, Image)):
        if hasattr(source, "read_region"):
            reader = source
        else:
            data, known = (source.data, source.pixel_size) if isinstance(source, Image) else (source, None)
            reader = ArrayReader(data, known, name or "array")
        yield slides.at_pixel_size(reader, pixel_size) if pixel_size is not None else reader
    else:
        with slides.open_slide(source, name, pixel_size) as reader:
            yield reader


def _channel_axis(axes: str, shape: tuple[int, ...], name: str) -> int | None:
    """Index of the channel axis (None for grey); refuse anything that is not 2-D."""
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"'{name}' has no Y and X axes (axes {axes}, shape {tuple(shape)})")
    extra = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if len(extra) > 1 or (extra and axes[extra[0]] not in CHANNEL_AXES):
        found = "".join(a for i, a in enumerate(axes) if a in "YX" or shape[i] > 1)
        raise InputError(f"'{name}' is not a 2-D image: axes {found}, shape {tuple(shape)}; "
                         "expected YX or YX plus channels")
    return extra[0] if extra else None


def _select_yxc(array, axes: str, channel_axis: int | None, ys: slice, xs: slice) -> np.ndarray:
    """Index a region out of an N-D array and return it as (h, w) or (h, w, C)."""
    index = tuple(ys if a == "Y" else xs if a == "X" else
                  (slice(None) if i == channel_axis else 0) for i, a in enumerate(axes))
    kept = [a for i, a in enumerate(axes) if a in "YX" or i == channel_axis]
    order = [kept.index("Y"), kept.index("X")]
    if channel_axis is not None:
        order.append(kept.index(axes[channel_axis]))
    return np.ascontiguousarray(np.transpose(np.asarray(array[index]), order))


def _to_yxc(data: np.ndarray, axes: str, name: str) -> np.ndarray:
    """Drop singleton axes and move a channel axis last; refuse anything that is not 2-D."""
    channel_axis = _channel_axis(axes, data.shape, name)
    return _select_yxc(data, axes, channel_axis, slice(None), slice(None))


def _read_png_or_jpeg(path: str | os.PathLike, kind: str, name: str) -> np.ndarray:
    """Pixels of a PNG or JPEG with their bit depth: Pillow reads 16-bit colour PNGs as 8-bit,
    so those are decoded by imagecodecs (after a size check)."""
    if kind == "png":
        width, height, bit_depth, colour_type = _png_header(path, name)
        if bit_depth == 16 and colour_type in PNG_COLOUR_TYPES_WITH_CHANNELS:
            channels = PNG_COLOUR_TYPES_WITH_CHANNELS[colour_type]
            _check_decoded_size(width * height * channels * 2, width, height, name)
            import imagecodecs
            data = imagecodecs.png_decode(Path(path).read_bytes())
            return data[..., 0] if data.ndim == 3 and channels == 2 else data  # grey + alpha: the grey plane
    with warnings.catch_warnings():  # Pillow's bomb warning: refused below, in one line, if it does not fit
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(path, formats=[kind.upper()]) as pil:
            width, height = pil.size
            _check_decoded_size(width * height * max(1, len(pil.getbands())) * 4, width, height, name)
            upright = ImageOps.exif_transpose(pil)  # a camera's EXIF orientation, as browsers and Fiji show it
            return np.asarray(_pil_to_supported_mode(upright))


PNG_COLOUR_TYPES_WITH_CHANNELS = {2: 3, 4: 2, 6: 4}
"""PNG colour types of several samples per pixel (RGB, grey + alpha, RGBA) and their counts."""


def _png_header(path: str | os.PathLike, name: str) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise InputError(f"cannot read '{name}' as PNG: its header is damaged")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return width, height, head[24], head[25]


def _check_decoded_size(nbytes: int, width, height, name: str) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > memory:
        raise InputError(f"'{name}' is {width}x{height} pixels ({nbytes / 2**30:.0f} GiB), too large to load whole "
                         f"on this computer ({memory / 2**30:.0f} GiB of memory): crop it, or use a step that reads it "
                         "tile by tile (predict, pixel_classifier_predict)")


def _pil_to_supported_mode(pil: PILImage.Image) -> PILImage.Image:
    """Palette and odd modes become RGB(A) or grey; 16-bit PNGs keep their depth."""
    if pil.mode in ("P", "PA"):
        return pil.convert("RGBA" if "transparency" in pil.info or pil.mode == "PA" else "RGB")
    if pil.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return pil.convert("RGB")
    if pil.mode == "LA":
        return pil.convert("L")
    return pil


def _tiff_pixel_size(tif: tifffile.TiffFile, name: str) -> tuple[float, float] | None:
    """Pixel size in µm from OME-XML, ImageJ metadata, Aperio MPP or the resolution tags;
    a recorded size that is not a plausible length is refused (:func:`check_pixel_size`)."""
    size = _recorded_pixel_size(tif, name)
    if size is not None:
        check_pixel_size(size, f"'{name}' records a pixel size of")
    return size


PIXEL_SIZE_RANGE_UM = (1e-4, 1e4)
"""Pixel sizes accepted, in µm: from 0.1 nm (electron microscopy) to 1 cm (a photograph)."""


def check_pixel_size(size: tuple[float, float], what: str) -> None:
    """Refuse a (y, x) pixel size that is not a finite length within :data:`PIXEL_SIZE_RANGE_UM`."""
    low, high = PIXEL_SIZE_RANGE_UM
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= high for v in size):
        shown = " x ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in size)
        raise InputError(f"{what} {shown} µm; a pixel size must be between {low:g} and {high:g} µm")


def _recorded_pixel_size(tif: tifffile.TiffFile, name: str) -> tuple[float, float] | None:
    if tif.is_ome and tif.ome_metadata:
        size = _ome_pixel_size(tif.ome_metadata, name)
        if size:
            return size
    page = tif.pages.first
    if tif.is_svs:
        match = re.search(r"MPP\s*=\s*([^|\s]+)", page.description or "")
        if match:
            mpp = _number(match.group(1), name, "Aperio MPP")
            return (mpp, mpp)
    x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x_res is None or y_res is None:
        return None
    per_x, per_y = (_rational(t.value) for t in (x_res, y_res))
    if not per_x or not per_y:
        return None
    if tif.is_imagej:
        unit = (tif.imagej_metadata or {}).get("unit", "")
        factor = _UNIT_TO_UM.get(str(unit).replace("\\u00B5", "µ"))
        return (factor / per_y, factor / per_x) if factor else None
    unit = page.tags.get("ResolutionUnit")
    unit = int(unit.value) if unit is not None else 2
    if unit == 3:  # centimetre
        return (1e4 / per_y, 1e4 / per_x)
    if unit == 2 and per_x not in (72.0, 96.0):  # inch; 72/96 dpi are screen defaults, not optics
        return (25400 / per_y, 25400 / per_x)
    return None


def _ome_pixel_size(ome_xml: str, name: str) -> tuple[float, float] | None:
    root = _parse_ome(ome_xml)
    if root is None:
        return None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    size_x = _number(pixels.get("PhysicalSizeX"), name, "OME PhysicalSizeX")
    size_y = _number(pixels.get("PhysicalSizeY", pixels.get("PhysicalSizeX")), name, "OME PhysicalSizeY")
    unit_x = _UNIT_TO_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
    unit_y = _UNIT_TO_UM.get(pixels.get("PhysicalSizeYUnit", "µm"))
    if unit_x is None or unit_y is None:
        return None
    return (size_y * unit_y, size_x * unit_x)


def _number(text: str | None, name: str, what: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"'{name}' records its {what} as '{one_line(str(text))[:40]}', which is not a number") from None


def _rational(value) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else 0.0
    return float(value)

