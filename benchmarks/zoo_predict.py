"""Foreign bioimage.io packages: Mpx/s of dlhisto's tiled prediction against bioimageio.core
predicting the same image.

The package is a U-Net of the size dlhisto trains (smp, mobilenet_v2 encoder, 1 channel in, 3
classes, untrained, seed 0) written by dlhisto and stripped of its ``config.dlhisto``, so that
dlhisto runs it as any package from elsewhere: its declared scale_range preprocessing and
softmax postprocessing, through its TorchScript weights, then (TorchScript entry removed) through
its ONNX weights with onnxruntime. The image is a ``--size`` x ``--size`` mosaic of the bundled
nuclei image.

- dlhisto: ``zoo.predict_zoo`` with windows of ``--tile-size`` px, writing the output
  (float32 OME-TIFF) and the class map; the package was loaded (and its test output checked)
  beforehand.
- bioimageio.core: ``create_prediction_pipeline(weight_format=...)`` then
  ``predict_sample_without_blocking`` on the whole image at once (its fastest way, with memory
  growing with the image), the pipeline created beforehand; nothing written.

Both in megapixels per second, the median of ``--repeats`` runs alternated; ratio
dlhisto / core below 1 means dlhisto is slower.

Usage: .venv/bin/python benchmarks/zoo_predict.py [--size 2048] [--tile-size 512] [--repeats 3]
       [--json FILE]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

from dlhisto_core.models import networks
from dlhisto_core.models.packages import PackageInfo, export_package
from dlhisto_core.models.spec import ModelSpec
from dlhisto_core.dl.foreign import predict_zoo
from dlhisto_core.models.zoo import load_zoo_model

NUCLEI = Path(__file__).resolve().parent.parent / "test-data" / "nuclei.tif"


def foreign_packages(work: Path) -> dict[str, Path]:
    """The U-Net as a foreign package once with TorchScript weights and once with ONNX weights."""
    spec = ModelSpec("instance", 3, 1, "unet", "mobilenet_v2")
    model = networks.build_model(spec, seed=0)
    info = PackageInfo(name="benchmark U-Net", description="untrained U-Net for timings",
                       class_names=["background", "interior", "boundary"], channel_names=["nuclei"],
                       authors=["dlhisto benchmarks"], training={})
    own = work / "own.zip"
    export_package(model, spec, info, tifffile.imread(NUCLEI)[None, :128, :128], own)
    packages = {}
    for weights, dropped in (("torchscript", ("onnx",)), ("onnx", ("torchscript",))):
        packages[weights] = _repacked(own, work / f"foreign_{weights}.zip", dropped)
    return packages


def _repacked(source: Path, target: Path, dropped_weights: tuple[str, ...]) -> Path:
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    rdf = yaml.safe_load(files["rdf.yaml"])
    rdf.pop("config")
    for weights in dropped_weights:
        rdf["weights"].pop(weights)
    files["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


def mosaic(size: int) -> np.ndarray:
    nuclei = tifffile.imread(NUCLEI)
    reps = (-(-size // nuclei.shape[0]), -(-size // nuclei.shape[1]))
    return np.tile(nuclei, reps)[:size, :size]


def measure(package: Path, weights: str, image_path: Path, image: np.ndarray, args, work: Path) -> dict:
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    description = load_model_description(package, perform_io_checks=False, format_version="latest")
    sample = create_sample_for_model(description, inputs={description.inputs[0].id: image[None, None]},
                                     sample_id="image")
    ours, core = [], []
    with load_zoo_model(package) as model, create_prediction_pipeline(description, weight_format=weights) as pipeline:
        assert model.weights_format == weights
        pipeline.predict_sample_without_blocking(sample)  # warm-up, both
        predict_zoo(model, image_path, work / "out.tif", work / "classes.tif", tile_size=args.tile_size)
        for _ in range(args.repeats):
            start = time.perf_counter()
            predict_zoo(model, image_path, work / "out.tif", work / "classes.tif", tile_size=args.tile_size)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline.predict_sample_without_blocking(sample)
            core.append(time.perf_counter() - start)
    return {"dlhisto_s": statistics.median(ours), "core_s": statistics.median(core)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    megapixels = args.size ** 2 / 1e6
    figures = {"megapixels": megapixels}
    with tempfile.TemporaryDirectory(prefix="dlhisto-bench-zoo-") as tmp:
        work = Path(tmp)
        image = mosaic(args.size)
        tifffile.imwrite(work / "image.tif", image)
        packages = foreign_packages(work)
        print(f"foreign U-Net package (mobilenet_v2, 3 classes) on a {args.size} x {args.size} image "
              f"({megapixels:.1f} Mpx); dlhisto windows of {args.tile_size} px; median of {args.repeats}")
        print(f"{'weights':<12} {'dlhisto s':>10} {'core s':>10} {'dlhisto Mpx/s':>14} {'core Mpx/s':>11} {'ratio':>6}")
        for weights, package in packages.items():
            t = measure(package, weights, work / "image.tif", image.astype(np.float32), args, work)
            figures[weights] = t
            print(f"{weights:<12} {t['dlhisto_s']:>10.2f} {t['core_s']:>10.2f} {megapixels / t['dlhisto_s']:>14.3f} "
                  f"{megapixels / t['core_s']:>11.3f} {t['core_s'] / t['dlhisto_s']:>6.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
