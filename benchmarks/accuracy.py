"""Nuclei instance segmentation, side by side on images none of the methods trained or tuned on.

Data (scripts/reference_data.py, fetched by package name): the fluorescence nuclei of mnfinder
1.2.3. Its ``validation-data`` folder (3 images, 235 nuclei: RPE1, U2OS, a mixed set) is the
held-out split, scored only; its ``training-data`` folder (30 images, 2387 nuclei) trains, one
image in ``--tuning-every`` of it kept for validation (early stopping, thresholds). mnfinder's
``test-data`` folder is never read.

Methods (one row each, with the CPU time it took to train):

- classic: ``segment_classic`` with its defaults (smooth, k-means threshold, watershed); no training;
- pixel_classifier: the ilastik way, a random forest (default features, 100 trees) on sparse
  annotations of the training images (PIXELS_PER_CLASS pixels of nucleus and of background per
  image, drawn at random at least 2 px inside a nucleus or 3 px away from any), then the nucleus
  class's objects split by watershed, as the nuclei_pixel_classifier workflow does;
- unet_defaults: ``train`` as a user who changes nothing runs it (default options: a
  mobilenet_v2 encoder from ImageNet weights, 10 epochs), on the training images, validated
  (instance F1 each epoch, then the object thresholds) on the tuning images, then ``predict``
  with defaults, and with flips (test-time augmentation: a second row, same training);
- unet_from_scratch: the same with the encoder started from random weights;
- pretrained: dlhisto's shipped ``nuclei_fluorescence`` model (scripts/build_pretrained.py:
  trained on the same training images and three quadrants of stardist's DSB2018 image, with
  strong augmentation, tuned on the same tuning images), applied with defaults; its training
  time is the build's;
- stardist: StarDist 2D (stardist 0.9.2, TensorFlow CPU) trained on the same images for the CPU
  time the U-Net with defaults took in the same run (or ``--stardist-cpu-minutes``), thresholds
  tuned on the tuning images; in an environment of its own made from
  ``benchmarks/requirements-stardist.lock`` ($DLHISTO_CACHE/stardist-0.9.2), by
  ``benchmarks/stardist_baseline.py``.

Speed, with StarDist: both predict the same MOSAIC_SIDE x MOSAIC_SIDE mosaic of the held-out
images (wall time on the same cores, reading and normalisation included): StarDist's
``predict_instances_big`` (1024 px blocks) with the model it trained, dlhisto's ``predict`` with
its shipped ``nuclei_fluorescence`` model and defaults; Mpx/s and objects per second.

Scores (``evaluate_instances``, pooled over the held-out images): F1 at IoU 0.5, AP at IoU 0.5
(TP / (TP + FP + FN), StarDist's ``accuracy``), its mean over IoU 0.5:0.95, and panoptic quality
at 0.5.

Cell types (``--cell-types``, instead of the methods): histolytics' H&E nuclei and their types
(connective, inflammatory, neoplastic: the labels of histolytics' own segmentation model, not an
expert's; scripts/pretrained_data.py, at 0.5 µm), their held-out rows (one nest and one stroma
image) scored with ``evaluate``'s typed mode (per-class detection F1 and PQ at IoU 0.5, mPQ, the
share of matched nuclei given their true type):

- object classifier on the true nuclei: ``object_classifier`` trained on the training rows' typed
  nuclei (100 trees), applied to the held-out true nuclei (typing alone is scored);
- object classifier on nuclei_he's nuclei: the same classifier on the nuclei the shipped
  ``nuclei_he`` model finds;
- typed network: nuclei_he's nuclei, each typed by the vote of its pixels in the class map of the
  shipped ``nuclei_types_he`` model;
- true types on nuclei_he's nuclei: each predicted nucleus typed by the true type map (the best
  any typing can do with these nuclei).

With ``--work DIR``, each row's label images and training time are kept there
(``DIR/rows/<row>.json``) and a later run with the same folder prints them again instead of
re-training, so rows measured in separate runs print as one table (``--fresh`` re-measures).

Usage: .venv/bin/python benchmarks/accuracy.py [--methods classic unet_defaults ... stardist] [--tuning-every 5]
       [--work DIR [--fresh]] [--stardist-cpu-minutes M]
       .venv/bin/python benchmarks/accuracy.py --cell-types
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reference_data  # noqa: E402

from scipy import ndimage  # noqa: E402

from dlhisto_core import ClassicOptions, PredictOptions, TrainOptions, evaluate_instances, load_package, predict, pretrained_model, segment_classic, train
from dlhisto_core.ml import pixel_classifier
from dlhisto_core.imaging.features import FeatureSettings  # noqa: E402

THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))
PIXELS_PER_CLASS = 1500
MOSAIC_SIDE = 4096


def splits(tuning_every: int) -> tuple[list, list, list]:
    """(training, tuning, held-out) lists of (image, labels) paths."""
    return (*reference_data.mnfinder_training_and_tuning(tuning_every),
            reference_data.mnfinder_split("validation-data"))


def classic(training, tuning, held_out, work: Path) -> list[tuple[str, list[Path], float]]:
    outputs = []
    for image, _ in held_out:
        labels = segment_classic(tifffile.imread(image).astype(np.float32), ClassicOptions()).labels
        outputs.append(work / f"classic_{image.stem}.tif")
        tifffile.imwrite(outputs[-1], labels.astype(np.uint32))
    return [("classic", outputs, 0.0)]


def pixels(training, tuning, held_out, work: Path) -> list[tuple[str, list[Path], float]]:
    rng = np.random.default_rng(0)
    start = time.process_time()
    pairs = []
    for image, labels in training:
        nuclei = tifffile.imread(labels) > 0
        annotation = np.zeros(nuclei.shape, np.uint8)
        for value, where in ((1, ndimage.binary_erosion(nuclei, iterations=2)),
                             (2, ~ndimage.binary_dilation(nuclei, iterations=3))):
            ys, xs = np.nonzero(where)
            chosen = rng.choice(len(ys), min(PIXELS_PER_CLASS, len(ys)), replace=False)
            annotation[ys[chosen], xs[chosen]] = value
        pairs.append((image, work / f"annotation_{image.stem}.tif"))
        tifffile.imwrite(pairs[-1][1], annotation)
    forest = pixel_classifier.train(pairs, FeatureSettings(), ["nucleus", "background"])
    seconds = time.process_time() - start
    outputs = []
    for image, _ in held_out:
        stem = work / f"pixel_classifier_{image.stem}"
        pixel_classifier.classify_pixels(forest, image, f"{stem}_p.tif", f"{stem}_classes.tif")
        pixel_classifier.objects_of_class(forest, f"{stem}_classes.tif", f"{stem}_p.tif", 1, f"{stem}.tif",
                                          f"{stem}_objects.tsv", f"{stem}_summary.tsv",
                                          ClassicOptions.min_area, ClassicOptions.min_distance, image.stem)
        outputs.append(Path(f"{stem}.tif"))
    return [("pixel_classifier", outputs, seconds)]


def pretrained(training, tuning, held_out, work: Path) -> list[tuple[str, list[Path], float]]:
    package = pretrained_model("nuclei_fluorescence", work / "nuclei_fluorescence.zip")
    minutes = load_package(package)[2]["config"]["dlhisto"]["training"]["cpu_minutes"]  # the build's
    return predicted_rows("pretrained", package, held_out, work, minutes * 60)


def predicted_rows(name: str, package: Path, held_out, work: Path,
                   seconds: float) -> list[tuple[str, list[Path], float]]:
    """Two rows of a package: ``predict`` with defaults, and with flips (test-time augmentation)."""
    rows = []
    for row, options in ((name, PredictOptions()), (f"{name} + flips", PredictOptions(flips=True))):
        outputs = [work / f"{row.replace(' + ', '_')}_{image.stem}.tif" for image, _ in held_out]
        for (image, _), output in zip(held_out, outputs):
            predict(package, image, options, objects=output)
        rows.append((row, outputs, seconds))
    return rows


def unet(name: str, **settings):
    """A U-Net method: ``train`` with these keyword arguments (defaults otherwise), then ``predict``
    with defaults (one row) and with flips (test-time augmentation, a second row)."""
    def method(training, tuning, held_out, work: Path) -> list[tuple[str, list[Path], float]]:
        start = time.process_time()
        trained = train([image for image, _ in training], [labels for _, labels in training],
                        validation=([image for image, _ in tuning], [labels for _, labels in tuning]), log=None,
                        **settings)
        seconds = time.process_time() - start
        package = work / f"{name}.zip"
        trained.save(package)
        return predicted_rows(name, package, held_out, work, seconds)
    return method


HERE = Path(__file__).resolve().parent
STARDIST_ENV = reference_data.CACHE / "stardist-0.9.2"


def stardist_environment() -> Path:
    """The Python of StarDist's environment, made once from requirements-stardist.lock."""
    python = STARDIST_ENV / "bin" / "python"
    lock = HERE / "requirements-stardist.lock"
    stamp = STARDIST_ENV / ".installed"
    if not python.exists() or not stamp.is_file() or stamp.read_text() != lock.read_text():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(STARDIST_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(lock)], check=True)
        stamp.write_text(lock.read_text())
    return python


