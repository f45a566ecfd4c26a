"""Writing images: TIFF / OME-TIFF with the pixel size, tiled and pyramidal for slides of
any size, and label images in the smallest integer type that holds them.

Outputs are written through :func:`outputs.atomic_output`, so a failed step never leaves a
half-written file where Galaxy (or a user) would pick it up.
"""

from __future__ import annotations
import math
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Iterator
import numpy as np
import tifffile
from ..base.errors import InputError
from .outputs import atomic_output
from .tiling import tile_grid
from .readers import TiledImageReader
from .images import smallest_label_dtype


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


BIGTIFF_FROM = 2**32 - 2**25
"""Bytes of pixels from which a tiled image is written as BigTIFF (tifffile's own limit)."""


def write_tiled_image(path: str | os.PathLike, tiles: Iterator[np.ndarray], shape: tuple[int, ...],
                      dtype, tile_size: int, pixel_size: tuple[float, float] | None = None) -> None:
    """Write a tiled OME-TIFF from tiles given in row-major order, never holding the whole image.

    ``shape`` is (Y, X) or (Y, X, C); channels are stored interleaved (axes YXS), so that each
    tile is written once, as it comes. Images whose pixels could pass 4 GB are BigTIFF (tifffile
    cannot tell from tiles, and a classic TIFF's offsets end at 4 GB).
    """
    axes = "YXS" if len(shape) == 3 else "YX"
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, tiles, shape=shape, dtype=dtype, tile=(tile_size, tile_size), compression="zlib",
                         photometric="minisblack", planarconfig="contig" if len(shape) == 3 else None,
                         bigtiff=math.prod(shape) * np.dtype(dtype).itemsize > BIGTIFF_FROM,
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
