"""The viewer's tiles at slide scale, against OpenSlide's own Deep Zoom tiler, and the first view
of the page in a browser.

- The slide: the top-left 2048 x 2048 px of the real Aperio region (test-data/cmu_small_region.svs)
  repeated into a square of ``--gigapixels`` (default 2), written tile by tile as a tiled JPEG
  TIFF with levels 4x and 16x below it (a scanner's layout), which OpenSlide reads as a generic
  TIFF and dlhisto with tifffile.
- dlhisto: ``make_viewer`` of that slide with an objects layer (a nucleus outline every 64 px),
  in a fresh process on every core: seconds, full-resolution Mpx/s, peak resident memory (VmHWM).
- bare: ``openslide.deepzoom.DeepZoomGenerator`` (openslide-python's tiler, the one OpenSlide's
  own examples and many tile servers use), every tile of every level read and saved as JPEG at
  the same quality with Pillow, on as many threads, over the same kind of slide of
  ``--bare-gigapixels`` (its tiles only, no layer): Mpx/s. Their ratio is printed.
- first view: dlhisto's page served over HTTP (a Python server thread), opened in headless
  Chromium (Debian's, through Playwright): seconds from the request to every tile in view drawn.

Usage: .venv/bin/python benchmarks/viewer.py [--gigapixels 2] [--bare-gigapixels 0.25] [--json FILE]
"""

import argparse
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 2048
"""Side of the real region repeated (a multiple of 16, so that its levels repeat exactly too)."""


def write_slide(path: Path, side: int) -> None:
    """A ``side`` x ``side`` tiled JPEG TIFF of the repeated region, with levels 4x and 16x."""
    import tifffile

    from dlhisto_core.io.slides import open_slide

    with open_slide(ROOT / "test-data" / "cmu_small_region.svs") as reader:
        block = np.asarray(reader.read_region(0, 0, BLOCK, BLOCK))[..., :3]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level, factor in enumerate((1, 4, 16)):
            small = block[::factor, ::factor] if factor > 1 else block
            level_side = math.ceil(side / factor)
            tile = 512

            def tiles(small=small, level_side=level_side):
                for y in range(0, level_side, tile):
                    for x in range(0, level_side, tile):
                        ys = np.arange(y, y + tile) % small.shape[0]
                        xs = np.arange(x, x + tile) % small.shape[1]
                        yield small[np.ix_(ys, xs)]

            tif.write(tiles(), shape=(level_side, level_side, 3), dtype=np.uint8, tile=(tile, tile),
                      compression="jpeg", compressionargs={"level": 90}, photometric="rgb", subfiletype=1 if level else 0,
                      resolution=(1e4 / (0.5 * factor), 1e4 / (0.5 * factor)), resolutionunit="CENTIMETER",
                      maxworkers=os.cpu_count())


def write_objects(path: Path, side: int) -> int:
    """A nucleus-sized octagon every 64 px, as QuPath detections with an area measurement."""
    angles = np.linspace(0, 2 * np.pi, 9)
    ring = np.stack([6 * np.cos(angles), 6 * np.sin(angles)], axis=1)
    count = 0
    with open(path, "w") as out:
        out.write('{"type":"FeatureCollection","features":[')
        for y in range(32, side, 64):
            for x in range(32, side, 64):
                coordinates = np.round(ring + [x, y], 1).tolist()
                coordinates[-1] = coordinates[0]
                out.write(("," if count else "") + json.dumps({
                    "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coordinates]},
                    "properties": {"objectType": "detection", "measurements": {"area": 113}}}))
                count += 1
        out.write("]}")
    return count


DLHISTO_RUN = """
import json, os, sys, time
from dlhisto_core.view.page import make_viewer
start = time.perf_counter()
make_viewer(sys.argv[1], sys.argv[2], sys.argv[3], objects=[(sys.argv[4], "objects")] if sys.argv[4] else [],
            threads=os.cpu_count())
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2**20
print(json.dumps({"seconds": seconds, "peak_gb": peak}))
"""