def mosaic(held_out, work: Path) -> Path:
    """The held-out images side by side, repeated, cut to MOSAIC_SIDE x MOSAIC_SIDE (uint16)."""
    path = work / "mosaic.tif"
    if not path.is_file():
        images = [tifffile.imread(image).astype(np.uint16) for image, _ in held_out]
        height = min(image.shape[0] for image in images)
        row = np.concatenate([image[:height] for image in images], axis=1)
        tifffile.imwrite(path, np.tile(row, (-(-MOSAIC_SIDE // height), -(-MOSAIC_SIDE // row.shape[1])))
                         [:MOSAIC_SIDE, :MOSAIC_SIDE])
    return path


def dlhisto_throughput(image: Path, work: Path) -> dict:
    """Seconds and objects of ``predict`` with the shipped fluorescence model on ``image``."""
    package = pretrained_model("nuclei_fluorescence", work / "nuclei_fluorescence.zip")
    start = time.perf_counter()
    summary = predict(package, image, objects=work / "mosaic_dlhisto.tif")
    return {"seconds": time.perf_counter() - start, "objects": int(summary.objects)}


def print_throughput(rows: dict) -> None:
    pixels = MOSAIC_SIDE**2 / 1e6
    print(f"\n{MOSAIC_SIDE} x {MOSAIC_SIDE} mosaic of the held-out images, {torch.get_num_threads()} threads:")
    print("| method | seconds | Mpx/s | objects | objects/s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds']:.1f} | {pixels / row['seconds']:.2f} | {row['objects']} | "
              f"{row['objects'] / row['seconds']:.0f} |")
    ratio = rows["stardist predict_instances_big"]["seconds"] / rows["dlhisto predict (pretrained)"]["seconds"]
    print(f"# dlhisto predict: {ratio:.2f}x StarDist's speed on the same image")


def stardist(training, tuning, held_out, work: Path, cpu_seconds: float) -> tuple[list[Path], float]:
    job = {"training": [[str(a), str(b)] for a, b in training], "tuning": [[str(a), str(b)] for a, b in tuning],
           "held_out": [[str(a), str(b)] for a, b in held_out], "cpu_seconds": cpu_seconds,
           "output": str(work / "stardist"), "mosaic": str(mosaic(held_out, work))}
    (work / "stardist_job.json").write_text(json.dumps(job))
    result = subprocess.run([str(stardist_environment()), str(HERE / "stardist_baseline.py"),
                             str(work / "stardist_job.json")], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        sys.exit(f"StarDist failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"# stardist: {report['epochs']} epochs of 50 steps, thresholds {report['thresholds']}", flush=True)
    (work / "stardist_mosaic.json").write_text(json.dumps(report["mosaic"]))
    return [work / "stardist" / f"stardist_{image.stem}.tif" for image, _ in held_out], report["cpu_seconds"]


METHODS = {"classic": classic,
           "pixel_classifier": pixels,
           "pretrained": pretrained,
           "unet_defaults": unet("unet_defaults"),
           "unet_from_scratch": unet("unet_from_scratch", options=TrainOptions(encoder_weights="none"))}


def scores(held_out, outputs) -> dict:
    rows = evaluate_instances([(labels, output) for (_, labels), output in zip(held_out, outputs)], THRESHOLDS)
    pooled = {row["threshold"]: row for row in rows if row["image"] == "all"}
    at_half = pooled[0.5]
    return {"f1": at_half["f1"], "ap50": at_half["average_precision"],
            "ap50_95": float(np.mean([row["average_precision"] for row in pooled.values()])),
            "pq": at_half["panoptic_quality"], "objects": at_half["tp"] + at_half["fp"]}


def cell_types(work: Path) -> None:
    """The cell-type rows (module docstring), printed as a table."""
    import pretrained_data

    from dlhisto_core import evaluate, object_classifier
    from dlhisto_core.classic.object_classes import read_object_classes

    names = list(pretrained_data.TYPES)
    pairs = pretrained_data.he_nuclei()
    training, held_out = pretrained_data.flat(pairs["train"]), pretrained_data.flat(pairs["held_out"])
    typed = [(image, labels, read_object_classes(pretrained_data.types_of(labels), labels, class_names=names))
             for image, labels in training]
    start = time.process_time()
    classifier = object_classifier.train(typed)
    trained_in = time.process_time() - start
    nuclei, types_model = (pretrained_model(name, work / f"{name}.zip") for name in ("nuclei_he", "nuclei_types_he"))
    predicted = []
    for k, (image, _) in enumerate(held_out):
        objects, type_map = work / f"held_out_{k}_objects.tif", work / f"held_out_{k}_types.tif"
        predict(nuclei, image, PredictOptions(), objects=objects)
        predict(types_model, image, PredictOptions(), classes=type_map)
        predicted.append((objects, type_map))
    rows = {
        "object classifier, true nuclei": [(labels, object_classifier.classify_objects(classifier, image, labels))
                                           for image, labels in held_out],
        "object classifier, nuclei_he nuclei": [(objects, object_classifier.classify_objects(classifier, image, objects))
                                                for (image, _), (objects, _) in zip(held_out, predicted)],
        "typed network (nuclei_he + nuclei_types_he)": [(objects, object_classifier.type_objects(objects, type_map, names))
                                                        for objects, type_map in predicted],
        "true types, nuclei_he nuclei": [(objects, object_classifier.type_objects(
            objects, pretrained_data.types_of(labels), names)) for (_, labels), (objects, _) in zip(held_out, predicted)],
    }
    truth = [labels for _, labels in held_out]
    true_types = [pretrained_data.types_of(labels) for labels in truth]
    n_nuclei = sum(len(np.unique(tifffile.imread(labels))) - 1 for labels in truth)
    print(f"# cell types: {len(training)} training images ({sum(len(c.labels) for *_, c in typed)} typed nuclei), "
          f"{len(held_out)} held out ({n_nuclei} nuclei); labels: histolytics' segmentation model, not an expert; "
          f"object classifier trained in {trained_in:.0f} CPU-s")
    print("| method | " + " | ".join(f"F1 {n} | PQ {n}" for n in names) + " | mPQ | types right |")
    print("|---|" + "---|" * (2 * len(names) + 2))
    for method, results in rows.items():
        scored = evaluate([objects for objects, _ in results], truth, "typed", class_names=names,
                          truth_classes=true_types, prediction_classes=[r.as_object_classes() for _, r in results])
        pooled = {r["class"]: r for r in scored.rows if r["image"] == "all"}
        print(f"| {method} | " + " | ".join(f"{pooled[n]['f1']:.3f} | {pooled[n]['panoptic_quality']:.3f}"
                                           for n in names)
              + f" | {pooled['mean']['panoptic_quality']:.3f} | {pooled['all']['type_accuracy']:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "stardist"], choices=[*METHODS, "stardist"])
    parser.add_argument("--tuning-every", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep the models and label images in this folder")
    parser.add_argument("--fresh", action="store_true", help="re-measure rows already kept in --work")
    parser.add_argument("--stardist-cpu-minutes", type=float,
                        help="StarDist's training budget (default: what the U-Net with defaults took)")
    parser.add_argument("--cell-types", action="store_true", help="score cell types instead (module docstring)")
    args = parser.parse_args()
    if args.cell_types:
        with tempfile.TemporaryDirectory(prefix="dlhisto-cell-types-") as temporary:
            work = args.work or Path(temporary)
            work.mkdir(parents=True, exist_ok=True)
            cell_types(work)
        return
    training, tuning, held_out = splits(args.tuning_every)
    truth_count = sum(len(np.unique(tifffile.imread(labels))) - 1 for _, labels in held_out)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# training {len(training)} images, tuning {len(tuning)}, held-out {len(held_out)} ({truth_count} nuclei)")
    print("| method | F1@0.5 | AP@0.5 | AP@0.5:0.95 | PQ | objects | training CPU time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="dlhisto-accuracy-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        budget = args.stardist_cpu_minutes and args.stardist_cpu_minutes * 60
        for name in args.methods:
            rows = None if args.fresh else kept_rows(work, name)
            if rows is None and name == "stardist":
                if not budget:
                    sys.exit("StarDist's CPU budget is the U-Net's: list unet_defaults before stardist, or give "
                             "--stardist-cpu-minutes")
                rows = [("stardist", *stardist(training, tuning, held_out, work, budget))]
            elif rows is None:
                rows = METHODS[name](training, tuning, held_out, work)
            keep_rows(work, name, rows)
            budget = budget or (rows[0][2] if name == "unet_defaults" else None)
            for row, outputs, seconds in rows:
                s = scores(held_out, outputs)
                print(f"| {row} | {s['f1']:.3f} | {s['ap50']:.3f} | {s['ap50_95']:.3f} | {s['pq']:.3f} | "
                      f"{s['objects']} | {seconds / 60:.1f} min |", flush=True)
        if (work / "stardist_mosaic.json").is_file() and "stardist" in args.methods:
            print_throughput({"dlhisto predict (pretrained)": dlhisto_throughput(mosaic(held_out, work), work),
                              "stardist predict_instances_big": json.loads((work / "stardist_mosaic.json").read_text())})


def kept_rows(work: Path, method: str) -> list | None:
    """The rows of ``method`` a previous run kept in ``work`` (label images still there), or None."""
    kept = work / "rows" / f"{method}.json"
    if not kept.is_file():
        return None
    rows = [(row, [Path(p) for p in outputs], seconds) for row, outputs, seconds in json.loads(kept.read_text())]
    return rows if all(p.is_file() for _, outputs, _ in rows for p in outputs) else None


def keep_rows(work: Path, method: str, rows: list) -> None:
    (work / "rows").mkdir(exist_ok=True)
    (work / "rows" / f"{method}.json").write_text(
        json.dumps([(row, [str(p) for p in outputs], seconds) for row, outputs, seconds in rows]))


if __name__ == "__main__":
    main()
