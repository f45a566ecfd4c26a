"""Registration of two images of the same section: a marker image (e.g. a fluorescent nuclear
stain) onto a reference image (e.g. the H&E scan), so that labels made from the marker line up
with the reference.

Two estimators, both on single-channel images in which the same structures are bright:

- ``phase``: translation by phase correlation (sub-pixel), for images that differ by a shift;
- ``rigid``, ``similarity``, ``affine``: ORB keypoints matched between the images and a
  transform of that kind fitted to the matches with RANSAC.

Every estimate reports its residual: the root-mean-square distance, in reference pixels,
between matched keypoints of the reference and those of the marker mapped by the transform.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from skimage import feature, measure, registration, transform

from ..base.errors import InputError
from ..imaging.intensity import channel_range, stretch

METHODS = ("phase", "rigid", "similarity", "affine")
_MODELS = {"rigid": transform.EuclideanTransform, "similarity": transform.SimilarityTransform,
           "affine": transform.AffineTransform}
_INLIER_PX = 3.0  # a match agrees with a transform when they disagree by at most this many pixels


@dataclass
class Registration:
    """Maps reference coordinates (x, y) to marker coordinates: ``matrix @ (x, y, 1)``."""

    method: str
    matrix: np.ndarray
    residual_px: float
    matches: int

    @property
    def rotation_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    @property
    def translation(self) -> tuple[float, float]:
        return float(self.matrix[0, 2]), float(self.matrix[1, 2])

    def warp(self, marker: np.ndarray, shape: tuple[int, int], labels: bool = False) -> np.ndarray:
        """The marker image (or its label image, nearest neighbour) in the reference frame."""
        warped = transform.warp(marker, transform.AffineTransform(matrix=self.matrix), output_shape=shape[:2],
                                order=0 if labels else 1, preserve_range=True, mode="constant", cval=0)
        return warped.astype(marker.dtype)


def register(reference: np.ndarray, marker: np.ndarray, method: str = "rigid",
             keypoints: int = 2000, seed: int = 0) -> Registration:
    """Estimate the transform that brings ``marker`` onto ``reference`` (2-D arrays)."""
    if method not in METHODS:
        raise InputError(f"unknown registration method '{method}'; choose one of {', '.join(METHODS)}")
    reference, marker = _normalised(reference), _normalised(marker)
    ref_points, marker_points = _matched_keypoints(reference, marker, keypoints)
    if method == "phase":
        shift, _, _ = registration.phase_cross_correlation(reference, marker, upsample_factor=20,
                                                           normalization=None)
        matrix = np.array([[1.0, 0.0, -shift[1]], [0.0, 1.0, -shift[0]], [0.0, 0.0, 1.0]])
    else:
        if len(ref_points) < 3:
            raise InputError(f"only {len(ref_points)} keypoints match between the images: they may not show "
                             "the same section, or the marker must be inverted or another channel chosen")
        with warnings.catch_warnings():  # "no inliers" is reported below, in one line
            warnings.simplefilter("ignore")
            model, inliers = measure.ransac((ref_points, marker_points), _MODELS[method], min_samples=3,
                                            residual_threshold=_INLIER_PX, max_trials=2000, rng=seed)
        if model is None or inliers is None or inliers.sum() < 3:
            raise InputError("no transform of the kind asked for fits the matched keypoints: "
                             "the images may not show the same section")
        matrix = model.params
    residual, agreeing = _residual(matrix, ref_points, marker_points)
    if agreeing < 3:
        raise InputError(f"the registration is not supported by the images: {agreeing} matched keypoints agree "
                         f"with it (within {_INLIER_PX:g} px)")
    return Registration(method, matrix, residual, agreeing)


def _normalised(image: np.ndarray) -> np.ndarray:
    if image.ndim != 2:
        raise InputError(f"registration needs single-channel images, got shape {image.shape}")
    low, high = channel_range(image)
    if high[0] <= low[0]:
        raise InputError("an image to register is uniform: there is nothing to align")
    return np.clip(stretch(image, low[0], high[0]), 0, 1)


def _matched_keypoints(reference: np.ndarray, marker: np.ndarray, keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ORB keypoints matched both ways (reference, marker)."""
    found = []
    for image in (reference, marker):
        orb = feature.ORB(n_keypoints=keypoints, fast_threshold=0.05)
        try:
            orb.detect_and_extract(image)
        except RuntimeError:  # no keypoint at all
            return np.empty((0, 2)), np.empty((0, 2))
        found.append((orb.keypoints[:, ::-1], orb.descriptors))
    (ref_xy, ref_descriptors), (marker_xy, marker_descriptors) = found
    pairs = feature.match_descriptors(ref_descriptors, marker_descriptors, cross_check=True, max_ratio=0.9)
    return ref_xy[pairs[:, 0]], marker_xy[pairs[:, 1]]


def _residual(matrix: np.ndarray, ref_points: np.ndarray, marker_points: np.ndarray) -> tuple[float, int]:
    """RMS distance of the matches that agree with the transform, and how many agree."""
    if not len(ref_points):
        return float("nan"), 0
    mapped = transform.AffineTransform(matrix=matrix)(ref_points)
    distance = np.hypot(*(mapped - marker_points).T)
    agree = distance <= _INLIER_PX
    return (float(np.sqrt(np.mean(distance[agree] ** 2))) if agree.any() else float("nan")), int(agree.sum())
