"""Stain normalisation of brightfield RGB images (H&E): Macenko and Reinhard.

A *reference* is fitted once on a well-stained image (or region) and saved as a small JSON file
that a workflow reuses; every other image or slide is then mapped onto it, tile by tile:

- **Macenko** (Macenko et al., ISBI 2009): the hematoxylin and eosin directions in optical
  density space (``stain_matrix``, 3 x 2) and the 99th percentile of each stain's
  concentration. A source image gets its own matrix and percentiles; its concentrations are
  rescaled to the reference's percentiles and recombined with the reference's matrix.
- **Reinhard** (Reinhard et al., 2001): the mean and standard deviation of each channel in
  CIE L*a*b*; a source image's channels are standardised and given the reference's.

The source statistics of a slide come from pixels on a regular grid (every pixel up to
``SAMPLE_PIXELS``), so that every tile is mapped the same way and memory follows the tile.
The numbers follow torchstain's NumPy implementations (``tests/test_stain.py`` compares them).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
from skimage import color

from ..io import untrusted
from ..base.errors import InputError
from ..io.readers import OVERVIEW_SIDE, Reader
from ..io.slides import image_reader
from ..io.writers import write_tiled_image
from ..io.outputs import atomic_output
from ..io.tiling import tile_grid

METHODS = ("macenko", "reinhard")
SAMPLE_PIXELS = 4_000_000
"""Most pixels from which the statistics of an image or slide are estimated."""
LIGHT = 240.0
"""Macenko: the transmitted light intensity Io (the glass's brightness)."""
ANGLE_PERCENTILE = 1.0
"""Macenko: the stain directions are the 1st and 99th percentiles of the angles (alpha)."""
MIN_OPTICAL_DENSITY = 0.15
"""Macenko: pixels with an optical density below this in any channel are glass (beta)."""
MIN_STAINED_PIXELS = 100
FORMAT = "dlhisto-stain-reference"
UNIT_TOLERANCE = 0.01
"""Macenko: how far a stain vector's length may be from 1."""
NEGATIVE_TOLERANCE = 0.1
"""Macenko: how far below 0 a stain vector's optical density may be (a fit on an image where a
stain barely absorbs in one channel comes out slightly negative there)."""
MAX_STAIN_COSINE = 0.99
"""Macenko: the two stain vectors must be at least 8 degrees apart."""
MAX_CONCENTRATION = 2 * math.log(255)
"""Macenko: the largest concentration an 8-bit pixel can give (its optical density is at most
log(255); two stains at most double it)."""


@dataclass(frozen=True)
class StainReference:
    """What a stain normalisation maps images onto (:func:`fit`; :func:`save`, :func:`load`)."""

    method: str
    stain_matrix: tuple[tuple[float, float], ...] | None = None
    """Macenko: the optical density of hematoxylin (column 0) and eosin (column 1) per RGB channel."""
    max_concentrations: tuple[float, float] | None = None
    """Macenko: the 99th percentile of each stain's concentration."""
    lab_mean: tuple[float, float, float] | None = None
    """Reinhard: mean of L*, a*, b*."""
    lab_std: tuple[float, float, float] | None = None
    """Reinhard: standard deviation of L*, a*, b*."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown stain normalisation '{self.method}'; choose one of {', '.join(METHODS)}")
        values = ([self.stain_matrix, self.max_concentrations] if self.method == "macenko"
                  else [self.lab_mean, self.lab_std])
        shapes = [(3, 2), (2,)] if self.method == "macenko" else [(3,), (3,)]
        for value, shape in zip(values, shapes):
            array = np.asarray(value if value is not None else [], dtype=float)
            if array.shape != shape or not np.isfinite(array).all():
                raise InputError(f"a {self.method} stain reference needs {' x '.join(map(str, shape))} finite numbers")
        if self.method == "macenko":
            _check_macenko(np.asarray(self.stain_matrix), np.asarray(self.max_concentrations))
        else:
            _check_reinhard(np.asarray(self.lab_mean), np.asarray(self.lab_std))


def _check_macenko(matrix: np.ndarray, concentrations: np.ndarray) -> None:
    """Stain vectors as Macenko's method finds them: two unit vectors of optical density, not
    negative, far from parallel (the matrix is inverted); concentrations that 8-bit images give."""
    norms = np.linalg.norm(matrix, axis=0)
    if not np.allclose(norms, 1, atol=UNIT_TOLERANCE) or (matrix < -NEGATIVE_TOLERANCE).any():
        raise InputError("a macenko stain reference needs two stain vectors of length 1 with no negative optical "
                         f"density; got lengths {', '.join(f'{n:.3g}' for n in norms)}")
    if abs(float(matrix[:, 0] @ matrix[:, 1])) > MAX_STAIN_COSINE:
        raise InputError("the macenko stain reference's two stain vectors are (nearly) the same direction: the "
                         "stains could not be told apart")
    if not ((concentrations > 0) & (concentrations <= MAX_CONCENTRATION)).all():
        raise InputError(f"the macenko stain reference's maximum concentrations must lie in (0, {MAX_CONCENTRATION:g}], "
                         "the range of 8-bit stained images")


def _check_reinhard(mean: np.ndarray, std: np.ndarray) -> None:
    """L*a*b* statistics of an image: L* in [0, 100], a* and b* in [-128, 127], spreads in (0, 100]."""
    low, high = np.array([0, -128, -128]), np.array([100, 127, 127])
    if not ((mean >= low) & (mean <= high)).all():
        raise InputError("the reinhard stain reference's L*a*b* means must lie in [0, 100], [-128, 127], [-128, 127]")
    if not ((std > 0) & (std <= 100)).all():
        raise InputError("the reinhard stain reference's L*a*b* spreads must lie in (0, 100]")


def fit(image, method: str = "macenko", name: str | None = None) -> StainReference:
    """The stain reference of an RGB image (a file, a reader or an array).

    Examples
    --------
    >>> from dlhisto_core import stain
    >>> reference = stain.fit("test-data/he.jpg", "macenko")
    >>> [round(v, 2) for v in reference.max_concentrations]
    [2.37, 1.08]
    """
    pixels = sample_pixels(image, name)
    if method == "macenko":
        matrix, concentrations = _macenko_stains(pixels, name or "image")
        return StainReference("macenko", _tuple(matrix), _tuple(_max_concentrations(concentrations)))
    if method == "reinhard":
        mean, std = _lab_statistics(pixels)
        return StainReference("reinhard", lab_mean=_tuple(mean), lab_std=_tuple(std))
    raise InputError(f"unknown stain normalisation '{method}'; choose one of {', '.join(METHODS)}")


class StainNormalizer:
    """Maps tiles of one image or slide onto a reference: the source's own statistics are
    estimated once (from ``source``, an RGB file, reader or array), then :meth:`normalize`
    maps any tile of it."""

    def __init__(self, reference: StainReference, source, name: str | None = None):
        self.reference = reference
        pixels = sample_pixels(source, name)
        if reference.method == "macenko":
            self.source_matrix, concentrations = _macenko_stains(pixels, name or "image")
            self.unmix = np.linalg.pinv(self.source_matrix)  # least squares: concentrations of each pixel
            self.scale = np.asarray(reference.max_concentrations) / _max_concentrations(concentrations)
        else:
            self.source_mean, self.source_std = _lab_statistics(pixels)
            if (self.source_std <= 0).any():
                raise InputError(f"'{name or 'the image'}' is of one colour: nothing to normalise")

    def normalize(self, tile: np.ndarray) -> np.ndarray:
        """The tile (H, W, 3 uint8) with the reference's stains."""
        rgb = _rgb(tile)
        if self.reference.method == "macenko":
            density = _optical_density(rgb.reshape(-1, 3))
            concentrations = (density @ self.unmix.T) * self.scale
            mapped = LIGHT * np.exp(-concentrations @ np.asarray(self.reference.stain_matrix).T)
            return np.clip(np.rint(mapped), 0, 255).astype(np.uint8).reshape(rgb.shape)
        lab = color.rgb2lab(rgb)
        lab = (lab - self.source_mean) / self.source_std * np.asarray(self.reference.lab_std) \
            + np.asarray(self.reference.lab_mean)
        return np.clip(np.rint(color.lab2rgb(lab) * 255), 0, 255).astype(np.uint8)


class NormalizedReader(Reader):
    """A reader (:class:`readers.Reader`) of an RGB image or slide mapped onto a reference: every
    region read is normalised as it is read, so that a step (predict) sees the reference's stains
    without a normalised copy of the slide being written. The source's statistics are estimated
    once, as :func:`normalize_slide` does, so the pixels are those it would write."""

    def __init__(self, source, reference: StainReference, name: str | None = None):
        self.source = source
        self.normalizer = StainNormalizer(reference, source, name or getattr(source, "name", None))
        self.name, self.shape, self.pixel_size = source.name, source.shape[:2] + (3,), source.pixel_size
        self.dtype, self.n_levels = np.dtype(np.uint8), 1

    def read_region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        return self.normalizer.normalize(self.source.read_region(y, x, height, width))

    def overview(self, longest: int = OVERVIEW_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
        image, scale = self.source.overview(longest)
        return self.normalizer.normalize(image), scale


def normalize_slide(source, output_path, reference: StainReference, tile_size: int = 512,
                    name: str | None = None) -> tuple[int, int]:
    """Write ``source`` (an RGB file, reader or array of any size) mapped onto ``reference`` as
    a tiled RGB OME-TIFF, one tile at a time; returns its (height, width)."""
    with image_reader(source, name=name) as reader:
        normalizer = StainNormalizer(reference, reader, name or getattr(reader, "name", None))
        height, width = reader.shape[:2]
        tiles = (normalizer.normalize(reader.read_region(t.y, t.x, t.height, t.width))
                 for t in tile_grid(height, width, tile_size))
        write_tiled_image(output_path, tiles, (height, width, 3), np.uint8, tile_size, reader.pixel_size)
    return height, width


def save(reference: StainReference, path: str | os.PathLike) -> None:
    """Write the reference as a small JSON file."""
    data = {"format": FORMAT, **{k: v for k, v in asdict(reference).items() if v is not None}}
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")


def load(path: str | os.PathLike, name: str | None = None) -> StainReference:
    """Read a reference written by :func:`save`; anything else is refused in one line."""
    name = name or os.path.basename(path)
    data = untrusted.load_json(untrusted.read_small_file(path, name, "a stain reference"), name, "the file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"'{name}' is not a dlhisto stain reference (JSON with \"format\": \"{FORMAT}\")")
    return from_dict({k: v for k, v in data.items() if k != "format"}, name)


def from_dict(data: dict, name: str) -> StainReference:
    """A reference from its fields (as :func:`save` or a model package records them), checked."""
    fields = {"method", "stain_matrix", "max_concentrations", "lab_mean", "lab_std"}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise InputError(f"'{name}' has unknown field(s): {', '.join(unknown)[:200]}")
    try:
        return StainReference(**{k: _tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except (TypeError, ValueError) as exc:
        raise InputError(f"'{name}' is not a valid stain reference: {exc}") from None


def reference_from(path: str | os.PathLike, method: str, name: str | None = None) -> StainReference:
    """A reference saved by :func:`save` (JSON), or one fitted with ``method`` on an image."""
    return load(path, name) if is_reference_file(path) else fit(path, method, name)


def is_reference_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds JSON (a saved reference) rather than an image."""
    with open(path, "rb") as fh:
        return fh.read(64).lstrip()[:1] == b"{"


def sample_pixels(image, name: str | None = None, chunk: int = 1024) -> np.ndarray:
    """(N, 3) RGB pixels on a regular grid of the image: all of them up to SAMPLE_PIXELS."""
    with image_reader(image, name=name) as reader:
        height, width = reader.shape[:2]
        if len(reader.shape) != 3 or reader.shape[2] not in (3, 4):
            raise InputError(f"stain normalisation needs an RGB brightfield image; "
                             f"'{getattr(reader, 'name', name or 'the image')}' has shape {tuple(reader.shape)}")
        stride = max(1, math.ceil(math.sqrt(height * width / SAMPLE_PIXELS)))
        samples = []
        for tile in tile_grid(height, width, chunk):
            region = _rgb(reader.read_region(tile.y, tile.x, tile.height, tile.width))
            samples.append(region[(-tile.y) % stride::stride, (-tile.x) % stride::stride].reshape(-1, 3))
    return np.concatenate(samples)


def _rgb(region: np.ndarray) -> np.ndarray:
    if region.dtype != np.uint8:
        raise InputError(f"stain normalisation needs 8-bit RGB, got {region.dtype}")
    return region[..., :3]


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 1) / LIGHT)


def _macenko_stains(pixels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The stain matrix (3 x 2: hematoxylin, eosin) of RGB pixels and every pixel's
    concentrations (2 x N)."""
    density = _optical_density(pixels)
    stained = density[~(density < MIN_OPTICAL_DENSITY).any(axis=1)]
    if len(stained) < MIN_STAINED_PIXELS:
        raise InputError(f"'{name}' has almost no stained pixels ({len(stained)}): is it a brightfield H&E image?")
    _, eigenvectors = np.linalg.eigh(np.cov(stained.T))
    plane = eigenvectors[:, 1:3]  # the two largest eigenvalues
    projected = stained @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    first, second = (plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high))
    # hematoxylin absorbs red most: the vector with the larger red component comes first
    matrix = np.stack([first, second] if first[0] > second[0] else [second, first], axis=1)
    concentrations = np.linalg.lstsq(matrix, density.T, rcond=None)[0]
    return matrix, concentrations


def _max_concentrations(concentrations: np.ndarray) -> np.ndarray:
    maximum = np.percentile(concentrations, 99, axis=1)
    if (maximum <= 0).any():
        raise InputError("a stain has no positive concentration: the image does not look like H&E")
    return maximum


def _lab_statistics(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = color.rgb2lab(pixels[None]).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def _tuple(value):
    array = np.asarray(value, dtype=float)
    return tuple(_tuple(row) for row in array) if array.ndim > 1 else tuple(float(v) for v in array)
