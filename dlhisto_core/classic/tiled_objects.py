"""Objects of a foreground mask of any size, labelled, split and measured strip by strip.

The mask is read in strips of ``tile_size`` rows. Connected components that touch the strip's
last row may go on below it: they are left for the next strip, which starts at their first
row. Every other component is complete, and :func:`segmentation.objects_from_mask` gives it exactly
the objects it gets on the whole mask: the size filter, the distance transform (whose nearest
background pixel always borders the component), the seeds and the watershed of a component
depend on the component alone. Complete objects are numbered, measured (``measure``) and
written to the label image's tiles as soon as every object of a row of tiles is known.

Memory follows the strip (``tile_size`` rows of the image's width) and the tallest object, never
the image's area. Objects are numbered strip by strip, in the order of their seeds within a
strip, so that the numbers can differ from those of the whole-mask labelling, the objects and
their measurements do not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from skimage import measure

from .segmentation import objects_from_mask
from ..io.readers import TiledImageReader
from ..io.writers import TileSink, write_tiled_image
from ..io.images import smallest_label_dtype
from .measure import measure_objects
from ..io.tiling import tile_grid

RowReader = Callable[[int, int], np.ndarray]
"""``read(top, height)``: the rows top to top + height - 1 of an image, over its whole width."""
SETTLED = np.uint32(2**32 - 1)
"""Label of the pixels of complete components that became no object (pieces below the size
limit): settled, so that a later strip does not take them up again; background in the output."""


def objects_by_strips(read_mask: RowReader, read_intensity: RowReader, shape: tuple[int, int], tile_size: int,
                      labels_path: str | os.PathLike, min_area: int, min_distance: int | None = None,
                      pixel_size: tuple[float, float] | None = None) -> list[dict]:
    """Label the objects of a mask (connected components, or split by watershed when
    ``min_distance`` is given; below ``min_area`` pixels dropped), write them as a tiled
    OME-TIFF and return their measurements (``measure.measure_objects`` of ``read_intensity``),
    one row per object in label order."""
    height, width = shape
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dlhisto-objects-") as work:
        provisional = Path(work) / "labels.tif"
        with TileSink(provisional, shape, np.uint32, tile_size) as sink:
            labels = np.zeros((0, width), np.uint32)  # the labels of rows written_to .. bottom - 1
            written_to = top = bottom = 0
            while bottom < height:
                bottom = min(bottom + tile_size, height)
                labels = np.concatenate([labels, np.zeros((bottom - written_to - len(labels), width), np.uint32)])
                region = labels[top - written_to:]  # a view: rows top .. bottom - 1
                mask = read_mask(top, bottom - top) & (region == 0)  # settled pixels stay out
                components = measure.label(mask)
                unfinished = np.unique(components[-1]) if bottom < height else np.zeros(1, np.int64)
                unfinished = unfinished[unfinished > 0]
                pending = np.isin(components, unfinished)
                complete = mask & ~pending
                objects = objects_from_mask(complete, min_area, min_distance)
                if objects.any():
                    objects = np.where(objects > 0, objects.astype(np.uint32) + len(rows), 0).astype(np.uint32)
                    measured = measure_objects(objects, read_intensity(top, bottom - top), pixel_size)
                    rows += [{**row, "centroid_y": row["centroid_y"] + top} for row in measured]
                region[complete] = np.where(objects[complete] > 0, objects[complete], SETTLED)
                top = top + int(np.flatnonzero(pending.any(axis=1))[0]) if unfinished.size else bottom
                done = height if bottom == height else top // tile_size * tile_size  # whole rows of tiles
                for y in range(written_to, done, tile_size):
                    band = labels[y - written_to:min(y + tile_size, height) - written_to]
                    band = np.where(band == SETTLED, 0, band)
                    for x in range(0, width, tile_size):
                        sink.put(band[:, x:x + tile_size])
                labels = labels[done - written_to:]
                written_to = done
        dtype = smallest_label_dtype(len(rows))
        with TiledImageReader(provisional) as provisional_labels:
            tiles = (provisional_labels.read_region(t.y, t.x, t.height, t.width).astype(dtype)
                     for t in tile_grid(height, width, tile_size))
            write_tiled_image(labels_path, tiles, shape, dtype, tile_size, pixel_size)
    return rows
