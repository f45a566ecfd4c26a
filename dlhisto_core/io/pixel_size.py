"""Pixel sizes: read from a TIFF's tags or its OME-XML, converted to micrometres, and checked.

A pixel size must be a positive, finite, plausible length (:data:`PIXEL_SIZE_RANGE_UM`); two
sizes within :data:`SAME_PIXEL_SIZE` of each other are the same, so nothing is resampled for
a rounding difference. :func:`onto_grid` puts a label image made at one pixel size (a model's)
onto the pixels of an image of the same area at another.
"""

from __future__ import annotations
import math
import numpy as np
import re
import tifffile
from ..base.errors import InputError, one_line
import xml.etree.ElementTree as ET


_UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
               "mm": 1e3, "cm": 1e4, "m": 1e6}


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


def onto_grid(labels: np.ndarray, labels_pixel_size: tuple[float, float] | None, shape: tuple[int, int],
              pixel_size: tuple[float, float] | None) -> np.ndarray | None:
    """``labels`` on the grid of an image of ``shape``: as they are when the sizes agree;
    resampled by nearest neighbour at the pixel centres when both record a pixel size and cover
    the same area within a pixel (objects a model made at its own pixel size); else None."""
    if labels.shape[:2] == tuple(shape):
        return labels
    if labels_pixel_size is None or pixel_size is None or not all(
            abs(n * p - m * q) <= max(p, q) for n, p, m, q in zip(labels.shape, labels_pixel_size, shape, pixel_size)):
        return None
    rows, cols = (np.minimum(((np.arange(m) + 0.5) * q / p).astype(int), n - 1)
                  for n, p, m, q in zip(labels.shape, labels_pixel_size, shape, pixel_size))
    return labels[np.ix_(rows, cols)]


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


SAME_PIXEL_SIZE = 0.01
"""Pixel sizes within 1 % of each other are the same: no resampling."""


def _parse_ome(ome_xml: str) -> ET.Element | None:
    try:
        return ET.fromstring(ome_xml)
    except ET.ParseError:
        return None  # tifffile then reads the pages as a plain TIFF
