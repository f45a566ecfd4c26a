"""Preprocessing: stain normalisation, colour deconvolution, rescaling, ridge enhancement,
Gaussian smoothing, percentile normalisation.

Each function takes and returns channels-last arrays ((Y, X) or (Y, X, C)). :func:`preprocess`
chains them in the one order that makes sense for histology: separate the stains first (on
the raw RGB optical densities), then resample, then enhance ridges, smooth, and normalise the
intensities last.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from skimage import color, filters, transform
from scipy import ndimage as ndi

from ..base.errors import InputError
from ..io.pixel_size import PIXEL_SIZE_RANGE_UM
from ..io.images import Image
from ..io.images import single_channel
from ..base.bounds import bounded, check_bounds, check_choices, check_number, choice
from .stain import METHODS as STAIN_METHODS
from .stain import StainNormalizer, StainReference
from .intensity import channel_range, stretch

MAX_SIGMA = 100.0
"""Largest Gaussian sigma (and ridge scale) in pixels; a nucleus is 5 to 50 pixels across."""
MAX_CHANNEL = 1023
MAX_RESCALED_VALUES = 2 * 10**9
"""Most values (pixels x channels) a rescaled image may have."""
STAINS = {"hematoxylin": 0, "eosin": 1, "dab": 2}
RIDGE_FILTERS = {"sato": filters.sato, "frangi": filters.frangi, "meijering": filters.meijering}
"""Hessian-based ridge (tube, fibre, vessel) filters of scikit-image."""
"""Channels of the Ruifrok & Johnston H-E-DAB colour deconvolution (scikit-image ``rgb2hed``)."""


@dataclass
class PreprocessOptions:
    """What to do to an image; the defaults do nothing."""

    channel: int | None = bounded(None, 0, MAX_CHANNEL)
    """Keep only this channel (0-based) before anything else."""
    deconvolve: str | None = choice(None, ("hed", *STAINS))
    """'hematoxylin', 'eosin', 'dab' (one stain) or 'hed' (all three) from an RGB image."""
    target_pixel_size: float | None = bounded(None, *PIXEL_SIZE_RANGE_UM)
    """Resample to this pixel size in µm."""
    input_pixel_size: float | None = bounded(None, *PIXEL_SIZE_RANGE_UM)
    """Pixel size in µm to assume when the file records none (or to override it)."""
    ridge: str | None = choice(None, tuple(RIDGE_FILTERS))
    """'sato', 'frangi' or 'meijering': replace each channel by its ridge response."""
    ridge_sigmas: tuple[float, ...] = bounded((1.0, 2.0, 3.0), 0.1, MAX_SIGMA)
    """Scales (pixels) of the ridge filter: about the half-widths of the ridges."""
    dark_ridges: bool = False
    """Ridges darker than their surroundings (vessels in brightfield) instead of brighter."""
    sigma: float = bounded(0.0, 0, MAX_SIGMA)
    """Gaussian smoothing sigma in pixels (after rescaling); 0 = no smoothing."""
    normalize: tuple[float, float] | None = bounded(None, 0, 100)
    """(low, high) percentiles mapped to 0 and 1, per channel."""
    stain_normalization: str | None = choice(None, STAIN_METHODS)
    """'macenko' or 'reinhard': map the stains of an RGB brightfield image onto a reference
    (:mod:`stain`), before anything else."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)

    @property
    def stain_only(self) -> bool:
        """Whether stain normalisation is all there is to do (then the output stays 8-bit RGB)."""
        return self.stain_normalization is not None and dataclasses.replace(self, stain_normalization=None) \
            == PreprocessOptions(input_pixel_size=self.input_pixel_size)


def preprocess(image: Image, options: PreprocessOptions, stain_reference: StainReference | None = None) -> Image:
    """Apply stain normalisation, channel selection or deconvolution, rescale, ridge
    enhancement, smoothing and normalisation, in that order (``dlhisto preprocess``).

    Parameters
    ----------
    image : Image
        From :func:`dlhisto_core.io.images.read_image`, or ``Image(array, pixel_size)``.
    options : PreprocessOptions
    stain_reference : StainReference, optional
        What ``options.stain_normalization`` maps the stains onto (:func:`stain.fit`, :func:`stain.load`).

    Returns
    -------
    Image
        float32 data and the pixel size after rescaling; 8-bit RGB when stain normalisation is
        all there is to do.

    Examples
    --------
    >>> from dlhisto_core import PreprocessOptions, preprocess, read_image
    >>> he = read_image("test-data/he.jpg")
    >>> hematoxylin = preprocess(he, PreprocessOptions(deconvolve="hematoxylin", normalize=(1, 99)))
    >>> he.data.shape[:2] == hematoxylin.data.shape[:2], hematoxylin.data.dtype.name
    (True, 'float32')
    """
    data, pixel_size = image.data, image.pixel_size
    if options.input_pixel_size is not None:
        pixel_size = (options.input_pixel_size, options.input_pixel_size)
    if options.stain_normalization:
        data = StainNormalizer(check_stain_reference(stain_reference, options.stain_normalization), data).normalize(data)
        if options.stain_only:
            return Image(data, pixel_size)
    if options.channel is not None:
        if options.deconvolve:
            raise InputError("choose either one channel or colour deconvolution, which needs all three")
        data = single_channel(data, options.channel)
    if options.deconvolve:
        data = deconvolve_stains(data, options.deconvolve)
    if options.target_pixel_size is not None:
        if pixel_size is None:
            raise InputError("the image records no pixel size; give the input pixel size to rescale it")
        data, pixel_size = rescale_to_pixel_size(data, pixel_size, options.target_pixel_size)
    if options.ridge:
        data = enhance_ridges(data, options.ridge, options.ridge_sigmas, options.dark_ridges)
    if options.sigma:
        data = gaussian_smooth(data, options.sigma)
    if options.normalize is not None:
        data = normalize_percentiles(data, *options.normalize)
    return Image(np.asarray(data, dtype=np.float32) if data.dtype != np.float32 else data, pixel_size)


