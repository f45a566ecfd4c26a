"""Training data for the deep-learning steps: patches sampled into an HDF5 file, targets per task,
and the dataset that draws them (augmented: :mod:`augmentation`).

Images are normalised per image (percentiles 1 and 99.8 of each channel mapped to 0 and 1, the
rule recorded in the model package), so that models trained on one scanner transfer to another.
Targets:

- ``semantic``: the label image is a class map (0, 1, ... K-1 used as given);
- ``instance``: the label image holds one id per object; the target is 3 classes:
  0 background, 1 object interior, 2 object boundary, from which instances are rebuilt;
- ``regression`` (image restoration or translation): the target is an image of pixel values,
  scaled by one of ``TARGET_NORMALIZATIONS``, recorded in the model package so that predictions
  come back in the target's units:

  - ``input``: with the percentiles of its own input image (denoising, deconvolution: input and
    target share their units; predictions are scaled back with the input's percentiles, as
    CSBDeep's PercentileNormalizer does);
  - ``dataset``: with the percentiles of all training targets together (translation between
    modalities, whose units differ; predictions are scaled back with those fixed values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from skimage import segmentation

from .augmentation import augment_patch
from .options import TARGET_NORMALIZATIONS
from ..base.errors import InputError
from ..io.images import read_image, read_labels
from ..base.bounds import MAX_PATCH_SIZE, MAX_PATCHES_PER_IMAGE, MAX_SEED, check_number
from ..imaging.intensity import NORMALIZATION, channel_range, normalize_for_network, scale_channels

PATCH_TASKS = ("semantic", "instance", "regression")
SAMPLE_PIXELS = 4_000_000
"""Pixels sampled (on a regular grid) for percentiles: of each target for the dataset target
normalisation, of a slide for its normalisation and tissue threshold (``dl_predict``)."""


def make_target(labels: np.ndarray, task: str) -> np.ndarray:
    """The per-pixel class target (uint8) of a label image for ``task``."""
    if task == "semantic":
        if labels.max() > 255:
            raise InputError(f"a semantic class map holds classes 0..255, found {labels.max()}")
        return labels.astype(np.uint8)
    if task == "instance":
        target = (labels > 0).astype(np.uint8)
        target[segmentation.find_boundaries(labels, mode="inner")] = 2
        return target
    raise InputError(f"unknown task '{task}'; choose one of {', '.join(PATCH_TASKS)}")


@dataclass
class PatchSet:
    """Where the patches are and what they hold."""

    path: Path
    n_patches: int
    n_channels: int
    out_channels: int
    """Classes of the target, or channels of a regression target."""
    patch_size: int
    target_normalization: dict | None = None
    """Regression: {"mode": one of TARGET_NORMALIZATIONS[, "low": [...], "high": [...] per channel]}."""


def check_sampling(patch_size: int, patches_per_image: int, seed: int) -> None:
    """Refuse patch sizes, counts and seeds outside what training can work with."""
    check_number(patch_size, "patch size", 16, MAX_PATCH_SIZE)
    check_number(patches_per_image, "patches per image", 1, MAX_PATCHES_PER_IMAGE)
    check_number(seed, "seed", 0, MAX_SEED)


def sample_patches(pairs: Sequence[tuple], path: str | os.PathLike, task: str, patch_size: int = 128,
                   patches_per_image: int = 64, seed: int = 0, target_normalization: str = "input") -> PatchSet:
    """Cut random patches from (image, labels[, names]) pairs into an HDF5 file: ``images``
    (N, C, P, P) float32 and ``targets``, (N, P, P) uint8 classes for segmentation (half of the
    patches centred on foreground) or (N, C', P, P) float32 pixel values for regression, where
    the second image of each pair is the target image (scaled by ``target_normalization``)."""
    check_sampling(patch_size, patches_per_image, seed)
    if patch_size < 16 or patch_size % 16:
        raise InputError(f"the patch size must be a multiple of 16, at least 16, got {patch_size}")
    if task not in PATCH_TASKS:
        raise InputError(f"unknown task '{task}'; choose one of {', '.join(PATCH_TASKS)}")
    regression = task == "regression"
    if regression and target_normalization not in TARGET_NORMALIZATIONS:
        raise InputError(f"unknown target normalisation '{target_normalization}'; "
                         f"choose one of {', '.join(TARGET_NORMALIZATIONS)}")
    rng = np.random.default_rng(seed)
    n_total = len(pairs) * patches_per_image
    n_channels = out_channels = None
    dataset_range = _dataset_target_range(pairs) if regression and target_normalization == "dataset" else None
    with h5py.File(path, "w") as h5:
        for i, (image_path, labels_path, *names) in enumerate(pairs):
            image_name = names[0] if names else Path(image_path).name
            labels_name = names[1] if len(names) > 1 else Path(labels_path).name
            image = read_image(image_path, image_name).data
            labels = (read_image if regression else read_labels)(labels_path, labels_name).data
            if labels.shape[:2] != image.shape[:2]:
                what = "target" if regression else "labels"
                raise InputError(f"{what} '{labels_name}' ({labels.shape[1]}x{labels.shape[0]}) do not match the "
                                 f"size of image '{image_name}' ({image.shape[1]}x{image.shape[0]})")
            channels = 1 if image.ndim == 2 else image.shape[2]
            low, high = channel_range(image)
            if regression:
                target_channels = 1 if labels.ndim == 2 else labels.shape[2]
                if dataset_range is None and target_channels != channels:
                    raise InputError(f"target '{labels_name}' has {target_channels} channel(s) and its image "
                                     f"{channels}: scaling targets by their input needs the same channels "
                                     "(use the dataset normalisation between modalities)")
                target = _regression_target(labels, labels_name, (low, high) if dataset_range is None
                                            else dataset_range)
            else:
                target = make_target(labels, task)[None]
            if n_channels is None:
                n_channels, out_channels = channels, (target.shape[0] if regression else 0)
                images_ds = h5.create_dataset("images", (n_total, channels, patch_size, patch_size), np.float32,
                                              chunks=(1, channels, patch_size, patch_size))
                target_shape = (out_channels,) if regression else ()
                targets_ds = h5.create_dataset("targets", (n_total, *target_shape, patch_size, patch_size),
                                               target.dtype, chunks=(1, *target_shape, patch_size, patch_size))
            elif channels != n_channels:
                raise InputError(f"all images need the same channels: '{image_name}' has {channels}, "
                                 f"the first image {n_channels}")
            elif regression and target.shape[0] != out_channels:
                raise InputError(f"all targets need the same channels: '{labels_name}' has {target.shape[0]}, "
                                 f"the first target {out_channels}")
            normalized = _pad_to(scale_channels(image, low, high), patch_size)
            target = _pad_to(target, patch_size)
            foreground = np.zeros(target.shape[1:], bool) if regression else target[0] > 0
            for j, (y, x) in enumerate(_patch_corners(foreground, patch_size, patches_per_image, rng)):
                images_ds[i * patches_per_image + j] = normalized[:, y:y + patch_size, x:x + patch_size]
                patch = target[:, y:y + patch_size, x:x + patch_size]
                targets_ds[i * patches_per_image + j] = patch if regression else patch[0]
            if not regression:
                out_channels = max(out_channels, int(target.max()) + 1)
        if out_channels == 1 and not regression:
            raise InputError("the label images hold only background (0): there is nothing to learn")
        if task == "instance":
            out_channels = 3
        h5.attrs.update(task=task, out_channels=out_channels, patch_size=patch_size, seed=seed,
                        normalization=NORMALIZATION)
    normalization = None
    if regression:
        normalization = {"mode": target_normalization}
        if dataset_range is not None:
            normalization.update(low=dataset_range[0].tolist(), high=dataset_range[1].tolist())
    return PatchSet(Path(path), n_total, n_channels, out_channels, patch_size, normalization)


def _regression_target(target: np.ndarray, name: str, value_range: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(C, Y, X) float32 target scaled by ``value_range``; refuses non-finite pixels."""
    target = target.astype(np.float32, copy=False)
    if not np.isfinite(target).all():
        raise InputError(f"target '{name}' holds NaN or infinite pixels")
    return scale_channels(target, *value_range)


def _dataset_target_range(pairs: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The NORMALIZATION percentiles of each channel over all target images together (a regular
    sample of at most SAMPLE_PIXELS pixels of each)."""
    samples = []
    for _, target_path, *names in pairs:
        target = read_image(target_path, names[1] if len(names) > 1 else None).data
        target = target[..., None] if target.ndim == 2 else target
        if samples and target.shape[2] != samples[0].shape[-1]:
            raise InputError(f"all targets need the same channels: '{names[1] if len(names) > 1 else target_path}' "
                             f"has {target.shape[2]}, the first target {samples[0].shape[-1]}")
        stride = max(1, int(np.ceil(np.sqrt(target.shape[0] * target.shape[1] / SAMPLE_PIXELS))))
        samples.append(target[::stride, ::stride].reshape(-1, target.shape[2]).astype(np.float32))
    low, high = channel_range(np.concatenate(samples)[:, None])
    if np.any(high <= low):
        raise InputError("a target channel holds a single value: there is nothing to learn")
    return low, high


def sample_tiles(images: Sequence[tuple], path: str | os.PathLike, patch_size: int = 128,
                 patches_per_image: int = 16, seed: int = 0) -> PatchSet:
    """Random crops of tiles with one class each, (image path, class index, name[, region]),
    into an HDF5 file: ``images`` (N, C, P, P) float32 and ``targets`` (N,) uint8. A tile is the
    whole image, or its ``region`` (y, x, height, width). Each tile is normalised on its own over
    all channels together, as ``dl_classify`` does; tiles smaller than a patch are mirrored."""
    check_sampling(patch_size, patches_per_image, seed)
    if patch_size < 32 or patch_size % 32:
        raise InputError(f"the patch size must be a multiple of 32, at least 32, got {patch_size}")
    rng = np.random.default_rng(seed)
    n_total, n_channels, loaded = len(images) * patches_per_image, None, (None, None)
    with h5py.File(path, "w") as h5:
        for i, (image_path, class_index, name, *region) in enumerate(images):
            if loaded[0] != image_path:  # tables list an image's tiles together: each image read once
                loaded = (image_path, read_image(image_path, name).data)
            tile = _region(loaded[1], region[0] if region else None, name)
            normalized = _pad_to(normalize_for_network(tile, joint=True), patch_size)
            if n_channels is None:
                n_channels = normalized.shape[0]
                images_ds = h5.create_dataset("images", (n_total, n_channels, patch_size, patch_size), np.float32,
                                              chunks=(1, n_channels, patch_size, patch_size))
                targets_ds = h5.create_dataset("targets", (n_total,), np.uint8)
            elif normalized.shape[0] != n_channels:
                raise InputError(f"all images need the same channels: '{name}' has {normalized.shape[0]}, "
                                 f"the first image {n_channels}")
            for j in range(patches_per_image):
                y = int(rng.integers(0, normalized.shape[1] - patch_size + 1))
                x = int(rng.integers(0, normalized.shape[2] - patch_size + 1))
                images_ds[i * patches_per_image + j] = normalized[:, y:y + patch_size, x:x + patch_size]
                targets_ds[i * patches_per_image + j] = class_index
        out_channels = int(max(item[1] for item in images)) + 1
        h5.attrs.update(task="classification", out_channels=out_channels, patch_size=patch_size, seed=seed,
                        normalization=NORMALIZATION)
    return PatchSet(Path(path), n_total, n_channels, out_channels, patch_size)


def _region(image: np.ndarray, box: tuple[int, int, int, int] | None, name: str) -> np.ndarray:
    """The (y, x, height, width) ``box`` of an image, which must lie inside it; None: all of it."""
    if box is None:
        return image
    y, x, height, width = box
    if y + height > image.shape[0] or x + width > image.shape[1]:
        raise InputError(f"the tile at x={x}, y={y} ({width} x {height}) lies outside '{name}' "
                         f"({image.shape[1]} x {image.shape[0]})")
    return image[y:y + height, x:x + width]


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad (C, Y, X) so that Y and X are at least ``size``."""
    pad_y, pad_x = max(0, size - array.shape[1]), max(0, size - array.shape[2])
    if not pad_y and not pad_x:
        return array
    return np.pad(array, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect" if min(array.shape[1:]) > 1 else "edge")


def _patch_corners(foreground: np.ndarray, size: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners: half centred on random ``foreground`` pixels (if any), half anywhere."""
    height, width = foreground.shape
    foreground = np.flatnonzero(foreground)
    corners = []
    for k in range(count):
        if k % 2 == 0 and foreground.size:
            cy, cx = np.unravel_index(rng.choice(foreground), (height, width))
            y, x = cy - size // 2, cx - size // 2
        else:
            y, x = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        corners.append((int(np.clip(y, 0, height - size)), int(np.clip(x, 0, width - size))))
    return corners


def count_patches(path: str | os.PathLike) -> int:
    with h5py.File(path, "r") as h5:
        return len(h5["targets"])


class PatchDataset(torch.utils.data.Dataset):
    """Patches of an HDF5 file made by :func:`sample_patches`, augmented when ``augment`` is set.

    Augmentations (:mod:`augmentation`): flips, rotations, elastic deformation and colour
    jitter; with ``strong`` also scale, stain, intensity, blur, noise and halos. Regression
    targets keep their relation to the input's values. Each draw uses a generator seeded from
    (seed, epoch, index), so a run is reproducible.
    """

    def __init__(self, path: str | os.PathLike, indices: Sequence[int], augment: bool = False, seed: int = 0,
                 strong: bool = False):
        self.path, self.indices, self.augment, self.seed = Path(path), list(indices), augment, seed
        self.strong = strong
        self.epoch = 0
        with h5py.File(self.path, "r") as h5:
            self.images = h5["images"][...]
            self.targets = h5["targets"][...]
            self.task = str(h5.attrs["task"])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[item]
        image, target = self.images[index], self.targets[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if target.ndim == 0:  # a tile class
            if self.augment:
                image, _ = augment_patch(image, None, rng, strong=self.strong)
            return torch.from_numpy(np.ascontiguousarray(image)), torch.tensor(int(target))
        regression = self.task == "regression"
        if self.augment:
            image, target = augment_patch(image, target, rng, colour_jitter=not regression, strong=self.strong)
        target = torch.from_numpy(np.ascontiguousarray(target))
        return torch.from_numpy(np.ascontiguousarray(image)), target if regression else target.long()
