"""Pixel classifier speed and memory on a 4096x4096 image: tiled (what dlhisto runs) against
naive (the whole image's feature stack at once).

The image is an 8x8 mosaic of the bundled nuclei image, stored as a tiled TIFF. The classifier
is trained on the bundled scribbles with the default filters (6 filters x 4 scales + raw = 33
features) and 100 trees. Each measurement runs in a fresh process so that its peak resident
memory (ru_maxrss) is its own.

Usage: .venv/bin/python benchmarks/pixel_classifier.py [--size 4096] [--tile-size 512] [--tiled-only]
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from dlhisto_core.ml import pixel_classifier
from dlhisto_core.classic.segmentation import objects_from_mask
from dlhisto_core.imaging.features import FeatureSettings, compute_features, features_of_tile
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.images import read_image
from dlhisto_core.classic.measure import measure_objects
from dlhisto_core.io.tiling import map_in_order, tile_grid

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"
MODES = {
    "features_tiled": "features, tile by tile (all cores)",
    "features_whole": "features, whole image at once",
    "predict_tiled": "features + forest + write, tiled (all cores)",
    "predict_whole": "features + forest, whole image at once",
    "objects_tiled": "objects of class 1 + measurements, by strips",
    "objects_whole": "objects of class 1 + measurements, whole map",
}
"""In this order: the objects are those of the class map that predict_tiled writes."""


def run_mode(mode: str, image_path: Path, classifier_path: Path, tile_size: int, out_dir: Path) -> dict:
    classifier = pixel_classifier.load(classifier_path)
    settings = classifier.settings
    start = time.perf_counter()
    if mode == "features_tiled":
        with TiledImageReader(image_path) as reader:
            for _ in map_in_order(lambda tile: features_of_tile(reader, tile, settings),
                                  tile_grid(*reader.shape[:2], tile_size)):
                pass
    elif mode == "features_whole":
        compute_features(read_image(image_path).data, settings)
    elif mode == "predict_tiled":
        pixel_classifier.classify_pixels(classifier, image_path, out_dir / "p.tif", out_dir / "c.tif",
                                         pixel_classifier.ClassifyPixelsOptions(tile_size))
    elif mode == "predict_whole":
        features = compute_features(read_image(image_path).data, settings)
        probabilities = classifier.forest.predict_proba(features.reshape(-1, features.shape[-1]))
        probabilities.argmax(axis=1)
    elif mode == "objects_tiled":
        pixel_classifier.objects_of_class(classifier, out_dir / "c.tif", out_dir / "p.tif", 1, out_dir / "o.tif",
                                          out_dir / "m.tsv", out_dir / "s.tsv", 60, 5, tile_size=tile_size)
    elif mode == "objects_whole":
        class_map = read_image(out_dir / "c.tif").data
        probability = read_image(out_dir / "p.tif").data[..., 0]
        measure_objects(objects_from_mask(class_map == 1, 60, 5), probability)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--tiled-only", action="store_true", help="skip the whole-image feature stacks")
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        work = Path(args.work)
        print(json.dumps(run_mode(args.mode, work / "image.tif", work / "classifier.zip", args.tile_size, work)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nuclei = read_image(TEST_DATA / "nuclei.tif").data
        reps = -(-args.size // nuclei.shape[0])
        mosaic = np.tile(nuclei, (reps, reps))[:args.size, :args.size]
        tifffile.imwrite(work / "image.tif", mosaic, tile=(512, 512), compression="zlib")
        classifier = pixel_classifier.train([(TEST_DATA / "nuclei.tif", TEST_DATA / "nuclei_scribbles.tif")],
                                            FeatureSettings())
        pixel_classifier.save(classifier, work / "classifier.zip")
        megapixels = args.size * args.size / 1e6
        print(f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
              f"Python {platform.python_version()}; image {args.size}x{args.size} ({megapixels:.1f} Mpx), "
              f"{len(classifier.settings.names(1))} features, tiles of {args.tile_size} px")
        print(f"{'measurement':<44} {'s':>8} {'s/Mpx':>8} {'peak RSS MB':>12}")
        figures = {"megapixels": megapixels}
        for mode, label in MODES.items():
            if args.tiled_only and mode in ("features_whole", "predict_whole"):
                continue
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--work", str(work),
                                  "--tile-size", str(args.tile_size)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            print(f"{label:<44} {result['seconds']:>8.1f} {result['seconds'] / megapixels:>8.2f} "
                  f"{result['peak_rss_mb']:>12.0f}")
            figures[mode] = result
        if args.json:
            Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