def check_stain_reference(reference: StainReference | None, method: str) -> StainReference:
    """The reference of the chosen stain normalisation method, or a one-line error."""
    if reference is None:
        raise InputError(f"{method} stain normalisation needs a reference: an image to fit it on, or a saved one")
    if reference.method != method:
        raise InputError(f"the stain reference is for {reference.method} normalisation, not {method}")
    return reference


def gaussian_smooth(data: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter of each channel, as float32 (``sigma`` in pixels, 0 = unchanged)."""
    check_number(sigma, "sigma", 0, MAX_SIGMA)
    data = data.astype(np.float32, copy=False)
    if sigma == 0:
        return data
    per_axis = (sigma, sigma) + (0,) * (data.ndim - 2)
    return ndi.gaussian_filter(data, per_axis, mode="reflect")


def enhance_ridges(data: np.ndarray, method: str, sigmas=(1.0, 2.0, 3.0), dark_ridges: bool = False
                   ) -> np.ndarray:
    """Ridge response of each channel (Sato, Frangi or Meijering), from Hessian eigenvalues.

    Bright on tube-like structures (fibres, axons, vessels, cytoskeleton) whose half-width is
    about one of ``sigmas``, dark elsewhere. float32, same shape as ``data``.
    """
    if method not in RIDGE_FILTERS:
        raise InputError(f"unknown ridge filter '{method}'; choose one of {', '.join(RIDGE_FILTERS)}")
    sigmas = tuple(sigmas)
    if not sigmas or any(not np.isfinite(s) or s <= 0 for s in sigmas):
        raise InputError(f"ridge scales must be positive, got {', '.join(map(str, sigmas)) or 'none'}")
    ridge_filter = RIDGE_FILTERS[method]
    channels = data[..., None] if data.ndim == 2 else data
    planes = [ridge_filter(channels[..., c].astype(np.float32), sigmas=sigmas, black_ridges=dark_ridges,
                           mode="reflect") for c in range(channels.shape[2])]
    stacked = np.stack(planes, axis=-1).astype(np.float32)
    return stacked[..., 0] if data.ndim == 2 else stacked


def normalize_percentiles(data: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of each channel to 0 and 1 (CSBDeep style, not
    clipped; :func:`intensity.stretch`)."""
    if not (0 <= low < high <= 100):
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {low} and {high}")
    lo, hi = channel_range(data, percentiles=(low, high))
    return stretch(data, lo if data.ndim == 3 else lo[0], hi if data.ndim == 3 else hi[0])


def deconvolve_stains(rgb: np.ndarray, stain: str) -> np.ndarray:
    """Optical density of one stain ('hematoxylin', 'eosin', 'dab') or all three ('hed')."""
    if stain != "hed" and stain not in STAINS:
        raise InputError(f"unknown stain '{stain}'; choose one of hed, {', '.join(STAINS)}")
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        channels = 1 if rgb.ndim == 2 else rgb.shape[2]
        raise InputError(f"colour deconvolution needs an RGB image, got {channels} channel(s)")
    hed = color.rgb2hed(_rgb_as_unit_float(rgb[..., :3])).astype(np.float32)
    return hed if stain == "hed" else hed[..., STAINS[stain]]


def rescale_to_pixel_size(data: np.ndarray, pixel_size: tuple[float, float], target: float
                          ) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample (bilinear, anti-aliased when shrinking) so that pixels measure ``target`` µm."""
    check_number(target, "target pixel size", *PIXEL_SIZE_RANGE_UM)
    factors = (pixel_size[0] / target, pixel_size[1] / target)
    shape = tuple(max(1, round(n * f)) for n, f in zip(data.shape[:2], factors)) + data.shape[2:]
    if math.prod(shape) > MAX_RESCALED_VALUES:
        raise InputError(f"resampling to {target:g} µm would make the image {shape[1]}x{shape[0]} pixels; "
                         f"at most {MAX_RESCALED_VALUES // 10**6} million values are made at once")
    resized = transform.resize(data.astype(np.float32, copy=False), shape, order=1,
                               anti_aliasing=min(factors) < 1, preserve_range=True)
    actual = (pixel_size[0] * data.shape[0] / shape[0], pixel_size[1] * data.shape[1] / shape[1])
    return resized.astype(np.float32), actual


def _rgb_as_unit_float(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype.kind == "f":
        return np.clip(rgb, 0, 1)
    return rgb.astype(np.float32) / np.iinfo(rgb.dtype).max

