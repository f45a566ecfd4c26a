"""Region reading from a pyramidal Aperio slide: dlhisto's readers against OpenSlide's bare
``read_region`` on the same regions; and whole-slide prediction at a working pixel size
against prediction at full resolution.

The slide is test-data/cmu_pyramid.svs (scripts/fetch_test_slides.py: 2048 x 2048 px at
0.499 µm, levels downsampled 4x and 16x). Regions of 256 x 256 px cover each level once, in
row order; every measurement is the best of ``--repeats``. Figures: Mpx/s of output pixels.

- level 0: ``OpenSlideReader.read_region`` (RGBA -> RGB over white) against OpenSlide's
  ``read_region`` converted to an array;
- level 1 (4x downsampled), read through ``open_slide(pixel_size=1.996)``: the same level;
- 0.998 µm (2x): ``ResampledReader`` over level 0, against the bare read of the level-0 regions
  it needs (the resampling is the difference).

Prediction: ``prediction.predict_slide`` with an untrained 3-channel instance U-Net (the weights
do not change the work) on the same slide, writing the class map: at full resolution, at
0.998 µm (2x, level 0 resampled) and at 1.996 µm (4x, level 1 read as it is). A model trained at
0.5 µm/px applied to a 0.25 µm/px scan does the second kind of work: 4x fewer pixels.

Usage: .venv/bin/python benchmarks/slide_reading.py [--repeats 3] [--json FILE]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import openslide

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_test_slides import PYRAMID, fetch_slide, write_pyramid  # noqa: E402

from dlhisto_core.io.slides import open_slide  # noqa: E402

REGION = 256


def regions(height: int, width: int):
    return [(y, x) for y in range(0, height, REGION) for x in range(0, width, REGION)]


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    slide_path = PYRAMID if PYRAMID.is_file() else write_pyramid(fetch_slide())
    bare = openslide.OpenSlide(str(slide_path))
    figures = {}
    print(f"{'reading':<44} {'dlhisto Mpx/s':>14} {'bare Mpx/s':>11} {'ratio':>6}")
    for label, pixel_size, level, source_scale in (("level 0 (0.499 µm)", None, 0, 1),
                                                   ("level 1 (1.996 µm, 4x)", 1.996, 1, 1),
                                                   ("0.998 µm: level 0 resampled 2x", 0.998, 0, 2)):
        with open_slide(slide_path, pixel_size=pixel_size) as reader:
            places = regions(*reader.shape[:2])
            ours = best_of(args.repeats, lambda: [reader.read_region(y, x, REGION, REGION) for y, x in places])
            megapixels = reader.shape[0] * reader.shape[1] / 1e6
        downsample = bare.level_downsamples[level]
        side = REGION * source_scale

        def bare_reads():
            for y, x in places:
                origin = (round(x * source_scale * downsample), round(y * source_scale * downsample))
                np.asarray(bare.read_region(origin, level, (side, side)))

        theirs = best_of(args.repeats, bare_reads)
        ratio = theirs / ours
        print(f"{label:<44} {megapixels / ours:>14.1f} {megapixels / theirs:>11.1f} {ratio:>6.2f}")
        figures[label] = {"megapixels": megapixels, "dlhisto_s": ours, "bare_s": theirs}
    figures["predict"] = predict_times(slide_path)
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


def predict_times(slide_path: Path) -> dict:
    """Seconds of whole-slide prediction at full resolution and at two working pixel sizes."""
    import tempfile

    import torch

    from dlhisto_core.models.networks import build_model
    from dlhisto_core.dl.options import PredictOptions
    from dlhisto_core.dl.prediction import predict_slide
    from dlhisto_core.models.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(task="instance", out_channels=3, in_channels=3, encoder="mobilenet_v2")
    model = build_model(spec, seed=0).eval()
    times = {}
    print(f"\n{'prediction (class map)':<44} {'seconds':>8} {'Mpx':>6} {'speed-up':>9}")
    for label, pixel_size in (("full resolution (0.499 µm)", None), ("0.998 µm (2x)", 0.998),
                              ("1.996 µm (4x, level 1)", 1.996)):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            summary = predict_slide(model, spec, slide_path, PredictOptions(pixel_size=pixel_size, device="cpu"),
                                    classes_path=Path(folder) / "classes.tif")
            seconds = time.perf_counter() - start
        times[label] = {"seconds": seconds, "megapixels": summary.shape[0] * summary.shape[1] / 1e6}
        first = next(iter(times.values()))["seconds"]
        print(f"{label:<44} {seconds:>8.1f} {times[label]['megapixels']:>6.2f} {first / seconds:>9.2f}")
    return times


if __name__ == "__main__":
    main()
