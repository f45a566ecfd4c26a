"""Polygon rings rasterised by scanlines: the pixels whose centres lie inside a ring or on it."""

from __future__ import annotations

import numpy as np

ON_RING = 1e-9
"""How close to a polygon's edge a pixel centre lies on it."""
EDGES_AT_ONCE = 65536
"""Polygon edges rasterised together (their crossings are held in memory at once)."""


def ring_pixels(coords, top: int, left: int, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the window of ``shape`` at image row ``top`` and column ``left`` whose centres
    lie inside the ring or on it (as scikit-image's ``draw.polygon`` decides), found by scanlines:
    each edge toggles, on every pixel row it crosses, the pixels right of its crossing (even-odd
    rule), so that the cost follows the rows the edges cross, not pixels x vertices."""
    height, width = shape
    toggles = np.zeros((height, width + 1), np.uint8)
    on_ring = np.zeros((height, width), bool)
    points = np.asarray(coords, np.float64) - [left + 0.5, top + 0.5]  # pixel centres at whole numbers
    _mark_points(on_ring, points[:, 1], points[:, 0])
    for start in range(0, len(points) - 1, EDGES_AT_ONCE):
        corners = points[start:start + EDGES_AT_ONCE + 1]
        (x0, y0), (x1, y1) = corners[:-1].T, corners[1:].T
        first = np.clip(np.ceil(np.minimum(y0, y1)), 0, height).astype(np.int64)  # rows y0 <= row < y1
        counts = np.clip(np.ceil(np.maximum(y0, y1)), 0, height).astype(np.int64) - first
        edge = np.repeat(np.arange(len(counts)), counts)
        rows = first[edge] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        x = x0[edge] + (rows - y0[edge]) / (y1[edge] - y0[edge]) * (x1[edge] - x0[edge])
        np.add.at(toggles, (rows, np.clip(np.ceil(x), 0, width).astype(np.int64)), 1)
        _mark_points(on_ring, rows, x)
        for k in np.nonzero((y0 == y1) & (y0 == np.round(y0)))[0]:  # a horizontal edge along a row of centres
            low, high = sorted((x0[k], x1[k]))
            row_points = np.arange(np.ceil(low - ON_RING), np.floor(high + ON_RING) + 1)
            _mark_points(on_ring, np.full(len(row_points), y0[k]), row_points)
    return ((np.cumsum(toggles, axis=1, dtype=np.uint32)[:, :width] & 1) > 0) | on_ring


def _mark_points(mask: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> None:
    """Set the pixels whose centres are the given points, where they are pixel centres in the mask."""
    inside = (rows > -1) & (rows < mask.shape[0]) & (columns > -1) & (columns < mask.shape[1])
    rows, columns = rows[inside], columns[inside]
    whole = (np.abs(rows - np.round(rows)) < ON_RING) & (np.abs(columns - np.round(columns)) < ON_RING)
    mask[np.round(rows[whole]).astype(np.int64), np.round(columns[whole]).astype(np.int64)] = True
