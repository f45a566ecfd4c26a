"""Does mixed precision hold? The models in float16 and bfloat16 autocast against float32.

For each model and image, the network runs through ``dl_predict`` (or ``dl_classify``) three
times on this CPU: float32 (what ``--precision auto`` does on CPUs), float16 autocast (what it
does on CUDA; slow on most CPUs, but the same numbers: both accumulate in float32) and bfloat16
autocast (``--precision bf16``). Printed against float32:

- segmentation: the fraction of pixels whose class (argmax) agrees, and for instance models the
  objects' F1 at IoU 0.5 against the annotation and its change (the package's thresholds);
- regression (the test denoiser): the largest and mean absolute difference in the target's
  units, as a fraction of the float32 output's range, and the PSNR against the clean image;
- classification (the test stain classifier): the fraction of tiles whose class agrees.

The bar of issue 22: pixels agree on >= 99.9 %, the F1 changes by < 0.005; a regression output
within 1 % of its range.

Models: the test models of ``scripts/make_test_model.py`` (test-data/) and the shipped nuclei
models (``dlhisto pretrained``), on the images their tests use.

Usage: .venv/bin/python benchmarks/precision.py [--json FILE] [--skip-shipped]
"""

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from dlhisto_core.dl import classification, engine, instances, prediction
from dlhisto_core.models import packages, shipped
from dlhisto_core.dl.options import ClassifyOptions, PredictOptions
from dlhisto_core.io.images import read_image, read_labels
from dlhisto_core.dl.precision import Precision

DATA = Path(__file__).resolve().parent.parent / "test-data"
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
PIXELS_AGREE, F1_CHANGE, REGRESSION_RANGE = 0.999, 0.005, 0.01


@contextlib.contextmanager
def forced(dtype):
    """Predict and classify run in autocast to ``dtype`` (None: float32), whatever the option."""
    chosen = lambda choice, device: Precision(device, dtype)  # noqa: E731
    saved = engine.network_precision, classification.network_precision
    engine.network_precision = classification.network_precision = chosen
    try:
        yield
    finally:
        engine.network_precision, classification.network_precision = saved


def segmentation(name: str, package: Path, image: Path, truth: Path) -> list[dict]:
    model, spec, rdf = packages.load_package(package, package.name)
    thresholds = packages.instance_thresholds(rdf, package.name)
    true_labels = read_labels(truth).data
    outputs = {}
    for label, dtype in DTYPES.items():
        with forced(dtype):
            outputs[label] = prediction.probabilities_in_memory(model, spec, image, PredictOptions(device="cpu"))
    reference = outputs["fp32"].argmax(-1)
    f1 = {label: instances.objects_f1([(p, true_labels)], thresholds).f1 for label, p in outputs.items()}
    rows = []
    for label in ("fp16", "bf16"):
        agree = float((outputs[label].argmax(-1) == reference).mean())
        change = f1[label] - f1["fp32"]
        rows.append({"model": name, "image": image.name, "precision": label, "pixels_agree": agree,
                     "f1_fp32": f1["fp32"], "f1": f1[label], "f1_change": change,
                     "holds": agree >= PIXELS_AGREE and abs(change) < F1_CHANGE})
    return rows


def regression(name: str, package: Path, image: Path, clean: Path) -> list[dict]:
    model, spec, rdf = packages.load_package(package, package.name)
    normalization = packages.target_normalization(rdf, spec, package.name)
    target = read_image(clean).data.astype(np.float64)
    outputs = {}
    for label, dtype in DTYPES.items():
        with forced(dtype), tempfile.TemporaryDirectory() as work:
            path = Path(work) / "out.tif"
            prediction.predict_image(model, spec, image, PredictOptions(device="cpu"), path, normalization)
            outputs[label] = read_image(path).data.astype(np.float64)
    reference = outputs["fp32"]
    span = float(reference.max() - reference.min())

    def psnr(values):
        peak = target.max() - target.min()
        return float(10 * np.log10(peak ** 2 / np.mean((values - target) ** 2)))
    rows = []
    for label in ("fp16", "bf16"):
        difference = np.abs(outputs[label] - reference)
        rows.append({"model": name, "image": image.name, "precision": label,
                     "max_difference": float(difference.max() / span), "mean_difference": float(difference.mean() / span),
                     "psnr_fp32": psnr(reference), "psnr": psnr(outputs[label]),
                     "holds": float(difference.max() / span) < REGRESSION_RANGE})
    return rows


