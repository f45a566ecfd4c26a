"""Deep Zoom (DZI) tile pyramids, made once, strip by strip, in bounded memory.

A pyramid is written as Deep Zoom's ``NAME.dzi`` (XML: tile size, overlap, format, size) and
``NAME_files/LEVEL/COLUMN_ROW.FORMAT``, which OpenSeadragon reads as it is; level ``L`` is the
image halved ``top - L`` times, down to one pixel. The full-resolution image is read in strips
of one tile row; each strip is cut into tiles, then halved into the strip buffer of the level
below, which is written in its turn when it holds a tile row: memory holds about two strips
per level (a 45000-pixel-wide RGB slide: about 0.14 GB per level), whatever the slide's height.
Tiles are encoded on a pool of threads (Pillow's encoders release the GIL).

Overlays (objects, regions, heatmaps) are RGBA pyramids whose empty tiles are not written: the
pyramid's ``present`` bitmaps say which tiles exist, so that the viewer never asks for the
others.
"""

from __future__ import annotations

import base64
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

TILE_SIZE = 512
"""Side of a Deep Zoom tile, in pixels: 512 rather than the usual 254 or 256, so that a view needs a
quarter of the requests (a served dataset's requests are not cheap: Galaxy checks each) and a
slide a quarter of the files."""
JPEG_QUALITY = 85
"""Quality of the slide's JPEG tiles (DeepZoomGenerator's default is 75; 85 keeps nuclear texture)."""
PNG_COMPRESSION = 1
"""zlib level of the overlays' PNG tiles: they are mostly flat colour, so level 1 is nearly as small as 9."""
IN_FLIGHT_PER_THREAD = 64
"""Tiles queued for encoding per thread before the reader waits: bounds the memory of the queue."""


@dataclass
class Pyramid:
    """A written Deep Zoom pyramid: its size, format and, for overlays, which tiles exist."""

    name: str
    width: int
    height: int
    tile_format: str
    present: dict[int, str] = field(default_factory=dict)
    """For pyramids that skip empty tiles: per level, a base64 bitmap of its tiles, row-major."""

    @property
    def levels(self) -> int:
        return level_count(self.width, self.height)

    def manifest(self) -> dict:
        """How the viewer's page describes it (``viewer.json``)."""
        described = {"dzi": f"{self.name}.dzi", "format": self.tile_format, "tile_size": TILE_SIZE,
                     "width": self.width, "height": self.height}
        if self.present:
            described["present"] = {str(level): bits for level, bits in self.present.items()}
        return described


def level_count(width: int, height: int) -> int:
    """Deep Zoom levels of an image: the full resolution is level ``ceil(log2(longest side))``."""
    return math.ceil(math.log2(max(width, height, 1))) + 1


