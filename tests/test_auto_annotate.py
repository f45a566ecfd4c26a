"""Registration of real images moved by known transforms, and labels made from a marker image
in the reference image's frame."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from skimage import transform

from dlhisto_core.classic.annotation import AutoAnnotateOptions, auto_annotate, reference_plane
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import Image, read_image, read_labels
from dlhisto_core.evaluation.metrics import match_instances
from dlhisto_core.classic.registration import register
from dlhisto_core.classic.segmentation import segment_classic

KNOWN = transform.EuclideanTransform(rotation=np.radians(7), translation=(12.3, -8.7))


def moved(image: np.ndarray, known: transform.EuclideanTransform) -> np.ndarray:
    """The image as a second acquisition sees it: ``known`` maps its coordinates to the new ones."""
    return transform.warp(image.astype(np.float32), known.inverse, preserve_range=True, output_shape=image.shape)


def corner_error(matrix: np.ndarray, known: transform.EuclideanTransform, shape) -> float:
    """Largest distance, in pixels, between where the estimate and the truth send the image's corners."""
    h, w = shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    return float(np.abs(transform.AffineTransform(matrix=matrix)(corners) - known(corners)).max())


@pytest.mark.parametrize("method", ["rigid", "similarity", "affine"])
def test_a_rotated_and_shifted_real_image_is_registered_within_half_a_pixel(test_data, method):
    nuclei = read_image(test_data / "nuclei.tif").data
    found = register(nuclei, moved(nuclei, KNOWN), method)
    assert corner_error(found.matrix, KNOWN, nuclei.shape) < 0.5
    assert abs(found.rotation_deg - 7) < 0.05
    assert found.residual_px < 1.5 and found.matches > 300


def test_phase_correlation_recovers_a_sub_pixel_shift(test_data):
    nuclei = read_image(test_data / "nuclei.tif").data
    shift = transform.EuclideanTransform(translation=(15.25, -6.5))
    found = register(nuclei, moved(nuclei, shift), "phase")
    assert np.allclose(found.translation, (15.25, -6.5), atol=0.2)


def test_marker_labels_land_in_the_reference_frame(test_data):
    """H&E as the reference; as the marker, its hematoxylin imaged 'again' (16-bit, rotated by
    -5 degrees and shifted). The labels returned equal the marker's objects moved by the true
    transform."""
    he = read_image(test_data / "he.jpg")
    hematoxylin = reference_plane(he.data, "hematoxylin")
    marker_truth = (hematoxylin / hematoxylin.max() * 60000).astype(np.uint16)
    known = transform.EuclideanTransform(rotation=np.radians(-5), translation=(20.4, 9.6))
    marker = moved(marker_truth, known).astype(np.uint16)
    options = AutoAnnotateOptions()
    labels, found, warped = auto_annotate(he, Image(marker, None), options)
    assert corner_error(found.matrix, known, labels.shape) < 0.5
    objects = segment_classic(marker, options.segmentation).labels
    expected = transform.warp(objects, transform.AffineTransform(matrix=known.params), output_shape=labels.shape,
                              order=0, preserve_range=True).astype(labels.dtype)
    matching = match_instances(expected, labels, [0.5])[0]
    assert matching.f1 > 0.97 and matching.mean_matched_iou > 0.9
    assert labels.max() == len(np.unique(labels)) - 1  # numbered 1..N without gaps
    assert warped.shape == labels.shape


def test_unrelated_images_are_refused(test_data):
    nuclei = read_image(test_data / "nuclei.tif").data
    noise = np.random.default_rng(0).integers(0, 255, nuclei.shape).astype(np.uint8)
    with pytest.raises(InputError, match="keypoints"):
        register(nuclei, noise, "rigid")
    with pytest.raises(InputError, match="uniform"):
        register(nuclei, np.zeros_like(nuclei), "rigid")


def test_command_writes_labels_and_report_with_the_residual(test_data, tmp_path):
    nuclei = read_image(test_data / "nuclei.tif").data
    tifffile.imwrite(tmp_path / "marker.tif", moved(nuclei, KNOWN).astype(np.uint8))
    done = subprocess.run([sys.executable, "-m", "dlhisto_core.cli", "auto_annotate", str(test_data / "nuclei.tif"),
                           str(tmp_path / "marker.tif"), "--reference-channel", "bright",
                           "--labels", str(tmp_path / "labels.tif"), "--report", str(tmp_path / "report.tsv")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rotation 7.0" in done.stdout
    report = next(csv.DictReader((tmp_path / "report.tsv").open(), delimiter="\t"))
    assert abs(float(report["rotation_deg"]) - 7) < 0.05 and float(report["residual_px"]) < 1.5
    labels = read_labels(tmp_path / "labels.tif").data
    assert labels.shape == nuclei.shape and int(report["objects"]) == labels.max() > 50