def tile_classification(name: str, package: Path, images: list[Path], tile_size: int) -> list[dict]:
    model, spec, rdf = packages.load_package(package, package.name)
    class_names = rdf["outputs"][0]["axes"][1]["channel_names"]
    classes = {}
    for label, dtype in DTYPES.items():
        with forced(dtype):
            rows = classification.classify_tiles(model, spec, class_names, [(str(p), p.name) for p in images],
                                              ClassifyOptions(tile_size=tile_size, device="cpu"))
            classes[label] = [row["class"] for row in rows]
    out = []
    for label in ("fp16", "bf16"):
        agree = float(np.mean([a == b for a, b in zip(classes[label], classes["fp32"])]))
        out.append({"model": name, "image": f"{len(classes['fp32'])} tiles", "precision": label,
                    "pixels_agree": agree, "holds": agree >= PIXELS_AGREE})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-shipped", action="store_true", help="only the test models")
    parser.add_argument("--json", help="also write the rows to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    rows = segmentation("test U-Net (instance)", DATA / "nuclei_unet.zip", DATA / "nuclei.tif",
                        DATA / "nuclei_groundtruth.tif")
    rows += regression("test denoiser (regression)", DATA / "nuclei_denoiser.zip", DATA / "nuclei_q4_noisy.tif",
                       DATA / "nuclei_q4.tif")
    rows += tile_classification("test stain classifier", DATA / "stain_classifier.zip",
                           [DATA / "he_right.png", DATA / "ihc_right.png"], 64)
    if not args.skip_shipped:
        with tempfile.TemporaryDirectory() as work:
            for name, image, truth in (("nuclei_fluorescence", "nuclei.tif", "nuclei_groundtruth.tif"),
                                       ("nuclei_he", "hgsc_nuclei_held_out_768_0.tif",
                                        "hgsc_nuclei_held_out_768_0_labels.tif")):
                if not (DATA / image).is_file():
                    print(f"({name}: {image} is not here; scripts/fetch_test_slides.py writes it)")
                    continue
                package = shipped.pretrained_model(name, Path(work) / f"{name}.zip")
                rows += segmentation(f"shipped {name}", package, DATA / image, DATA / truth)
    print(f"against float32 on this CPU; bar: pixels (or tiles) agree >= {PIXELS_AGREE:.1%}, objects' F1 "
          f"changes < {F1_CHANGE}, regression within {REGRESSION_RANGE:.0%} of its range")
    print(f"{'model':<32} {'image':<32} {'prec.':<5} {'agree':>8} {'F1 fp32':>8} {'F1':>7} {'change':>8} holds")
    for row in rows:
        if "max_difference" in row:
            print(f"{row['model']:<32} {row['image']:<32} {row['precision']:<5} max diff {row['max_difference']:.2%} "
                  f"of range, mean {row['mean_difference']:.3%}; PSNR {row['psnr_fp32']:.2f} -> {row['psnr']:.2f} dB"
                  f"  {'yes' if row['holds'] else 'no'}")
            continue
        f1 = (f"{row['f1_fp32']:>8.4f} {row['f1']:>7.4f} {row['f1_change']:>+8.4f}" if "f1" in row
              else f"{'':>8} {'':>7} {'':>8}")
        print(f"{row['model']:<32} {row['image']:<32} {row['precision']:<5} {row['pixels_agree']:>8.4%} {f1} "
              f"{'yes' if row['holds'] else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