BARE_RUN = """
import json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import openslide
from openslide.deepzoom import DeepZoomGenerator
start = time.perf_counter()
slide = openslide.OpenSlide(sys.argv[1])
zoom = DeepZoomGenerator(slide, tile_size=256, overlap=0, limit_bounds=False)
folder = sys.argv[2]
def save(level, column, row):
    zoom.get_tile(level, (column, row)).save(f"{folder}/{level}_{column}_{row}.jpeg", quality=85)
with ThreadPoolExecutor(os.cpu_count()) as pool:
    for level in range(zoom.level_count):
        columns, rows = zoom.level_tiles[level]
        list(pool.map(lambda cr: save(level, *cr), [(c, r) for r in range(rows) for c in range(columns)]))
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2**20
print(json.dumps({"seconds": seconds, "peak_gb": peak}))
"""


def run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def first_view(page: Path) -> float:
    """Seconds from requesting the page to every tile in view drawn, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            view = browser.new_page(viewport={"width": 1600, "height": 1000})
            view.goto("about:blank")  # the browser's own start is not the page's
            start = time.perf_counter()
            view.goto(f"http://127.0.0.1:{server.server_port}/{page.name}", wait_until="commit")
            view.wait_for_function("window.dlhisto !== undefined")
            view.evaluate("window.dlhisto.opened.then(() => window.dlhisto.drawn())")
            seconds = time.perf_counter() - start
            browser.close()
    finally:
        server.shutdown()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigapixels", type=float, default=2.0)
    parser.add_argument("--bare-gigapixels", type=float, default=0.25)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        side = math.ceil(math.sqrt(args.gigapixels * 1e9))
        bare_side = math.ceil(math.sqrt(args.bare_gigapixels * 1e9))
        start = time.perf_counter()
        write_slide(folder / "slide.tif", side)
        write_slide(folder / "bare.tif", bare_side)
        objects = write_objects(folder / "objects.geojson", side)
        print(f"slides written in {time.perf_counter() - start:.0f} s: {side} x {side} px ({side * side / 1e9:.2f} Gpx, "
              f"{objects:,} objects) and {bare_side} x {bare_side} px", flush=True)
        ours = run(DLHISTO_RUN, str(folder / "slide.tif"), str(folder / "view.html"), str(folder / "view_files"),
                   str(folder / "objects.geojson"))
        plain = run(DLHISTO_RUN, str(folder / "bare.tif"), str(folder / "plain.html"), str(folder / "plain_files"), "")
        (folder / "bare_tiles").mkdir()
        bare = run(BARE_RUN, str(folder / "bare.tif"), str(folder / "bare_tiles"))
        seconds = first_view(folder / "view.html")
    figures = {
        "gigapixels": side * side / 1e9, "cores": os.cpu_count(), "objects": objects,
        "dlhisto_seconds": ours["seconds"], "dlhisto_mpx_s": side * side / 1e6 / ours["seconds"],
        "dlhisto_peak_gb": ours["peak_gb"],
        "same_work_gigapixels": bare_side * bare_side / 1e9,
        "dlhisto_same_work_mpx_s": bare_side * bare_side / 1e6 / plain["seconds"],
        "dlhisto_same_work_peak_gb": plain["peak_gb"],
        "bare_mpx_s": bare_side * bare_side / 1e6 / bare["seconds"], "bare_peak_gb": bare["peak_gb"],
        "first_view_seconds": seconds,
    }
    figures["ratio_same_work"] = figures["dlhisto_same_work_mpx_s"] / figures["bare_mpx_s"]
    print(f"dlhisto, {figures['gigapixels']:.2f} Gpx slide + {objects:,} objects layer: {ours['seconds']:.0f} s, "
          f"{figures['dlhisto_mpx_s']:.1f} Mpx/s, peak memory {ours['peak_gb']:.2f} GB")
    print(f"same work ({figures['same_work_gigapixels']:.2f} Gpx slide tiles only): dlhisto "
          f"{figures['dlhisto_same_work_mpx_s']:.1f} Mpx/s (peak {plain['peak_gb']:.2f} GB), OpenSlide DeepZoomGenerator {figures['bare_mpx_s']:.1f} "
          f"Mpx/s (peak {bare['peak_gb']:.2f} GB): ratio {figures['ratio_same_work']:.2f}")
    print(f"first view of the {figures['gigapixels']:.2f} Gpx slide in headless Chromium: {seconds:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
