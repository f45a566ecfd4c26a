"""Augmentations of training patches, drawn from a seeded generator.

Every patch (``augment``): one of the 8 flips/rotations by 90 degrees, a small elastic
deformation (p=0.3) and, for RGB images, a brightness/contrast/saturation jitter.

For models meant to hold on other labs' images (``strong``, as the pretrained models train), also:

- scale: a zoom by 0.6 to 1.6 (log-uniform; SCALE_RANGE) about the patch's centre, for objects
  larger or smaller than the working pixel size makes them (another magnification, another
  cell line);
- stain, RGB: the hematoxylin, eosin and DAB concentrations (colour deconvolution, Ruifrok and
  Johnston's vectors) each scaled and shifted (Tellez et al. 2018), for other labs' staining;
- intensity, blur and noise: gamma, Gaussian blur and noise, for other microscopes and cameras;
- for other than RGB (fluorescence), dim cytoplasm-like signal around the objects, labelled
  background: a cytoplasmic stain that bleeds into the nuclear channel must not become nuclei.

Patches hold images normalised per channel (percentiles 1 and 99.8 to 0 and 1). A target is
moved with its image: a (Y, X) class map (nearest neighbour), a (C, Y, X) regression target
(bilinear, and it keeps its relation to the input's values: no appearance changes), or None
(tile classes).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color.colorconv import hed_from_rgb, rgb_from_hed

SCALE_RANGE = (0.6, 1.6)
STAIN_SCALE, STAIN_SHIFT = 0.2, 0.05
"""Each stain's concentration is multiplied by 1 +- STAIN_SCALE and shifted by +- STAIN_SHIFT (optical density)."""
HALO_LEVEL = (0.05, 0.4)
"""Brightness of the cytoplasm-like signal, as a fraction of the objects' median brightness."""


def describe(augment: bool, strong: bool) -> str:
    """The augmentations a training run applies, in words (for its model card)."""
    if not augment:
        return "none"
    basic = "flips, rotations by 90 degrees, elastic deformation, colour jitter (RGB)"
    if not strong:
        return basic
    low, high = SCALE_RANGE
    return (f"{basic}; scale {low}-{high}x, stain (HED concentrations x 1 +- {STAIN_SCALE}, + {STAIN_SHIFT}), "
            "gamma, blur, noise; cytoplasm-like halos beside objects (not RGB)")


def augment_patch(image: np.ndarray, target: np.ndarray | None, rng: np.random.Generator,
                  colour_jitter: bool = True, strong: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (C, Y, X) and ``target`` augmented together (module docstring); ``colour_jitter``
    False (regression) leaves pixel values as they are, ``strong`` adds scale, stain, intensity,
    blur, noise and halo augmentations."""
    k = int(rng.integers(4))
    image = np.rot90(image, k, axes=(1, 2))
    flip = rng.random() < 0.5
    image = image[:, :, ::-1] if flip else image
    if target is not None:
        target = np.rot90(target, k, axes=(-2, -1))
        target = target[..., ::-1] if flip else target
    if strong:
        image, target = _zoomed(image, target, rng)
    if rng.random() < 0.3:
        image, target = _elastic(image, target, rng)
    if not colour_jitter:
        return image.astype(np.float32), target
    rgb = image.shape[0] == 3
    if strong and rgb:
        image = _stain_jitter(image, rng)
    if strong and not rgb and target is not None and target.ndim == 2:
        image = _halo(image, target > 0, rng)
    if rgb:
        brightness, contrast = rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.1)
        grey = image.mean(axis=0, keepdims=True)
        saturation = rng.uniform(0.9, 1.1)
        image = ((grey + saturation * (image - grey)) - 0.5) * contrast + 0.5 + brightness
    if strong:
        image = _intensity_blur_noise(image, rng)
    return image.astype(np.float32), target


def _warp(image: np.ndarray, target: np.ndarray | None, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (and ``target``) sampled at ``coords`` (2, Y, X), mirrored at the edges: the image
    and a regression target bilinearly, a class target by nearest neighbour."""
    def warp(channels: np.ndarray, order: int) -> np.ndarray:
        return np.stack([ndi.map_coordinates(c, coords, order=order, mode="reflect") for c in channels])

    if target is None:
        return warp(image, 1), None
    if target.ndim == 3:
        return warp(image, 1), warp(target, 1)
    return warp(image, 1), warp(target[None], 0)[0]


def _zoomed(image: np.ndarray, target: np.ndarray | None, rng: np.random.Generator):
    """A zoom by a log-uniform factor in SCALE_RANGE about the centre (below 1: more of the
    surroundings, mirrored where the patch ends)."""
    factor = float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
    shape = image.shape[1:]
    centre = (np.array(shape, float)[:, None, None] - 1) / 2
    grid = np.indices(shape, dtype=float)
    return _warp(image, target, centre + (grid - centre) / factor)


def _elastic(image: np.ndarray, target: np.ndarray | None, rng: np.random.Generator, alpha: float = 4.0,
             sigma: float = 8.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Smooth random displacement field of at most ``alpha`` pixels (Simard et al. 2003)."""
    shape = image.shape[1:]
    displacement = []
    for _ in range(2):
        field = ndi.gaussian_filter(rng.uniform(-1, 1, shape), sigma)
        displacement.append(field / max(np.abs(field).max(), 1e-12) * alpha)
    return _warp(image, target, np.indices(shape, dtype=float) + np.array(displacement))


def _stain_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each stain's optical density (HED deconvolution of the patch as transmitted light)
    scaled by 1 +- STAIN_SCALE and shifted by +- STAIN_SHIFT; the change is added to the patch,
    so values outside 0..1 keep their offset."""
    light = np.clip(image, 1e-3, 1).transpose(1, 2, 0)
    stains = -np.log(light) @ hed_from_rgb
    scale = rng.uniform(1 - STAIN_SCALE, 1 + STAIN_SCALE, 3)
    shift = rng.uniform(-STAIN_SHIFT, STAIN_SHIFT, 3)
    jittered = np.exp(-np.clip(stains * scale + shift, 0, None) @ rgb_from_hed)
    unchanged = np.exp(-np.clip(stains, 0, None) @ rgb_from_hed)
    return image + (jittered - unchanged).transpose(2, 0, 1)


def _halo(image: np.ndarray, objects: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """With probability ``p``: dim, uneven signal that fades with the distance from the objects
    (a cytoplasm around each nucleus), added outside them, where the target says background."""
    if rng.random() >= p or not objects.any() or objects.all():
        return image
    distance = ndi.distance_transform_edt(~objects)
    reach = rng.uniform(2, 10)
    field = ndi.gaussian_filter(rng.standard_normal(objects.shape), rng.uniform(2, 6))
    texture = np.clip(1 + 0.5 * field / max(field.std(), 1e-12), 0.2, 2)
    halo = np.exp(-distance / reach) * texture * (distance > 0)
    level = rng.uniform(*HALO_LEVEL) * float(np.median(image[:, objects]))
    return image + level * halo[None]


def _intensity_blur_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.7 to 1.4 (p=0.5), Gaussian blur of 0.3 to 1.5 px (p=0.25), Gaussian noise of 1 to
    6 % of the range (p=0.3)."""
    if rng.random() < 0.5:
        image = np.sign(image) * np.abs(image) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.25:
        image = ndi.gaussian_filter(image, (0, *[rng.uniform(0.3, 1.5)] * 2))
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(0.01, 0.06), image.shape)
    return image
