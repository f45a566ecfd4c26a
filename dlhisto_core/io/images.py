"""Reading and writing images: TIFF / OME-TIFF (with pixel size), PNG, JPEG, label images.

Galaxy hands datasets over as ``dataset_N.dat``, so formats are recognised from the file's
first bytes, never from its name. Every image comes back as a 2-D array ``(Y, X)`` or a
channels-last array ``(Y, X, C)``; anything else (a z-stack, a time series) is refused with
an :class:`InputError` naming the axes found.

Files are hostile until checked: a TIFF is read from its own bytes only (an OME-TIFF whose
OME-XML points at other files is refused, and tifffile is never let open another file), sizes
are checked before decoding, bit depths are kept (16-bit PNG included) and the pixel size must
be a positive, finite, plausible length.

Outputs are written through :func:`outputs.atomic_output`, so a failed step never leaves a
half-written file where Galaxy (or a user) would pick it up.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps
from skimage import color

from ..base.errors import InputError, one_line
from .pixel_size import _tiff_pixel_size
from dataclasses import dataclass
import tifffile
from .tiff_structure import check_tiff_structure
from .pixel_size import _parse_ome


_MAGIC = {
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
    b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg",
}


logging.getLogger("tifffile").addHandler(logging.NullHandler())  # damage is reported by the InputError, in one line


def sniff_format(path: str | os.PathLike, name: str | None = None) -> str:
    """Return 'tiff', 'png' or 'jpeg' from the file's magic bytes."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise InputError(f"cannot read '{name}': no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise InputError(f"cannot read '{name}': the file is empty")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    raise InputError(f"'{name}' is not a TIFF, PNG or JPEG image")


def read_image(path: str | os.PathLike, name: str | None = None) -> Image:
    """Read a whole 2-D image (grey, RGB or multichannel) and its pixel size.

    ``name`` is how error messages call the image (Galaxy passes the dataset's name, since
    the file itself is called ``dataset_<id>.dat``); by default the file name.
    """
    name = name or Path(path).name
    kind = sniff_format(path, name)
    try:
        if kind == "tiff":
            with open_tiff(path, name) as tif:
                series = _first_series(tif, name)
                _check_fits_in_memory(series, name)
                data = series.asarray()
                axes = series.axes
                pixel_size = _tiff_pixel_size(tif, name)
        else:
            data = _read_png_or_jpeg(path, kind, name)
            axes = "YXS" if data.ndim == 3 else "YX"
            pixel_size = None
    except InputError:
        raise
    except Exception as exc:  # any decoder failure means the file is damaged or not an image
        raise InputError(f"cannot read '{name}' as {kind.upper()}: {one_line(exc)}") from exc
    data = _to_yxc(data, axes, name)
    check_image(data, name)
    return Image(data, pixel_size)


def read_labels(path: str | os.PathLike, name: str | None = None) -> Image:
    """Read a label image: one channel, non-negative whole numbers, 0 = background."""
    name = name or Path(path).name
    image = read_image(path, name)
    labels = image.data
    if labels.ndim != 2:
        raise InputError(f"'{name}' is not a label image: it has {labels.shape[2]} channels, expected 1")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(f"'{name}' is not a label image: it holds fractional values")
    if labels.dtype.kind in "fi" and labels.min() < 0:
        raise InputError(f"'{name}' is not a label image: it holds negative values")
    if labels.dtype.kind != "u" and labels.dtype != np.bool_:
        labels = labels.astype(np.uint32)
    return Image(labels.astype(smallest_label_dtype(int(labels.max()))), image.pixel_size)


def single_channel(data: np.ndarray, channel: int | None = None) -> np.ndarray:
    """The plane to segment: the given channel (0-based), or the luminance of an RGB image."""
    if data.ndim == 2:
        if channel not in (None, 0):
            raise InputError(f"the image has one channel; channel {channel + 1} does not exist")
        return data
    n_channels = data.shape[2]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise InputError(f"the image has {n_channels} channels; channel {channel + 1} does not exist")
        return data[..., channel]
    if n_channels in (3, 4):
        return color.rgb2gray(data[..., :3]).astype(np.float32)
    raise InputError(f"the image has {n_channels} channels; choose the one to segment")


