"""Whole-slide scans at the right magnification: vendor formats through OpenSlide, pyramid
levels, and reading at a working pixel size.

Scanner files (Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF, Philips TIFF, one
instance of a DICOM-WSI series) are read with OpenSlide (the ``openslide-bin`` wheel: no
system library); other TIFFs, OME-TIFF pyramids included, with tifffile
(:class:`readers.TiledImageReader`). Formats made of several files (3DHistech MRXS, VMS)
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

from ..base.errors import InputError, one_line
from .tiff_structure import TIFF_MAGIC, check_tiff_structure
from .readers import OVERVIEW_SIDE, Reader, TiledImageReader, overview_level, strided_image
from .pixel_size import check_pixel_size
from .pixel_size import SAME_PIXEL_SIZE
from .readers import at_pixel_size
from .readers import ArrayReader
from .images import Image

SINGLE_FILE_FORMATS = {"aperio": "Aperio SVS", "hamamatsu": "Hamamatsu NDPI", "leica": "Leica SCN",
                       "ventana": "Ventana BIF", "philips": "Philips TIFF", "dicom": "DICOM-WSI (one instance)"}
"""OpenSlide formats read from the one file given. Formats made of several files (MRXS, VMS,
Trestle) are refused: their index names other files, which could be any file the job can read.
A DICOM file is opened alone (OpenSlide would otherwise read every file of its folder)."""
MRXS_INDEX = b"[GENERAL]"
"""How a 3DHistech MRXS index (Slidedat.ini-like text) begins."""


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


def open_slide(path: str | os.PathLike, name: str | None = None, pixel_size: float | None = None):
    """A reader of the image or slide at ``path``: OpenSlide for scanner formats, tifffile
    otherwise; at level 0, or at ``pixel_size`` µm (the nearest level that is not coarser,
    resampled when it differs by more than 1 %).

    Examples
    --------
    >>> from dlhisto_core.io.slides import open_slide
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


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


@contextlib.contextmanager
def image_reader(source, name: str | None = None, pixel_size: float | None = None):
    """A reader of ``source`` for the duration of a ``with`` block: a path is opened (scanner
    formats with OpenSlide, other images with :class:`TiledImageReader`, see
    :func:`open_slide`) and closed after; an array or :class:`Image` is wrapped in an
    :class:`ArrayReader`; a reader (anything with ``read_region``) is used as it is and left
    open. With ``pixel_size`` (µm), the reader gives the image at that pixel size: from the
    nearest pyramid level that is not coarser, resampled when it differs."""
    if hasattr(source, "read_region") or isinstance(source, (np.ndarray, Image)):
        if hasattr(source, "read_region"):
            reader = source
        else:
            data, known = (source.data, source.pixel_size) if isinstance(source, Image) else (source, None)
            reader = ArrayReader(data, known, name or "array")
        yield at_pixel_size(reader, pixel_size) if pixel_size is not None else reader
    else:
        with open_slide(source, name, pixel_size) as reader:
            yield reader


def downsample_to_slide(image, name: str | None, pixel_size: float | None) -> float:
    """Slide pixels per pixel of an output made at ``pixel_size`` µm (None: the slide's own)."""
    if pixel_size is None:
        return 1.0
    with image_reader(image, name=name) as reader:
        return pixel_size / reader.pixel_size[1]
