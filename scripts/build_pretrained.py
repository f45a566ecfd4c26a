"""Build dlhisto's pretrained models (dlhisto_core/models/weights/*.safetensors) from data in registry packages.

Each recipe trains through the Python API (``train``, seed 0, CPU), scores the model on images
it never trained or tuned on, and keeps it as a compact file (``shipped.compact``) with
that evaluation, which the package's model card then shows. Run it again to rebuild a model
(CPU times on 2 cores in each recipe's docstring); the held-out scores of the last build are in
README.md's table of pretrained models and in each model card.

- nuclei_fluorescence and nuclei_he: the sources of scripts/pretrained_data.py, each cut into a
  part that trains, one that tunes (best epoch, object thresholds) and one held out, which scores
  the model, source by source and pooled; strong augmentation (scale, stain, intensity, blur,
  noise, halos: dlhisto_core/dl/augmentation.py) at the working pixel size, which the package
  records.
- tissue_he: the tumour / stroma tiles of the tissue-map test data (scripts/fetch_test_slides.py:
  the top 640 px of the nest and stroma crops, 14 tumour and 65 stroma tiles) train, recorded at
  histolytics' estimated pixel size; the held-out slide made of the next 640 px of both (82
  classed tiles) scores it.

Usage: .venv/bin/python scripts/build_pretrained.py [NAME ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_test_slides  # noqa: E402
import pretrained_data  # noqa: E402

from dlhisto_core import ClassifyOptions, DataOptions, PredictOptions, TrainOptions, classify, evaluate, predict, train
from dlhisto_core.models.shipped import SHIPPED, compact, expand  # noqa: E402

AUTHOR = "dlhisto"


def nuclei_fluorescence(work: Path) -> tuple:
    """About 25 min on 2 cores (42.6 CPU-min on 2026-12-07)."""
    return _nuclei(pretrained_data.fluorescence_nuclei(), DataOptions(patches_per_image=64), epochs=12)


def nuclei_he(work: Path) -> tuple:
    """About 20 min on 2 cores (36.5 CPU-min on 2026-12-07)."""
    return _nuclei(pretrained_data.he_nuclei(), DataOptions(patches_per_image=160), epochs=14)


def _nuclei(pairs: pretrained_data.Pairs, data: DataOptions, epochs: int) -> tuple:
    training, tuning = (pretrained_data.flat(pairs[use]) for use in ("train", "tune"))
    trained = train([i for i, _ in training], [l for _, l in training],
                    validation=([i for i, _ in tuning], [l for _, l in tuning]), data=data,
                    options=TrainOptions(epochs=epochs, seed=0, strong_augment=True), log=print)
    return trained, pairs["held_out"], "instance"


def nuclei_types_he(work: Path) -> tuple:
    """About 20 min on 2 cores. The H&E nuclei pairs' type maps (pretrained_data.types_of): a
    semantic network whose classes are background and the three types; with nuclei_he's objects,
    each nucleus takes the type most of its pixels have (scored by typed_held_out_evaluation)."""
    pairs = pretrained_data.he_nuclei()
    training, tuning = (pretrained_data.flat(pairs[use]) for use in ("train", "tune"))
    trained = train([i for i, _ in training], [pretrained_data.types_of(labels) for _, labels in training],
                    class_names=["background", *pretrained_data.TYPES],
                    validation=([i for i, _ in tuning], [pretrained_data.types_of(labels) for _, labels in tuning]),
                    data=DataOptions(task="semantic", patches_per_image=160),
                    options=TrainOptions(epochs=14, seed=0, strong_augment=True), log=print)
    return trained, pairs["held_out"], "typed"


def tissue_he(work: Path) -> tuple:
    """About 3 min on 2 cores (4.1 CPU-min on 2026-12-07). The training crops are recorded at
    histolytics' estimated pixel size (pretrained_data.HISTOLYTICS_PIXEL_SIZE), which the
    package then records: classify reads other slides at it."""
    from PIL import Image

    from dlhisto_core.io.writers import write_image

    fetch_test_slides.write_tissue_map_data(fetch_test_slides.fetch_histolytics())
    images = []
    for png in fetch_test_slides.TISSUE_TRAIN.values():
        recorded = work / png.with_suffix(".ome.tif").name
        write_image(recorded, np.asarray(Image.open(png).convert("RGB")), (pretrained_data.HISTOLYTICS_PIXEL_SIZE,) * 2)
        images.append((recorded, png.name))  # the name the table of tiles gives it
    trained = train(images, tile_classes=fetch_test_slides.TISSUE_TILES,
                    data=DataOptions(task="classification", patches_per_image=8),
                    options=TrainOptions(epochs=12, seed=0), log=print)
    return trained, {"histolytics": [(fetch_test_slides.TISSUE_SLIDE, fetch_test_slides.TISSUE_TRUTH)]}, \
        "classification"


RECIPES = {"nuclei_fluorescence": nuclei_fluorescence, "nuclei_he": nuclei_he, "nuclei_types_he": nuclei_types_he,
           "tissue_he": tissue_he}
TITLES = {"nuclei_fluorescence": "dlhisto nuclei (fluorescence)", "nuclei_he": "dlhisto nuclei (HE)",
          "nuclei_types_he": "dlhisto nuclei types (HE)", "tissue_he": "dlhisto tumour-stroma tiles (HE)"}


def held_out_evaluation(package: Path, held_out: dict[str, list[tuple[Path, Path]]], mode: str,
                        work: Path) -> tuple[Path, dict[str, str]]:
    """The package scored on the held-out (image, truth) pairs of each source: the table of
    ``evaluate`` over all of them, and each source's pooled scores in words."""
    table = work / "held_out_evaluation.tsv"
    pairs = [(source, image, truth) for source, items in held_out.items() for image, truth in items]
    if mode == "typed":
        return typed_held_out_evaluation(package, pairs, table, work)
    if mode == "classification":
        tiles = work / "held_out_tiles.tsv"
        classify(package, [image for _, image, _ in pairs], ClassifyOptions(tile_size=128), table=tiles)
        scores = evaluate([tiles], [pairs[0][2]], mode="classification")
        scores.write(table)
        print(scores.describe())
        return table, {}
    outputs = {}
    for source, image, _ in pairs:
        outputs[image] = work / f"predicted_{source}_{image.stem}.tif"
        predict(package, image, PredictOptions(), objects=outputs[image])

    def scored(chosen):
        return evaluate([(outputs[image], f"held out: {source}: {image.name}") for source, image, _ in chosen],
                        [truth for _, _, truth in chosen], thresholds=[0.5, 0.75])

    scores = scored(pairs)
    scores.write(table)
    by_source = {}
    for source in held_out:
        pooled = scored([pair for pair in pairs if pair[0] == source]).rows[-2]  # IoU 0.5, pooled
        by_source[source] = (f"{len(held_out[source])} image(s), {pooled['tp'] + pooled['fn']} nuclei: F1 "
                             f"{pooled['f1']:.3f} at IoU 0.5 (precision {pooled['precision']:.3f}, recall "
                             f"{pooled['recall']:.3f}), panoptic quality {pooled['panoptic_quality']:.3f}")
        print(f"held out, {source}: {by_source[source]}")
    print(scores.describe())
    return table, by_source


