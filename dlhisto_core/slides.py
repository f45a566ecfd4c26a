"""Whole-slide scans at the right magnification: vendor formats through OpenSlide, pyramid
levels, and reading at a working pixel size.

Scanner files (Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF, Philips TIFF, one
instance of a DICOM-WSI series) are read with OpenSlide (the ``openslide-bin`` wheel: no
system library); other TIFFs, OME-TIFF pyramids included, with tifffile
(:class:`image_io.TiledImageReader`). Formats made of several files (3DHistech MRXS, VMS)
are refused in one line: Galaxy stores only their index, and the index names other files.
Both are readers of the same protocol (``shape``, ``dtype``, ``pixel_size``, ``name``,
``read_region``), one pyramid level at a time.

A step that works at a pixel size (say 0.5 µm on a 0.25 µm scan) reads the level nearest to it
that is not coarser, and resamples the rest (:class:`ResampledReader`): a 0.5 µm model on a
0.25 µm scan with a level at 1 µm reads level 0 resampled by 1/2, and at 1 µm reads level 1
directly. Outputs then have that pixel size; multiplying their coordinates by
``pixel_size / slide pixel size`` maps them back onto the slide.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .errors import InputError, one_line
from .tiff_structure import MAX_IMAGE_PIXELS, TIFF_MAGIC, check_tiff_structure
from .image_io import (OVERVIEW_SIDE, Reader, TiledImageReader, check_pixel_size, image_reader, overview_level,
                       strided_image)

SINGLE_FILE_FORMATS = {"aperio": "Aperio SVS", "hamamatsu": "Hamamatsu NDPI", "leica": "Leica SCN",
                       "ventana": "Ventana BIF", "philips": "Philips TIFF", "dicom": "DICOM-WSI (one instance)"}
"""OpenSlide formats read from the one file given. Formats made of several files (MRXS, VMS,
Trestle) are refused: their index names other files, which could be any file the job can read.
A DICOM file is opened alone (OpenSlide would otherwise read every file of its folder)."""
MRXS_INDEX = b"[GENERAL]"
"""How a 3DHistech MRXS index (Slidedat.ini-like text) begins."""
SAME_PIXEL_SIZE = 0.01
"""Pixel sizes within 1 % of each other are the same: no resampling."""
MAX_ENLARGEMENT = 16
"""Most a slide is enlarged to reach a working pixel size (a 0.03 µm model on a 0.5 µm scan)."""
RESAMPLING_MARGIN = 2
"""Source pixels read around a resampled region, so that neighbouring regions join without seams."""


def slide_format(path: str | os.PathLike, name: str | None = None) -> str | None:
    """OpenSlide's name of the scanner format of ``path`` ('aperio', 'hamamatsu', ...), or None
    for files tifffile reads better (plain and OME-TIFF, PNG, JPEG). A format of several files
    is refused."""
    import openslide

    if not Path(path).is_file():
        return None  # TiledImageReader says what is wrong
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head.lstrip(b"\xef\xbb\xbf").startswith(MRXS_INDEX):
        raise InputError(f"'{name or Path(path).name}' is the index of a 3DHistech MRXS slide, without the folder of "
                         "image data it names (Galaxy stores the index alone): export the slide as OME-TIFF or DICOM "
                         "(QuPath, bfconvert) and use that")
    is_tiff = head[:4] in TIFF_MAGIC
    if is_tiff:
        check_tiff_structure(path, name or Path(path).name)  # before OpenSlide's own parser reads it
    try:
        found = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        return None
    if found in (None, "generic-tiff"):
        return None
    is_dicom = head[128:132] == b"DICM"
    if found not in SINGLE_FILE_FORMATS or not (is_dicom if found == "dicom" else is_tiff):
        raise InputError(f"'{name or Path(path).name}' is a slide format made of several files ({found}); dlhisto "
                         f"reads single-file slides: {', '.join(SINGLE_FILE_FORMATS.values())}, OME-TIFF, TIFF")
    return found


class OpenSlideReader(Reader):
    """One pyramid level of a scanner file, as RGB uint8 (areas the scanner did not image are
    white, as glass). ``levels`` lists every level's (height, width, downsample)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | os.PathLike, level: int = 0, name: str | None = None):
        import openslide

        self.name = name or Path(path).name
        self._folder = None
        try:
            self._slide = openslide.OpenSlide(str(self._alone(path)))
        except (openslide.OpenSlideError, OSError) as exc:
            self.close()
            raise InputError(f"cannot read the slide '{self.name}': {one_line(exc) or type(exc).__name__}") from None
        self.vendor = self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        self.levels = [(h, w, d) for (w, h), d in zip(self._slide.level_dimensions, self._slide.level_downsamples)]
        self.n_levels = len(self.levels)
        if not 0 <= level < self.n_levels:
            self.close()
            raise InputError(f"'{self.name}' has {self.n_levels} resolution levels; level {level} does not exist")
        self.level = level
        height, width, self.downsample = self.levels[level]
        self.shape = (height, width, 3)
        power = self._slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        self.objective_power = _number(power)
        self.pixel_size = self._pixel_size(openslide)

    def _alone(self, path) -> Path:
        """``path``, or for a DICOM file a link to it alone in a new folder: OpenSlide reads a
        DICOM-WSI from every file of the folder, which in Galaxy holds other users' datasets."""
        with open(path, "rb") as fh:
            if fh.read(132)[128:] != b"DICM":
                return Path(path)
        self._folder = tempfile.TemporaryDirectory(prefix="dlhisto-dicom-")
        link = Path(self._folder.name) / "slide.dcm"
        link.symlink_to(Path(path).resolve())
        return link

    def _pixel_size(self, openslide) -> tuple[float, float] | None:
        sizes = [_number(self._slide.properties.get(key)) for key in
                 (openslide.PROPERTY_NAME_MPP_Y, openslide.PROPERTY_NAME_MPP_X)]
        if None in sizes:
            return None
        size = (sizes[0] * self.downsample, sizes[1] * self.downsample)
        check_pixel_size(size, f"'{self.name}' has")
        return size

    def read_region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Return pixels [y:y+height, x:x+width] of this level (clipped to it) as (h, w, 3)."""
        return self._read_level(self.level, y, x, height, width)

    def _read_level(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        import openslide

        level_height, level_width, downsample = self.levels[level]
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + height, level_height), min(x + width, level_width)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)
        origin = (round(x0 * downsample), round(y0 * downsample))  # OpenSlide: level-0 coordinates
        try:
            rgba = np.asarray(self._slide.read_region(origin, level, (x1 - x0, y1 - y0)))
        except openslide.OpenSlideError as exc:
            raise InputError(f"cannot read the slide '{self.name}': {one_line(exc)}") from None
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        if alpha.min() == 255:  # all scanned: the usual case
            return rgb
        return rgb + (255 - alpha)  # premultiplied: what was not scanned (alpha 0) becomes white

    def overview(self, longest: int = OVERVIEW_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
        """From the coarsest level whose longest side is at least ``longest / 2`` (or this level),
        every k-th pixel down to about ``longest``: the scanner's own downsampled pixels."""
        coarse = overview_level([max(level[:2]) for level in self.levels], self.level, longest)
        image = strided_image(lambda *region: self._read_level(coarse, *region), self.levels[coarse][:2], longest)
        return image, (image.shape[0] / self.shape[0], image.shape[1] / self.shape[1])

    def close(self) -> None:
        if getattr(self, "_slide", None) is not None:
            self._slide.close()
            self._slide = None
        if getattr(self, "_folder", None) is not None:
            self._folder.cleanup()
            self._folder = None


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