def _read_png_or_jpeg(path: str | os.PathLike, kind: str, name: str) -> np.ndarray:
    """Pixels of a PNG or JPEG with their bit depth: Pillow reads 16-bit colour PNGs as 8-bit,
    so those are decoded by imagecodecs (after a size check)."""
    if kind == "png":
        width, height, bit_depth, colour_type = _png_header(path, name)
        if bit_depth == 16 and colour_type in PNG_COLOUR_TYPES_WITH_CHANNELS:
            channels = PNG_COLOUR_TYPES_WITH_CHANNELS[colour_type]
            _check_decoded_size(width * height * channels * 2, width, height, name)
            import imagecodecs
            data = imagecodecs.png_decode(Path(path).read_bytes())
            return data[..., 0] if data.ndim == 3 and channels == 2 else data  # grey + alpha: the grey plane
    with warnings.catch_warnings():  # Pillow's bomb warning: refused below, in one line, if it does not fit
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(path, formats=[kind.upper()]) as pil:
            width, height = pil.size
            _check_decoded_size(width * height * max(1, len(pil.getbands())) * 4, width, height, name)
            upright = ImageOps.exif_transpose(pil)  # a camera's EXIF orientation, as browsers and Fiji show it
            return np.asarray(_pil_to_supported_mode(upright))


PNG_COLOUR_TYPES_WITH_CHANNELS = {2: 3, 4: 2, 6: 4}
"""PNG colour types of several samples per pixel (RGB, grey + alpha, RGBA) and their counts."""


def _png_header(path: str | os.PathLike, name: str) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise InputError(f"cannot read '{name}' as PNG: its header is damaged")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return width, height, head[24], head[25]


def _check_decoded_size(nbytes: int, width, height, name: str) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > memory:
        raise InputError(f"'{name}' is {width}x{height} pixels ({nbytes / 2**30:.0f} GiB), too large to load whole "
                         f"on this computer ({memory / 2**30:.0f} GiB of memory): crop it, or use a step that reads it "
                         "tile by tile (predict, pixel_classifier_predict)")


def _pil_to_supported_mode(pil: PILImage.Image) -> PILImage.Image:
    """Palette and odd modes become RGB(A) or grey; 16-bit PNGs keep their depth."""
    if pil.mode in ("P", "PA"):
        return pil.convert("RGBA" if "transparency" in pil.info or pil.mode == "PA" else "RGB")
    if pil.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return pil.convert("RGB")
    if pil.mode == "LA":
        return pil.convert("L")
    return pil


MIN_SIDE = 2
"""Smallest accepted width and height, in pixels."""


SUPPORTED_DTYPES = (np.bool_, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32,
                    np.float32, np.float64)


CHANNEL_AXES = "CSIQ"
"""tifffile axis codes treated as channels when they are the only non-spatial axis."""


@dataclass
class Image:
    """Pixels plus the physical pixel size, when the file records one."""

    data: np.ndarray
    pixel_size: tuple[float, float] | None = None
    """(y, x) size of one pixel in micrometres, or None when unknown."""

    @property
    def n_channels(self) -> int:
        return 1 if self.data.ndim == 2 else self.data.shape[2]


def check_image(data: np.ndarray, name: str = "image") -> None:
    """Refuse images that no step can work on: too small, wrong dtype, NaN or infinite values."""
    _check_size_and_type(data.shape, data.dtype, name)
    _check_finite(data, name)


