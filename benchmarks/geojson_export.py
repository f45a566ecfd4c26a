"""QuPath GeoJSON export of many nuclei: dlhisto's strip-by-strip export against the usual
hand-written script, on the same label image.

The label image is a mosaic of histolytics' 1294 H&E nuclei (hgsc_nest_inst_mask.npz, fetched
by scripts/fetch_test_slides.py), repeated until it holds ``--nuclei`` objects, each copy
numbered on, written as a tiled uint32 TIFF tile by tile (it is never in memory whole).

- dlhisto: ``geojson.labels_to_geojson`` on the TIFF: outlines along the pixel edges, area
  measurements, read in strips of 1024 rows.
- baseline ("bare"): what export scripts usually do with scikit-image: read the whole label
  image, then for each object (``scipy.ndimage.find_objects``) ``skimage.measure.find_contours``
  of its padded mask at level 0.5, the longest contour as the polygon, ``json.dumps`` per
  feature into the same FeatureCollection layout.

Each runs in a fresh process, so that its peak resident memory (VmHWM) is its own. Printed:
objects per second and peak memory of both, and their ratios.

Usage: .venv/bin/python benchmarks/geojson_export.py [--nuclei 200000] [--json FILE]
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def write_mosaic(path: Path, n_nuclei: int) -> tuple[int, int]:
    """A tiled uint32 TIFF of copies of the histolytics nuclei: (objects, side in pixels)."""
    from fetch_test_slides import fetch_histolytics

    from dlhisto_core.io.writers import write_tiled_image
    from dlhisto_core.io.tiling import tile_grid

    nuclei = np.load(fetch_histolytics()["hgsc_nest_inst_mask.npz"], allow_pickle=False)["nuc_raster"]
    per_copy, side = int(nuclei.max()), nuclei.shape[0]
    copies = math.ceil(math.sqrt(n_nuclei / per_copy))
    size = copies * side

    def tiles():
        for tile in tile_grid(size, size, 512):
            ys, xs = np.arange(tile.y, tile.y + tile.height), np.arange(tile.x, tile.x + tile.width)
            source = nuclei[np.ix_(ys % side, xs % side)].astype(np.uint32)
            copy = (ys // side)[:, None] * copies + (xs // side)[None, :]
            yield np.where(source > 0, source + copy.astype(np.uint32) * per_copy, 0).astype(np.uint32)

    write_tiled_image(path, tiles(), (size, size), np.uint32, 512)
    return copies * copies * per_copy, size


def export_dlhisto(labels: str, out: str) -> int:
    from dlhisto_core.io.geojson import labels_to_geojson

    return labels_to_geojson(labels, out)


def export_bare(labels: str, out: str) -> int:
    import tifffile
    from scipy import ndimage
    from skimage import measure

    image = tifffile.imread(labels)
    count = 0
    with open(out, "w") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for index, where in enumerate(ndimage.find_objects(image)):
            if where is None:
                continue
            mask = np.pad(image[where] == index + 1, 1)
            contour = max(measure.find_contours(mask.astype(np.uint8), 0.5), key=len)
            ring = [[round(float(x) - 1 + where[1].start + 0.5, 2), round(float(y) - 1 + where[0].start + 0.5, 2)]
                    for y, x in contour]
            feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                       "properties": {"objectType": "detection",
                                      "measurements": {"label": index + 1, "area": int(mask.sum())}}}
            fh.write(("\n" if count == 0 else ",\n") + json.dumps(feature, separators=(",", ":")))
            count += 1
        fh.write("\n]}\n")
    return count


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, labels: str, out: str) -> None:
    start = time.perf_counter()
    count = (export_dlhisto if kind == "dlhisto" else export_bare)(labels, out)
    print(json.dumps({"objects": count, "seconds": time.perf_counter() - start, "peak_mb": peak_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=200_000)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "LABELS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        labels = Path(folder) / "mosaic.tif"
        objects, side = write_mosaic(labels, args.nuclei)
        print(f"{objects} nuclei on {side} x {side} px ({labels.stat().st_size / 2**20:.0f} MB tiled TIFF)")
        figures = {}
        for kind in ("dlhisto", "bare"):
            run = subprocess.run([sys.executable, __file__, "--child", kind, str(labels), str(Path(folder) / "o.json")],
                                 capture_output=True, text=True, check=True)
            figures[kind] = json.loads(run.stdout.strip().splitlines()[-1])
    ours, bare = figures["dlhisto"], figures["bare"]
    print(f"{'':<10} {'objects/s':>10} {'peak MB':>9}")
    for kind, f in figures.items():
        print(f"{kind:<10} {f['objects'] / f['seconds']:>10.0f} {f['peak_mb']:>9.0f}")
    print(f"ratio dlhisto / bare: speed {bare['seconds'] / ours['seconds']:.2f}, "
          f"peak memory {ours['peak_mb'] / bare['peak_mb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"side": side, **figures}))


if __name__ == "__main__":
    main()
