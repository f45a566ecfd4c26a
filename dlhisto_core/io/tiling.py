"""Cutting an image into tiles, in the row-major order in which TIFF stores them, and working
on them in parallel."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from ..base.errors import InputError
from ..base.bounds import check_number
from ..base.threads import cpu_threads

MAX_TILE_SIZE = 8192
"""Largest tile or window side in pixels (a window of 8192 px is 256 MB of float32 per channel)."""
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    height: int
    width: int

    def with_halo(self, halo: int) -> "Tile":
        """The tile grown by ``halo`` pixels on every side (it may reach outside the image)."""
        return Tile(self.y - halo, self.x - halo, self.height + 2 * halo, self.width + 2 * halo)


def tile_grid(height: int, width: int, tile_size: int) -> Iterator[Tile]:
    """Tiles of ``tile_size`` pixels covering the image row by row; the last ones are cut short."""
    check_tile_size(tile_size)
    for y in range(0, height, tile_size):
        for x in range(0, width, tile_size):
            yield Tile(y, x, min(tile_size, height - y), min(tile_size, width - x))


def check_tile_size(tile_size: int) -> None:
    """TIFF tiles must be multiples of 16 pixels; below 64 the halo would dominate the work."""
    check_number(tile_size, "tile size", 64, MAX_TILE_SIZE)
    if tile_size % 16:
        raise InputError(f"tile size must be a multiple of 16 and at least 64, got {tile_size}")


def map_in_order(function: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``map(function, items)`` on a pool of threads, results in order, at most 2 x workers in flight.

    For per-tile work that releases the GIL (SciPy filters, scikit-learn forests): the cores
    share the tiles while memory stays bounded by the few tiles in flight.
    """
    workers = workers or cpu_threads() or len(os.sched_getaffinity(0))  # --threads, else the cores this job may use
    if workers == 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
