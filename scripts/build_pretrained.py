"""Build dlhisto's pretrained models (dlhisto_core/models/weights/*.safetensors) from data in registry packages.

Each recipe trains through the Python API (``train``, seed 0, CPU), scores the model on images
it never trained or tuned on, and keeps it as a compact file (``shipped.compact``) with
that evaluation, which the package's model card then shows. Run it again to rebuild a model
(CPU times on 2 cores in each recipe's docstring); the held-out scores of the last build are in
README.md's table of pretrained models and in each model card.

- nuclei_fluorescence: mnfinder 1.2.3 ``training-data`` (24 images train, every 5th of its 30
  tunes, as benchmarks/accuracy.py splits it) and stardist's DSB2018 image train; mnfinder's
  ``validation-data`` (3 images, 235 nuclei) is held out and scores it; its ``test-data`` is
  never read.
- nuclei_he: histolytics' H&E nest crop and its nuclei instance mask (a segmentation model's
  output; scripts/fetch_test_slides.py HE_NUCLEI_ROWS): its top 576 rows train (4 images), the
  next 192 tune, the last 732 (599 nuclei) are held out and score it.
- tissue_he: the tumour / stroma tiles of the tissue-map test data (scripts/fetch_test_slides.py:
  the top 640 px of the nest and stroma crops, 14 tumour and 65 stroma tiles) train; the held-out
  slide made of the next 640 px of both (82 classed tiles) scores it.

Usage: .venv/bin/python scripts/build_pretrained.py [NAME ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_test_slides  # noqa: E402
import reference_data  # noqa: E402

from dlhisto_core import ClassifyOptions, DataOptions, PredictOptions, TrainOptions, classify, evaluate, predict, train
from dlhisto_core.models.shipped import SHIPPED, compact, expand  # noqa: E402

AUTHOR = "dlhisto"


def nuclei_fluorescence(work: Path) -> tuple:
    """About 50 min on 2 cores (92.6 CPU-min on 2026-12-04)."""
    training, tuning = reference_data.mnfinder_training_and_tuning()
    training.append(reference_data.stardist_nuclei())
    trained = train([i for i, _ in training], [l for _, l in training],
                    validation=([i for i, _ in tuning], [l for _, l in tuning]),
                    options=TrainOptions(epochs=15, seed=0), log=print)
    return trained, "dlhisto nuclei (fluorescence)", reference_data.mnfinder_split("validation-data"), "instance"


def nuclei_he(work: Path) -> tuple:
    """About 12 min on 2 cores (23.5 CPU-min on 2026-12-04, other work on the cores for 3 of its 12 epochs)."""
    pairs = fetch_test_slides.write_he_nuclei_data(fetch_test_slides.fetch_histolytics())
    trained = train([i for i, _ in pairs["train"]], [l for _, l in pairs["train"]],
                    validation=([i for i, _ in pairs["tune"]], [l for _, l in pairs["tune"]]),
                    data=DataOptions(patches_per_image=160), options=TrainOptions(epochs=12, seed=0), log=print)
    return trained, "dlhisto nuclei (HE)", pairs["held_out"], "instance"


def tissue_he(work: Path) -> tuple:
    """About 4 min on 2 cores (6.3 CPU-min on 2026-12-04)."""
    fetch_test_slides.write_tissue_map_data(fetch_test_slides.fetch_histolytics())
    trained = train(list(fetch_test_slides.TISSUE_TRAIN.values()), tile_classes=fetch_test_slides.TISSUE_TILES,
                    data=DataOptions(task="classification", patches_per_image=8),
                    options=TrainOptions(epochs=12, seed=0), log=print)
    return trained, "dlhisto tumour-stroma tiles (HE)", [
        (fetch_test_slides.TISSUE_SLIDE, fetch_test_slides.TISSUE_TRUTH)], "classification"


RECIPES = {"nuclei_fluorescence": nuclei_fluorescence, "nuclei_he": nuclei_he, "tissue_he": tissue_he}


def held_out_evaluation(package: Path, held_out: list[tuple[Path, Path]], mode: str, work: Path) -> Path:
    """The package scored on the held-out (image, truth) pairs, as a table of ``evaluate``."""
    table = work / "held_out_evaluation.tsv"
    if mode == "classification":
        tiles = work / "held_out_tiles.tsv"
        classify(package, [image for image, _ in held_out], ClassifyOptions(tile_size=128), table=tiles)
        scores = evaluate([tiles], [held_out[0][1]], mode="classification")
    else:
        outputs = [work / f"predicted_{image.stem}.tif" for image, _ in held_out]
        for (image, _), output in zip(held_out, outputs):
            predict(package, image, PredictOptions(), objects=output)
        scores = evaluate([(p, f"held out: {image.name}") for (image, _), p in zip(held_out, outputs)],
                          [truth for _, truth in held_out], thresholds=[0.5, 0.75])
    scores.write(table)
    print(scores.describe())
    return table


def build(name: str, work: Path) -> None:
    start = time.process_time()
    trained, title, held_out, mode = RECIPES[name](work)
    minutes = (time.process_time() - start) / 60
    package = work / f"{name}.zip"
    trained.save(package, name=title, author=AUTHOR)
    target = SHIPPED[name].path
    target.parent.mkdir(exist_ok=True)
    record = {"sources": SHIPPED[name].data, "cpu_minutes": round(minutes, 1)}
    compact(package, target, training=record)
    expand(target, work / f"{name}_half.zip")  # what users get: the weights in half precision
    table = held_out_evaluation(work / f"{name}_half.zip", held_out, mode, work)
    compact(package, target, table, "held-out images (scripts/build_pretrained.py)", training=record)
    print(f"{name}: {minutes:.1f} CPU-min of training; {target} ({target.stat().st_size / 2**20:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to build (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--work", type=Path, help="keep the data, packages and predictions in this folder")
    args = parser.parse_args()
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        parser.error(f"no recipe for {', '.join(sorted(unknown))}")
    for name in args.names or RECIPES:
        with tempfile.TemporaryDirectory(prefix=f"dlhisto-build-{name}-") as temporary:
            work = (args.work / name) if args.work else Path(temporary)
            work.mkdir(parents=True, exist_ok=True)
            build(name, work)


if __name__ == "__main__":
    main()