def open_slide(path: str | os.PathLike, name: str | None = None, pixel_size: float | None = None):
    """A reader of the image or slide at ``path``: OpenSlide for scanner formats, tifffile
    otherwise; at level 0, or at ``pixel_size`` µm (the nearest level that is not coarser,
    resampled when it differs by more than 1 %).

    Examples
    --------
    >>> from dlhisto_core.slides import open_slide
    >>> with open_slide("test-data/nuclei.tif") as reader:
    ...     reader.shape
    (512, 512)
    """
    name = name or Path(path).name
    kind = slide_format(path, name)
    open_level = (lambda level: OpenSlideReader(path, level, name)) if kind else \
        (lambda level: TiledImageReader(path, level, name))
    reader = open_level(0)
    if pixel_size is None:
        return reader
    with contextlib.ExitStack() as undo:
        undo.callback(reader.close)
        if reader.pixel_size is not None:
            level = nearest_level(reader, pixel_size, open_level)
            if level != 0:
                reader.close()
                reader = open_level(level)
                undo.callback(reader.close)
        reader = at_pixel_size(reader, pixel_size)
        undo.pop_all()
    return reader


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


def downsample_to_slide(image, name: str | None, pixel_size: float | None) -> float:
    """Slide pixels per pixel of an output made at ``pixel_size`` µm (None: the slide's own)."""
    if pixel_size is None:
        return 1.0
    with image_reader(image, name=name) as reader:
        return pixel_size / reader.pixel_size[1]


def nearest_level(reader, pixel_size: float, open_level) -> int:
    """The coarsest pyramid level whose pixel size is at most ``pixel_size`` (within 1 %):
    nothing is lost, and as little as possible is read."""
    base = reader.pixel_size[0]
    if isinstance(reader, OpenSlideReader):
        downsamples = [d for _, _, d in reader.levels]
    else:
        downsamples = []
        for level in range(reader.n_levels):
            with open_level(level) as level_reader:
                downsamples.append(reader.shape[0] / level_reader.shape[0])
    fitting = [k for k, d in enumerate(downsamples) if base * d <= pixel_size * (1 + SAME_PIXEL_SIZE)]
    return max(fitting, key=lambda k: downsamples[k]) if fitting else 0


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


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None

