"""Denoising quality of the regression U-Net against a Gaussian filter, on a held-out image.

Trains ``dlhisto train --task regression`` on the noisy quadrants 1-3 of the DSB2018 nuclei
image (test-data/nuclei_q1..3_noisy.tif, Poisson + read noise, scripts/make_noisy_images.py)
with the clean quadrants as targets, for each number of epochs asked for, restores the held-out
quadrant 4 with ``dlhisto predict`` and prints PSNR, SSIM and NRMSE of ``dlhisto evaluate
--mode restoration`` against the clean quadrant, beside the noisy input and the best Gaussian
filter (sigma chosen on the held-out quadrant itself, so an optimistic baseline).

    .venv/bin/python benchmarks/restoration.py --epochs 10,40 [--json figures.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.filters import gaussian

from dlhisto_core.cli import main as dlhisto

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"
NOISY, CLEAN = TEST_DATA / "nuclei_q4_noisy.tif", TEST_DATA / "nuclei_q4.tif"


def scores(predictions: dict[str, Path], folder: Path) -> dict[str, dict]:
    """evaluate --mode restoration of each prediction against the clean quadrant 4."""
    args = ["evaluate", "--mode", "restoration", "--table", str(folder / "scores.tsv")]
    for name, path in predictions.items():
        args += ["--prediction", str(path), "--prediction-name", name, "--truth", str(CLEAN)]
    assert dlhisto(args) == 0
    rows = csv.DictReader((folder / "scores.tsv").open(), delimiter="\t")
    return {r["image"]: {k: float(v) for k, v in r.items() if k != "image"} for r in rows if r["image"] != "all"}


def best_gaussian(folder: Path) -> Path:
    noisy = tifffile.imread(NOISY).astype(np.float32)
    clean = tifffile.imread(CLEAN).astype(np.float32)
    sigma = min((0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5),
                key=lambda s: np.mean((gaussian(noisy, s, preserve_range=True) - clean) ** 2))
    path = folder / f"gaussian_sigma_{sigma:g}.tif"
    tifffile.imwrite(path, gaussian(noisy, sigma, preserve_range=True).astype(np.float32))
    return path


def restore(epochs: int, folder: Path) -> tuple[Path, float]:
    model = folder / f"denoiser_{epochs}.zip"
    started = time.perf_counter()
    pairs = [a for q in (1, 2, 3) for a in ("--image", str(TEST_DATA / f"nuclei_q{q}_noisy.tif"),
                                           "--target", str(TEST_DATA / f"nuclei_q{q}.tif"))]
    assert dlhisto(["train", "--task", "regression", *pairs, "--encoder", "mobilenet_v2", "--patch-size", "128",
                    "--patches-per-image", "32", "--epochs", str(epochs), "--patience", str(epochs),
                    "--learning-rate", "3e-3", "--loss", "l1", "--seed", "0", "--model", str(model)]) == 0
    seconds = time.perf_counter() - started
    restored = folder / f"unet_{epochs}_epochs.tif"
    assert dlhisto(["predict", str(NOISY), "--model", str(model), "--predicted-image", str(restored),
                    "--tile-size", "128", "--overlap", "64"]) == 0
    return restored, seconds


def run(epoch_counts: list[int]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        predictions, seconds = {"noisy input": NOISY}, {}
        gaussian_path = best_gaussian(folder)
        predictions[gaussian_path.stem.replace("_", " ")] = gaussian_path
        for epochs in epoch_counts:
            path, seconds[path.stem] = restore(epochs, folder)
            predictions[path.stem.replace("_", " ")] = path
        results = scores(predictions, folder)
    noisy_psnr = results["noisy input"]["psnr"]
    print(f"{'held-out nuclei_q4_noisy.tif':<28} {'PSNR dB':>8} {'gain':>6} {'SSIM':>6} {'NRMSE':>7} {'train s':>8}")
    for name, row in results.items():
        trained = seconds.get(name.replace(" ", "_"))
        print(f"{name:<28} {row['psnr']:>8.2f} {row['psnr'] - noisy_psnr:>6.2f} {row['ssim']:>6.3f} "
              f"{row['nrmse']:>7.4f} {'' if trained is None else f'{trained:.0f}':>8}")
    return {"scores": results, "train_seconds": seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="10,40", help="comma-separated numbers of epochs to train")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    figures = run([int(e) for e in args.epochs.split(",")])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
