"""Training labels from a second image of the same section: the marker image (e.g. a
fluorescent nuclear stain) is registered onto the reference image (e.g. the H&E scan),
segmented, and its labels are returned in the reference image's frame, ready for ``train``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import relabel_sequential

from ..base.errors import InputError
from ..io.images import Image
from ..io.images import single_channel
from ..base.bounds import bounded, check_bounds, check_choices, choice
from ..imaging.preprocessing import MAX_CHANNEL, deconvolve_stains, rescale_to_pixel_size
from .registration import METHODS, Registration, register
from .segmentation import ClassicOptions, segment_classic

REFERENCE_CHANNELS = ("hematoxylin", "dark", "bright")
"""How the reference shows the structures the marker labels: the hematoxylin of an RGB
brightfield image, dark structures of a grey image (inverted), or bright ones."""


@dataclass
class AutoAnnotateOptions:
    reference_channel: str = choice("hematoxylin", REFERENCE_CHANNELS)
    """How the reference shows the marked structures: hematoxylin of an RGB brightfield image, or
    dark or bright structures of a grey image."""
    marker_channel: int | None = bounded(None, 0, MAX_CHANNEL)
    """Channel of the marker image (0-based); None: the only channel."""
    method: str = choice("rigid", METHODS)
    output: str = choice("instances", ("instances", "classes"))
    """instances: one id per object; classes: 1 where the marker is on."""
    segmentation: ClassicOptions = field(
        default_factory=lambda: ClassicOptions(sigma=2.0, threshold="otsu", min_area=30))
    """How the registered marker is segmented: fainter and smaller objects than the defaults of
    segment_classic."""

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)


def reference_plane(image: np.ndarray, channel: str) -> np.ndarray:
    """The reference as one plane in which the marked structures are bright."""
    if channel == "hematoxylin":
        return deconvolve_stains(image, "hematoxylin")
    if channel not in REFERENCE_CHANNELS:
        raise InputError(f"unknown reference channel '{channel}'; choose one of {', '.join(REFERENCE_CHANNELS)}")
    plane = single_channel(image).astype(np.float32)
    return plane.max() - plane if channel == "dark" else plane


def auto_annotate(reference: Image, marker: Image, options: AutoAnnotateOptions
                  ) -> tuple[np.ndarray, Registration, np.ndarray]:
    """Training labels from a marker image of the same section (``dlhisto auto_annotate``): the
    marker is registered onto the reference, segmented, and its labels put in the reference's frame.

    Returns
    -------
    labels : ndarray
        In the reference's frame: one id per object, or 1 where the marker is on.
    registration : Registration
        The transform found (method, rotation, translation, residual in pixels, matches).
    warped_marker : ndarray
        The marker plane in the reference's frame, to check the overlay.

    Examples
    --------
    >>> from dlhisto_core import AutoAnnotateOptions, auto_annotate, read_image
    >>> he, marker = read_image("test-data/he.jpg"), read_image("test-data/he_marker_moved.tif")
    >>> labels, found, _ = auto_annotate(he, marker, AutoAnnotateOptions(method="rigid"))
    >>> labels.shape == he.data.shape[:2], round(found.rotation_deg), found.residual_px < 1.5
    (True, -5, True)
    """
    if options.output not in ("instances", "classes"):
        raise InputError(f"unknown output '{options.output}'; choose instances or classes")
    marker_data = single_channel(marker.data, options.marker_channel)
    if reference.pixel_size and marker.pixel_size and \
            not np.allclose(reference.pixel_size, marker.pixel_size, rtol=0.01):
        marker_data, _ = rescale_to_pixel_size(marker_data, marker.pixel_size, reference.pixel_size[0])
    reference_data = reference_plane(reference.data, options.reference_channel)
    found = register(reference_data, marker_data, options.method)
    objects = segment_classic(marker_data, options.segmentation).labels
    labels = found.warp(objects if options.output == "instances" else (objects > 0).astype(np.uint8),
                        reference_data.shape, labels=True)
    if options.output == "instances":  # objects pushed out of the frame leave gaps in the numbering
        labels = relabel_sequential(labels)[0]
    return labels, found, found.warp(marker_data.astype(np.float32), reference_data.shape)


def report_row(found: Registration, labels: np.ndarray, output: str, reference_name: str, marker_name: str) -> dict:
    """The row of the report table of ``auto_annotate``: the transform, its residual, and the
    object count (instances) or the marked fraction (classes)."""
    row = {"reference": reference_name, "marker": marker_name, "method": found.method,
           "rotation_deg": found.rotation_deg, "translation_x": found.translation[0],
           "translation_y": found.translation[1], "residual_px": found.residual_px, "matches": found.matches}
    if output == "instances":
        return {**row, "objects": int(labels.max())}
    return {**row, "marked_fraction": float((labels > 0).mean())}


def describe(found: Registration) -> str:
    """One line: how the marker was registered."""
    return (f"marker registered onto the reference ({found.method}): rotation {found.rotation_deg:.2f} deg, "
            f"translation ({found.translation[0]:.1f}, {found.translation[1]:.1f}) px, residual "
            f"{found.residual_px:.2f} px over {found.matches} matched keypoints")
