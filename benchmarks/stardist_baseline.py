"""StarDist 2D trained and applied as its own documentation does, for benchmarks/accuracy.py.

Runs in the separate environment accuracy.py makes (stardist, csbdeep and TensorFlow are not
dlhisto dependencies). Reads a JSON job: training, tuning and held-out (image, labels) pairs, a
CPU-time budget in seconds and an output folder. Trains StarDist2D (32 rays, grid 2 x 2, the
example notebook's configuration) on random 128 px patches, epoch after epoch until the budget is
spent, tunes its probability and NMS thresholds on the tuning images (``optimize_thresholds``),
and writes the held-out predictions as label TIFFs. With a ``mosaic`` (a large image), also
times ``predict_instances_big`` on it, normalisation included, as a user predicts a slide.
Prints one JSON line: epochs, CPU seconds, thresholds and the mosaic's seconds and objects.

Usage (inside that environment): python stardist_baseline.py JOB.json
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from csbdeep.utils import normalize
from stardist import fill_label_holes
from stardist.models import Config2D, StarDist2D


def load(pairs):
    images = [normalize(tifffile.imread(image).astype(np.float32), 1, 99.8, axis=(0, 1)) for image, _ in pairs]
    labels = [fill_label_holes(tifffile.imread(labels)) for _, labels in pairs]
    return images, labels


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["output"])
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load(job["training"])
    x_tune, y_tune = load(job["tuning"])
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, train_patch_size=(128, 128), train_batch_size=8,
                      train_steps_per_epoch=50, train_tensorboard=False)
    np.random.seed(job.get("seed", 0))
    model = StarDist2D(config, name="stardist", basedir=str(out))
    start, epochs = time.process_time(), 0
    while time.process_time() - start < job["cpu_seconds"]:
        model.train(x_train, y_train, validation_data=(x_tune, y_tune), epochs=1, steps_per_epoch=50)
        epochs += 1
    trained = time.process_time() - start
    thresholds = model.optimize_thresholds(x_tune, y_tune)
    for image, _ in job["held_out"]:
        x = normalize(tifffile.imread(image).astype(np.float32), 1, 99.8, axis=(0, 1))
        labels, _ = model.predict_instances(x)
        tifffile.imwrite(out / f"stardist_{Path(image).stem}.tif", labels.astype(np.uint32))
    report = {"epochs": epochs, "cpu_seconds": trained, "thresholds": thresholds}
    if job.get("mosaic"):
        start = time.perf_counter()
        x = normalize(tifffile.imread(job["mosaic"]).astype(np.float32), 1, 99.8, axis=(0, 1))
        labels, _ = model.predict_instances_big(x, axes="YX", block_size=1024, min_overlap=64, context=64,
                                                show_progress=False)
        report["mosaic"] = {"seconds": time.perf_counter() - start, "objects": int(len(np.unique(labels)) - 1)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