def _check_size_and_type(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    height, width = shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputError(f"'{name}' is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if dtype.type not in SUPPORTED_DTYPES:
        raise InputError(f"'{name}' has pixel type {dtype}, which is not supported")


def _check_finite(data: np.ndarray, name: str) -> None:
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputError(f"'{name}' contains NaN or infinite pixel values")


def _first_series(tif: tifffile.TiffFile, name: str) -> tifffile.TiffPageSeries:
    if not tif.series:
        raise InputError(f"cannot read '{name}' as TIFF: it holds no readable image (damaged file?)")
    return tif.series[0]


def open_tiff(path: str | os.PathLike, name: str) -> tifffile.TiffFile:
    """Open a TIFF so that only this file is ever read.

    tifffile follows references to other files in three layouts: multi-file OME-TIFF (the
    OME-XML names files by UUID and FileName), Micro-Manager MMStack and NDTiff series (sibling
    files found by name). Those layouts are switched off, and an OME-XML that names another
    file is refused, so that a crafted upload cannot make a job return another file's pixels.
    Sizes, tiles and data offsets are checked first (:func:`tiff_structure.check_tiff_structure`).
    """
    check_tiff_structure(path, name)
    tif = tifffile.TiffFile(path, _multifile=False, is_mmstack=False, is_ndtiff=False)
    try:
        if tif.is_ome and tif.ome_metadata:
            _check_ome_references(tif.ome_metadata, name, Path(path).name)
    except BaseException:
        tif.close()
        raise
    return tif


def _check_ome_references(ome_xml: str, name: str, file_name: str) -> None:
    """Refuse an OME-XML whose image planes lie in other files, or that defines XML entities."""
    if "<!ENTITY" in ome_xml or "<!DOCTYPE" in ome_xml:
        raise InputError(f"'{name}' has OME-XML with a document type or entities, which OME-TIFF does not use; refused")
    root = _parse_ome(ome_xml)
    if root is None:
        return
    if any(el.tag.endswith("}BinaryOnly") or el.tag == "BinaryOnly" for el in root):
        raise InputError(f"'{name}' is one file of a multi-file OME-TIFF whose metadata lie in another file; "
                         "dlhisto reads only the file it is given: convert the set into one OME-TIFF")
    own = root.get("UUID")
    for uuid in (el for el in root.iter() if el.tag.endswith("}UUID") or el.tag == "UUID"):
        referenced = uuid.get("FileName", "")
        if own is None and uuid.text and Path(referenced).name in (name, file_name):
            own = uuid.text  # no UUID of its own: the file names itself
        if uuid.text != own:
            raise InputError(f"'{name}' is one file of a multi-file OME-TIFF: its OME-XML refers to "
                             f"'{one_line(referenced or uuid.text or '')}'; dlhisto reads only the file it is "
                             "given: convert the set into one OME-TIFF")


def _check_fits_in_memory(series: tifffile.TiffPageSeries, name: str) -> None:
    """Refuse, before decoding, an image whose pixels alone would not fit in this computer's memory
    (a damaged or forged header can declare any size)."""
    sizes = dict(zip(series.axes, series.shape))
    _check_decoded_size(series.nbytes, sizes.get("X", "?"), sizes.get("Y", "?"), name)


def _channel_axis(axes: str, shape: tuple[int, ...], name: str) -> int | None:
    """Index of the channel axis (None for grey); refuse anything that is not 2-D."""
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"'{name}' has no Y and X axes (axes {axes}, shape {tuple(shape)})")
    extra = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if len(extra) > 1 or (extra and axes[extra[0]] not in CHANNEL_AXES):
        found = "".join(a for i, a in enumerate(axes) if a in "YX" or shape[i] > 1)
        raise InputError(f"'{name}' is not a 2-D image: axes {found}, shape {tuple(shape)}; "
                         "expected YX or YX plus channels")
    return extra[0] if extra else None


def _select_yxc(array, axes: str, channel_axis: int | None, ys: slice, xs: slice) -> np.ndarray:
    """Index a region out of an N-D array and return it as (h, w) or (h, w, C)."""
    index = tuple(ys if a == "Y" else xs if a == "X" else
                  (slice(None) if i == channel_axis else 0) for i, a in enumerate(axes))
    kept = [a for i, a in enumerate(axes) if a in "YX" or i == channel_axis]
    order = [kept.index("Y"), kept.index("X")]
    if channel_axis is not None:
        order.append(kept.index(axes[channel_axis]))
    return np.ascontiguousarray(np.transpose(np.asarray(array[index]), order))


def _to_yxc(data: np.ndarray, axes: str, name: str) -> np.ndarray:
    """Drop singleton axes and move a channel axis last; refuse anything that is not 2-D."""
    channel_axis = _channel_axis(axes, data.shape, name)
    return _select_yxc(data, axes, channel_axis, slice(None), slice(None))


def smallest_label_dtype(max_label: int) -> np.dtype:
    """uint16 while the labels fit, uint32 beyond (what Fiji, napari and QuPath read)."""
    if max_label < 2**16:
        return np.dtype(np.uint16)
    if max_label < 2**32:
        return np.dtype(np.uint32)
    raise InputError(f"{max_label} objects do not fit in a 32-bit label image")