def halve_rgb(strip: np.ndarray) -> np.ndarray:
    """An RGB strip halved by the mean of each 2 x 2 block (odd edges: the last row or column repeated)."""
    corners = _corners(strip)
    total = corners[0].astype(np.uint16)
    for corner in corners[1:]:
        total += corner
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def halve_rgba(strip: np.ndarray) -> np.ndarray:
    """An RGBA overlay halved: colour averaged over the covered pixels of each 2 x 2 block,
    opacity their maximum, so that thin outlines stay visible on the overview."""
    corners = _corners(strip)
    alphas = [corner[..., 3:].astype(np.uint32) for corner in corners]
    weight = alphas[0] + alphas[1] + alphas[2] + alphas[3]
    colour = sum(corner[..., :3] * alpha for corner, alpha in zip(corners, alphas))
    colour = (colour + weight // 2) // np.maximum(weight, 1)
    opacity = np.maximum(np.maximum(corners[0][..., 3], corners[1][..., 3]),
                         np.maximum(corners[2][..., 3], corners[3][..., 3]))
    return np.concatenate([colour.astype(np.uint8), opacity[..., None]], axis=-1)


def _corners(strip: np.ndarray) -> list[np.ndarray]:
    """The four pixels of every 2 x 2 block, as four strided views (no copy unless a side is odd)."""
    rows, columns = strip.shape[:2]
    if rows % 2 or columns % 2:
        strip = np.pad(strip, ((0, rows % 2), (0, columns % 2), (0, 0)), mode="edge")
    return [strip[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]


class _Encoder:
    """Tiles encoded and written on a thread pool, at most a bounded number queued."""

    def __init__(self, threads: int, tile_format: str):
        self.pool = ThreadPoolExecutor(max(threads, 1))
        self.limit = IN_FLIGHT_PER_THREAD * max(threads, 1)
        self.pending: list[Future] = []
        self.tile_format = tile_format

    def submit(self, tile: np.ndarray, path: Path) -> None:
        if len(self.pending) >= self.limit:
            done, self.pending = self.pending[:self.limit // 2], self.pending[self.limit // 2:]
            for future in done:
                future.result()
        self.pending.append(self.pool.submit(self._write, np.ascontiguousarray(tile), path))

    def _write(self, tile: np.ndarray, path: Path) -> None:
        from PIL import Image

        picture = Image.fromarray(tile)
        if self.tile_format == "jpeg":
            picture.save(path, "JPEG", quality=JPEG_QUALITY)
        else:
            picture.save(path, "PNG", compress_level=PNG_COMPRESSION)

    def close(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pool.shutdown(cancel_futures=True)


def write_pyramid(read_strip: Callable[[int, int], np.ndarray], width: int, height: int, folder: Path, name: str,
                  tile_format: str = "jpeg", threads: int = 1) -> Pyramid:
    """Write the Deep Zoom pyramid of an image ``width`` x ``height`` into ``folder``.

    ``read_strip(top, rows)`` gives rows ``top`` .. ``top + rows - 1`` of the full resolution:
    (rows, width, 3) uint8 for ``tile_format`` 'jpeg' (a slide), (rows, width, 4) uint8 for
    'png' (an overlay; its fully transparent tiles are not written, see :class:`Pyramid`).
    """
    top_level = level_count(width, height) - 1
    files = folder / f"{name}_files"
    overlay = tile_format == "png"
    halve = halve_rgba if overlay else halve_rgb
    sizes = {level: (math.ceil(width / 2 ** (top_level - level)), math.ceil(height / 2 ** (top_level - level)))
             for level in range(top_level + 1)}
    present = {level: np.zeros((math.ceil(h / TILE_SIZE), math.ceil(w / TILE_SIZE)), bool)
               for level, (w, h) in sizes.items()} if overlay else {}
    for level in sizes:
        (files / str(level)).mkdir(parents=True, exist_ok=True)
    encoder = _Encoder(threads, tile_format)
    buffers: dict[int, list[np.ndarray]] = {level: [] for level in sizes}
    next_row = dict.fromkeys(sizes, 0)  # the tile row each level writes next

    def emit(level: int, strip: np.ndarray) -> None:
        row = next_row[level]
        next_row[level] += 1
        for column in range(math.ceil(strip.shape[1] / TILE_SIZE)):
            tile = strip[:, column * TILE_SIZE:(column + 1) * TILE_SIZE]
            if overlay:
                if not tile[..., 3].any():
                    continue
                present[level][row, column] = True
            encoder.submit(tile, files / str(level) / f"{column}_{row}.{tile_format}")
        if level > 0:
            feed(level - 1, halve(strip))

    def feed(level: int, rows: np.ndarray) -> None:
        buffers[level].append(rows)
        held = sum(part.shape[0] for part in buffers[level])
        last = next_row[level] * TILE_SIZE + held >= sizes[level][1]
        if held >= TILE_SIZE or last:
            joined = np.concatenate(buffers[level])
            buffers[level] = [joined[TILE_SIZE:]] if held > TILE_SIZE else []
            emit(level, joined[:TILE_SIZE])

    try:
        for top in range(0, height, TILE_SIZE):
            strip = np.asarray(read_strip(top, min(TILE_SIZE, height - top)))
            emit(top_level, strip)
    finally:
        encoder.close()
    (folder / f"{name}.dzi").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{tile_format}" Overlap="0" '
        f'TileSize="{TILE_SIZE}"><Size Width="{width}" Height="{height}"/></Image>\n')
    return Pyramid(name, width, height, tile_format,
                   {level: base64.b64encode(np.packbits(bits, axis=None, bitorder="little").tobytes()).decode()
                    for level, bits in present.items()})
