"""Cell types at slide scale: object features + classification, and counting per region, of a
label image with many nuclei, against the usual whole-image scikit-image script.

The slide is a mosaic of histolytics' H&E nest crop and its 1294 nuclei
(geojson_export.write_mosaic for the labels, the same tiling for the RGB image), repeated until
it holds ``--nuclei`` objects, written tile by tile as tiled TIFFs.

- dlhisto: ``object_features`` (strip by strip) + a trained ``ObjectClassifier``'s forest on
  every object, then ``count_cells`` with a region map of two halves.
- baseline ("bare"): read the whole label image and image, ``skimage.color.rgb2hed`` of the
  whole image, ``skimage.measure.regionprops_table`` (the same shape measures and the mean of
  each stain), the same forest; it measures less (no rings, texture, neighbourhood) and holds
  the slide in memory, so it runs on a mosaic of ``--bare-nuclei`` objects.

Each runs in a fresh process, so that its peak resident memory (VmHWM) is its own. Printed:
objects per second, peak memory and peak memory per 1000 objects of each, and their ratios.

Usage: .venv/bin/python benchmarks/cell_types.py [--nuclei 1000000] [--bare-nuclei 100000] [--json FILE]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def write_slide(folder: Path, n_nuclei: int) -> tuple[Path, Path, int, int]:
    """The label mosaic and its RGB image as tiled TIFFs: paths, objects, side in pixels."""
    from PIL import Image

    from fetch_test_slides import fetch_histolytics
    from geojson_export import write_mosaic
    from dlhisto_core.io.tiling import tile_grid
    from dlhisto_core.io.writers import write_tiled_image

    labels, image = folder / "labels.tif", folder / "image.tif"
    objects, side = write_mosaic(labels, n_nuclei)
    crop = np.asarray(Image.open(fetch_histolytics()["hgsc_nest.jpg"]).convert("RGB"))

    def tiles():
        for tile in tile_grid(side, side, 512):
            ys, xs = np.arange(tile.y, tile.y + tile.height), np.arange(tile.x, tile.x + tile.width)
            yield crop[np.ix_(ys % crop.shape[0], xs % crop.shape[1])]

    write_tiled_image(image, tiles(), (side, side, 3), np.uint8, 512)
    return labels, image, objects, side


def trained_forest(folder: Path):
    """An object classifier trained on the nest crop's typed nuclei (saved, as users run it)."""
    from PIL import Image

    from fetch_test_slides import fetch_histolytics
    from dlhisto_core import object_classifier
    from dlhisto_core.classic.object_classes import read_object_classes

    files = fetch_histolytics()
    image = np.asarray(Image.open(files["hgsc_nest.jpg"]).convert("RGB"))
    labels = np.load(files["hgsc_nest_inst_mask.npz"])["nuc_raster"].astype(np.uint16)
    types = np.load(files["hgsc_nest_type_mask.npz"])["nuc_raster"].astype(np.uint8)
    classes = read_object_classes(types, labels, "class_map", ["connective", "inflammatory", "neoplastic"])
    path = folder / "classifier.zip"
    object_classifier.save(object_classifier.train([(image, labels, classes)]), path)
    return path


def run_dlhisto(labels: str, image: str, classifier: str) -> dict:
    from dlhisto_core import object_classifier
    from dlhisto_core.classic.cell_counts import CountOptions, count_cells

    start = time.perf_counter()
    result = object_classifier.classify_objects(object_classifier.load(classifier), image, labels)
    classified = time.perf_counter()
    regions = np.ones((64, 64), np.uint8)  # a region map of the (square) slide: left and right halves
    regions[:, 32:] = 2
    rows = count_cells(labels, result.as_object_classes(), regions, "class_map", CountOptions())
    return {"objects": len(result.classes), "classify_seconds": classified - start,
            "count_seconds": time.perf_counter() - classified, "regions": len({r["region"] for r in rows})}


def run_bare(labels: str, image: str, classifier: str) -> dict:
    import tifffile
    from skimage.color import rgb2hed
    from skimage.measure import regionprops_table

    from dlhisto_core import object_classifier

    forest = object_classifier.load(classifier).forest
    start = time.perf_counter()
    label_image, rgb = tifffile.imread(labels), tifffile.imread(image)
    table = regionprops_table(label_image, rgb2hed(rgb), properties=(
        "label", "area", "perimeter", "axis_major_length", "axis_minor_length", "eccentricity", "solidity",
        "intensity_mean", "intensity_max"))
    features = np.column_stack([table[k] for k in table if k != "label"])
    padded = np.zeros((len(features), forest.n_features_in_))
    padded[:, :features.shape[1]] = features[:, :forest.n_features_in_]
    forest.predict_proba(padded)
    return {"objects": len(table["label"]), "classify_seconds": time.perf_counter() - start}


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, labels: str, image: str, classifier: str) -> None:
    figures = (run_dlhisto if kind == "dlhisto" else run_bare)(labels, image, classifier)
    print(json.dumps({**figures, "peak_mb": peak_mb()}))


def measure(kind: str, folder: Path, n_nuclei: int, classifier: Path) -> dict:
    labels, image, objects, side = write_slide(folder / kind, n_nuclei)
    print(f"{kind}: {objects} nuclei on {side} x {side} px", flush=True)
    run = subprocess.run([sys.executable, __file__, "--child", kind, str(labels), str(image), str(classifier)],
                         capture_output=True, text=True, check=True)
    for path in (labels, image):
        path.unlink()
    return {"side": side, **json.loads(run.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=1_000_000)
    parser.add_argument("--bare-nuclei", type=int, default=100_000)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "LABELS", "IMAGE", "CLASSIFIER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for kind in ("dlhisto", "bare"):
            (folder / kind).mkdir()
        classifier = trained_forest(folder)
        figures = {"dlhisto": measure("dlhisto", folder, args.nuclei, classifier),
                   "bare": measure("bare", folder, args.bare_nuclei, classifier)}
    print(f"{'':<8} {'objects':>9} {'objects/s':>10} {'peak MB':>8} {'MB/1000 objects':>16}")
    for kind, f in figures.items():
        f["objects_per_second"] = f["objects"] / f["classify_seconds"]
        f["mb_per_1000_objects"] = f["peak_mb"] / f["objects"] * 1000
        print(f"{kind:<8} {f['objects']:>9} {f['objects_per_second']:>10.0f} {f['peak_mb']:>8.0f} "
              f"{f['mb_per_1000_objects']:>16.2f}")
    ours, bare = figures["dlhisto"], figures["bare"]
    print(f"counting per region (dlhisto): {ours['objects'] / ours['count_seconds']:.0f} objects/s")
    print(f"ratio dlhisto / bare: objects per second {ours['objects_per_second'] / bare['objects_per_second']:.2f}, "
          f"peak memory per object {ours['mb_per_1000_objects'] / bare['mb_per_1000_objects']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