def typed_held_out_evaluation(package: Path, pairs: list[tuple], table: Path, work: Path
                              ) -> tuple[Path, dict[str, str]]:
    """A types model scored on held-out (image, labels) pairs as users run it: nuclei_he's
    objects, each typed by the vote of the types model's class map, against the true nuclei and
    their type maps (per-class F1 and PQ at IoU 0.5, mPQ: evaluate's typed mode)."""
    from dlhisto_core import pretrained_model

    nuclei = pretrained_model("nuclei_he", work / "nuclei_he.zip")
    predictions, truths, predicted_types, true_types = [], [], [], []
    for source, image, labels in pairs:
        objects, types = work / f"objects_{source}.tif", work / f"types_{source}.tif"
        predict(nuclei, image, PredictOptions(), objects=objects)
        predict(package, image, PredictOptions(), classes=types)
        predictions.append((objects, f"held out: {source}: {image.name}"))
        truths.append(labels)
        predicted_types.append(types)
        true_types.append(pretrained_data.types_of(labels))

    def scored(chosen):
        return evaluate([predictions[k] for k in chosen], [truths[k] for k in chosen], mode="typed",
                        class_names=list(pretrained_data.TYPES), truth_classes=[true_types[k] for k in chosen],
                        prediction_classes=[predicted_types[k] for k in chosen])

    scores = scored(range(len(pairs)))
    scores.write(table)
    by_source = {}
    for k, (source, _, _) in enumerate(pairs):
        rows = {r["class"]: r for r in scored([k]).rows if r["image"] == "all"}
        by_source[source] = (f"mPQ {rows['mean']['panoptic_quality']:.3f}, per-class F1 "
                             + ", ".join(f"{t} {rows[t]['f1']:.3f}" for t in pretrained_data.TYPES)
                             + f", types of matched nuclei {rows['all']['type_accuracy'] or 0:.3f} right")
        print(f"held out, {source}: {by_source[source]}")
    print(scores.describe())
    return table, by_source


def build(name: str, work: Path) -> None:
    start = time.process_time()
    trained, held_out, mode = RECIPES[name](work)
    minutes = (time.process_time() - start) / 60
    package = work / f"{name}.zip"
    trained.save(package, name=TITLES[name], author=AUTHOR)
    target = SHIPPED[name].path
    target.parent.mkdir(exist_ok=True)
    record = {"sources": SHIPPED[name].data, "cpu_minutes": round(minutes, 1)}
    compact(package, target, training=record)
    expand(target, work / f"{name}_half.zip")  # what users get: the weights in half precision
    table, by_source = held_out_evaluation(work / f"{name}_half.zip", held_out, mode, work)
    record.update({f"held-out {source}": scores for source, scores in by_source.items()})
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
