"""The viewer's page: a slide and its results, zoomable from the overview to full resolution.

:func:`make_viewer` writes one HTML page and a folder beside it: the slide's Deep Zoom tiles,
one tile pyramid per overlay (:mod:`layers`), the click lookups, OpenSeadragon (vendored,
:mod:`assets`) and dlhisto's glue (``static/viewer.js``). The page works from any static web
server, Galaxy's display of an HTML dataset included (the folder is the dataset's extra files),
and from a downloaded copy opened from disk: it makes no request that a ``file://`` page cannot
(tiles are images, lookups are scripts, the description is inline).

Text from the inputs (file names, class and measurement names) reaches the page only as JSON
data, shown with ``textContent``: a crafted class name cannot become markup or script.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..io.outputs import atomic_output
from ..io.slides import image_reader
from ..imaging.intensity import channel_range, stretch
from .assets import GLUE_FOLDER, vendored_files
from .layers import Layer, ViewOptions, heatmap_layers, vector_layer
from .tiles import write_pyramid

TILES = "tiles"
"""The folder of tiles and lookups inside the page's folder."""
GLUE_FILES = ("viewer.js", "viewer.css")
DISPLAY_PERCENTILES = (1.0, 99.5)
"""Intensities mapped onto black and white for images that are not 8-bit RGB (fluorescence)."""


@dataclass
class ViewerSummary:
    """What a page shows: the slide's size and levels, and each layer's name and object count."""

    width: int
    height: int
    levels: int
    pixel_size: float | None
    layers: list[tuple[str, str, int | None]]
    """(name, kind, features) per layer; features is None for heatmaps."""


def make_viewer(slide, page: str | os.PathLike, folder: str | os.PathLike, objects=(), regions=(), heatmaps=(),
                options: ViewOptions | None = None, slide_name: str | None = None, files_url: str | None = None,
                threads: int = 1) -> ViewerSummary:
    """Write the viewer of ``slide`` (a file any dlhisto step reads: scanner formats, OME-TIFF,
    TIFF, PNG) with its results over it.

    Parameters
    ----------
    slide : path
        The slide or image; its full resolution is the viewer's deepest zoom.
    page, folder : path
        The HTML page, and the folder its files go into (Galaxy: the dataset's extra files).
    objects, regions : sequence of (path, name)
        QuPath GeoJSON: objects outlined (predict, segment_classic, the pixel and object
        classifiers), regions filled (a tissue map of classify, QuPath annotations); in the
        slide's full-resolution coordinates.
    heatmaps : sequence of (path, name)
        Probability maps (OME-TIFF, one layer per channel) or class maps, placed on the slide
        by their pixel size.
    files_url : str, optional
        The folder's URL relative to the page (default: its path relative to the page's
        folder; Galaxy: '' as a dataset's extra files are served beside it).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from dlhisto_core.view.page import make_viewer
    >>> with tempfile.TemporaryDirectory() as out:
    ...     summary = make_viewer("test-data/nuclei.tif", Path(out) / "nuclei.html", Path(out) / "nuclei_files")
    >>> summary.width, summary.height, summary.levels
    (512, 512, 10)
    """
    options = options or ViewOptions()
    page, folder = Path(page), Path(folder)
    vendor = vendored_files()
    if files_url is None:
        files_url = os.path.relpath(folder.resolve(), page.resolve().parent).replace(os.sep, "/") + "/"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{TILES}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        with image_reader(slide, slide_name) as reader:
            name = slide_name or getattr(reader, "name", Path(str(slide)).name)
            height, width = reader.shape[:2]
            pixel_size = reader.pixel_size[1] if reader.pixel_size else None
            to_rgb = _display(reader)
            slide_pyramid = write_pyramid(lambda top, rows: to_rgb(reader.read_region(top, 0, rows, width)),
                                          width, height, partial, "slide", "jpeg", threads)
        layers: list[Layer] = []
        for kind, inputs in (("regions", regions), ("objects", objects)):
            for number, (path, layer_name) in enumerate(inputs, 1):
                layers.append(vector_layer(path, kind, layer_name, (height, width), partial, f"{kind}_{number}",
                                           options, threads))
        for number, (path, layer_name) in enumerate(heatmaps, 1):
            layers += heatmap_layers(path, layer_name, pixel_size, (height, width), partial, f"heatmap_{number}",
                                     options, threads)
        for k, layer in enumerate(layers):  # heatmaps open switched off, but for the first when it is alone
            layer.shown = layer.kind != "heatmap" or (k == 0 and not (regions or objects))
        for source in [*vendor, *(GLUE_FOLDER / f for f in GLUE_FILES)]:
            shutil.copyfile(source, partial / source.name)
        shutil.rmtree(folder / TILES, ignore_errors=True)
        partial.rename(folder / TILES)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    description = {"name": name, "pixel_size": pixel_size, "slide": slide_pyramid.manifest(),
                   "layers": [layer.manifest() for layer in layers]}
    with atomic_output(page) as part:
        part.write_text(_html(name, description, files_url + TILES + "/"), encoding="utf-8")
    return ViewerSummary(width, height, slide_pyramid.levels, pixel_size,
                         [(layer.name, layer.kind, sum(e["count"] or 0 for e in layer.legend)
                           if layer.kind != "heatmap" else None) for layer in layers])


def _display(reader):
    """How a region of the slide becomes 8-bit RGB: as it is for RGB slides; otherwise each
    channel (the first three) stretched between percentiles of the overview, grey for one."""
    channels = reader.shape[2] if len(reader.shape) == 3 else 1
    if channels in (3, 4) and reader.dtype == np.uint8:
        return lambda region: np.asarray(region)[..., :3]
    overview, _ = reader.overview()
    low, high = channel_range(overview.reshape(*overview.shape[:2], channels)[..., :3], percentiles=DISPLAY_PERCENTILES)
    if not np.isfinite(low).all() or not np.isfinite(high).all():
        raise InputError(f"'{reader.name}' has no finite intensities to show")

    def stretched(region: np.ndarray) -> np.ndarray:
        region = np.asarray(region).reshape(*region.shape[:2], channels)[..., :3]
        scaled = (np.clip(stretch(region, low, high), 0, 1) * 255).astype(np.uint8)
        if scaled.shape[2] == 1:
            return np.repeat(scaled, 3, axis=2)
        return np.pad(scaled, ((0, 0), (0, 0), (0, 3 - scaled.shape[2])))  # two channels: red and green

    return stretched


def _html(title: str, description: dict, base: str) -> str:
    """The page: the description inline as JSON (``<`` escaped, so no text can close the
    script element), the libraries and glue from the folder."""
    data = json.dumps({**description, "base": base}, allow_nan=False).replace("<", "\\u003c")
    base_attr = html.escape(base, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}: dlhisto viewer</title>
<link rel="stylesheet" href="{base_attr}viewer.css">
</head>
<body>
<div id="viewer"></div>
<aside id="panel">
  <h1 id="title"></h1>
  <p id="size"></p>
  <section id="layers"><h2>Layers</h2></section>
  <section id="details"><h2>Object</h2><p class="hint">Click an object to see its measurements.</p></section>
</aside>
<div id="scalebar"><div id="scalebar-line"></div><span id="scalebar-text"></span></div>
<script type="application/json" id="dlhisto-viewer">{data}</script>
<script src="{base_attr}openseadragon.min.js"></script>
<script src="{base_attr}viewer.js"></script>
</body>
</html>
"""
