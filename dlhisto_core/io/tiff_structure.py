"""A TIFF's structure checked before any reader decodes it.

A TIFF header can declare anything: a level of 10^6 x 10^6 pixels in a file of a few kilobytes,
one tile of 2^20 x 2^20 pixels (OpenSlide then asks GLib for 4 TiB and the process aborts), or
tiles that lie beyond the end of the file. :func:`check_tiff_structure` reads the header alone
(tifffile, in Python) and refuses such a file in one line before OpenSlide or tifffile decodes a
pixel: image and tile sizes, tile counts, and where every tile's bytes lie.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import tifffile

from ..base.errors import InputError, one_line

MAX_IMAGE_PIXELS = 2**36
"""Largest image or pyramid level, in pixels (about 69 gigapixels: a 40x whole-slide scan has at
most about 20)."""
MAX_TILE_PIXELS = 2**24
"""Largest tile (4096 x 4096 pixels; scanners write tiles of 240 to 1024)."""
MAX_PAGES = 10_000
"""Most images (pages) in one file."""
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_checked: set[tuple[str, int, int]] = set()
"""Files (real path, size, modification time) whose structure passed."""


def check_tiff_structure(path: str | os.PathLike, name: str | None = None) -> None:
    """Refuse a TIFF any of whose images (pages, pyramid levels) is larger than
    :data:`MAX_IMAGE_PIXELS`, has tiles larger than :data:`MAX_TILE_PIXELS`, or keeps pixel data
    outside the file."""
    name = name or Path(path).name
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _checked:  # each pyramid level is opened on its own: the header is checked once
        return
    size = stat.st_size
    try:
        with tifffile.TiffFile(path, _multifile=False, is_mmstack=False, is_ndtiff=False) as tif:
            tif.pages.useframes = False
            if len(tif.pages) > MAX_PAGES:
                raise InputError(f"'{name}' holds {len(tif.pages)} images; at most {MAX_PAGES} are accepted")
            pages = list(tif.pages)
            levels = [offset for page in pages for offset in (page.subifds or ())]
            if len(pages) + len(levels) > MAX_PAGES:
                raise InputError(f"'{name}' holds {len(pages) + len(levels)} images; at most {MAX_PAGES} are accepted")
            for page in pages + [_subifd(tif, offset) for offset in levels]:
                if page is not None:
                    _check_page(page, size, name)
        _checked.add(key)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile's errors for damaged headers vary
        raise InputError(f"cannot read '{name}' as TIFF: {one_line(exc, 200)}") from None


def _subifd(tif: tifffile.TiffFile, offset: int):
    """The page of a SubIFD (an OME-TIFF pyramid level), or None where it cannot be read."""
    tif.filehandle.seek(offset)
    try:
        return tifffile.TiffPage(tif, index=(0, 0))
    except Exception:  # noqa: BLE001 - the series reader refuses it later
        return None


def _check_page(page, file_size: int, name: str) -> None:
    width, length, depth = page.imagewidth, page.imagelength, max(page.imagedepth, 1)
    if width * length * depth > MAX_IMAGE_PIXELS:
        raise InputError(f"'{name}' declares an image of {width} x {length} pixels; at most "
                         f"{MAX_IMAGE_PIXELS / 1e9:.0f} gigapixels are accepted")
    if page.is_tiled:
        tile_width, tile_length = page.tilewidth, page.tilelength
        if tile_width * tile_length * max(page.tiledepth, 1) > MAX_TILE_PIXELS or not tile_width or not tile_length:
            raise InputError(f"'{name}' declares tiles of {tile_width} x {tile_length} pixels; at most "
                             f"{math.isqrt(MAX_TILE_PIXELS)} x {math.isqrt(MAX_TILE_PIXELS)} are accepted")
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if count and (offset < 8 or offset + count > file_size):
            raise InputError(f"cannot read '{name}' as TIFF: it is damaged or forged (pixel data at bytes "
                             f"{offset}-{offset + count} of a file of {file_size})")
