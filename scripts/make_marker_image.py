"""Make test-data/he_marker_moved.tif: a stand-in for a second acquisition of the section of
test-data/he.jpg with a nuclear marker. Its signal is the hematoxylin optical density of the H&E
image (16-bit), and the "slide" was placed again rotated by -5 degrees and shifted by (20.4, 9.6)
pixels: marker coordinates = rotation(-5 deg) @ reference coordinates + (20.4, 9.6).

Usage: .venv/bin/python scripts/make_marker_image.py
"""

from pathlib import Path

import numpy as np
import tifffile
from skimage import transform

from dlhisto_core.classic.annotation import reference_plane
from dlhisto_core.io.images import read_image

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"
KNOWN = transform.EuclideanTransform(rotation=np.radians(-5), translation=(20.4, 9.6))

if __name__ == "__main__":
    hematoxylin = reference_plane(read_image(TEST_DATA / "he.jpg").data, "hematoxylin")
    marker = (hematoxylin / hematoxylin.max() * 60000).astype(np.float32)
    moved = transform.warp(marker, KNOWN.inverse, preserve_range=True, output_shape=marker.shape)
    tifffile.imwrite(TEST_DATA / "he_marker_moved.tif", moved.astype(np.uint16), compression="zlib")
