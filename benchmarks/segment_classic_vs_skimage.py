"""Time dlhisto's classic segmentation against the same steps written directly with scikit-image.

Both run on the bundled DSB2018 nuclei image (512x512) and on a 2048x2048 mosaic of it:
Gaussian sigma 3, 2-class threshold (our k-means / skimage's ISODATA, the same fixpoint), removal
of objects below 60 px, distance-transform watershed with seeds 5 px apart, then regionprops.
Prints the median of several runs and the ratio dlhisto / scikit-image (below 1 = dlhisto faster).

Usage: .venv/bin/python benchmarks/segment_classic_vs_skimage.py [--repeats N]
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, morphology, segmentation

from dlhisto_core.io.images import read_image
from dlhisto_core.classic.measure import measure_objects
from dlhisto_core.classic.segmentation import ClassicOptions, segment_classic

NUCLEI = Path(__file__).resolve().parent.parent / "test-data" / "nuclei.tif"


def plain_skimage(image: np.ndarray) -> int:
    """The textbook pipeline, as a scikit-image user writes it."""
    smoothed = filters.gaussian(image.astype(np.float32), sigma=3, preserve_range=True)
    mask = smoothed > filters.threshold_isodata(smoothed)
    mask = morphology.remove_small_objects(mask, max_size=59)
    distance = ndi.distance_transform_edt(mask)
    peaks = feature.peak_local_max(distance, min_distance=5, labels=measure.label(mask), exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    measure.regionprops_table(labels, intensity_image=image, properties=(
        "label", "area", "centroid", "intensity_mean", "intensity_min", "intensity_max", "eccentricity",
        "solidity", "perimeter", "equivalent_diameter_area", "axis_major_length", "axis_minor_length",
        "orientation"))
    return int(labels.max())


def dlhisto(image: np.ndarray) -> int:
    labels = segment_classic(image, ClassicOptions()).labels
    measure_objects(labels, image)
    return int(labels.max())


def median_seconds(function, image, repeats: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = function(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    figures = {}
    nuclei = read_image(NUCLEI).data
    images = {"nuclei 512x512": nuclei, "mosaic 2048x2048": np.tile(nuclei, (4, 4))}
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'image':<18} {'dlhisto s':>10} {'skimage s':>10} {'ratio':>6} {'objects (dlhisto/skimage)':>27}")
    for name, image in images.items():
        ours, n_ours = median_seconds(dlhisto, image, args.repeats)
        theirs, n_theirs = median_seconds(plain_skimage, image, args.repeats)
        print(f"{name:<18} {ours:>10.3f} {theirs:>10.3f} {ours / theirs:>6.2f} {n_ours:>14}/{n_theirs}")
        figures[name] = {"dlhisto_s": ours, "skimage_s": theirs, "objects": [n_ours, n_theirs]}
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
