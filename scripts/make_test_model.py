"""Train the small models that the predict/transfer/classify tests and tool tests use.

The model packages (50 and 18 MB) are not kept in git: they are made here, deterministically
(fixed seed, CPU), from bundled annotated images, and made again when the training code changes.
Outputs (git-ignored):

- test-data/nuclei_unet.zip: instance U-Net (mobilenet_v2) trained on nuclei.tif;
- test-data/nuclei_unet_encoder.safetensors: its encoder alone, the kind of bare pretrained
  weights transfer learning accepts;
- test-data/stain_classifier.zip: tile classifier H&E vs IHC trained on the 8 tile_*.png images
  (tile_classes.tsv);
- test-data/nuclei_denoiser.zip: restoration U-Net (regression) trained on the noisy quadrants
  1-3 of nuclei.tif (nuclei_q1..3_noisy.tif) with the clean ones as targets; quadrant 4 is
  held out.

About 4 minutes on 2 cores. A copy of the models is kept in $DLHISTO_CACHE/test-models (default
~/.cache/dlhisto), under their fingerprint and the lock file's, like the test command's venvs, so
that a new checkout on the same machine (CI) does not train them again.
"""

import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "test-data" / "nuclei_unet.zip"
ENCODER = ROOT / "test-data" / "nuclei_unet_encoder.safetensors"
ARGS = ["train", "--image", str(ROOT / "test-data" / "nuclei.tif"),
        "--labels", str(ROOT / "test-data" / "nuclei_groundtruth.tif"),
        "--image-name", "nuclei.tif", "--labels-name", "nuclei_groundtruth.tif",
        "--encoder", "mobilenet_v2", "--epochs", "12", "--patches-per-image", "64", "--patch-size", "128",
        "--seed", "0", "--device", "cpu", "--model-name", "dlhisto test nuclei U-Net", "--author", "dlhisto tests"]
TILES = sorted((ROOT / "test-data").glob("tile_*.png"))
CLASSIFIER = ROOT / "test-data" / "stain_classifier.zip"
CLASSIFIER_ARGS = ["train", "--task", "classification", *[a for t in TILES for a in ("--image", str(t))],
                   "--tile-classes", str(ROOT / "test-data" / "tile_classes.tsv"), "--encoder", "mobilenet_v2",
                   "--patch-size", "64", "--patches-per-image", "32", "--epochs", "15", "--seed", "0",
                   "--device", "cpu", "--model-name", "dlhisto test stain classifier", "--author", "dlhisto tests"]
DENOISER = ROOT / "test-data" / "nuclei_denoiser.zip"
DENOISER_ARGS = ["train", "--task", "regression",
                 *[a for q in (1, 2, 3) for a in ("--image", str(ROOT / "test-data" / f"nuclei_q{q}_noisy.tif"),
                                                  "--target", str(ROOT / "test-data" / f"nuclei_q{q}.tif"))],
                 "--encoder", "mobilenet_v2", "--patch-size", "128", "--patches-per-image", "32", "--epochs", "10",
                 "--learning-rate", "3e-3", "--loss", "l1", "--seed", "0", "--device", "cpu", "--model-name", "dlhisto test nuclei denoiser",
                 "--author", "dlhisto tests"]
SOURCES = ["dl_data.py", "dl_models.py", "dl_train.py", "model_package.py"]


def fingerprint() -> str:
    digest = hashlib.sha256(" ".join(ARGS + CLASSIFIER_ARGS + DENOISER_ARGS).replace(str(ROOT), "").encode())
    for name in SOURCES:
        digest.update((ROOT / "dlhisto_core" / name).read_bytes())
    return digest.hexdigest()


def cache_folder() -> Path:
    """Where the models of this fingerprint and these locked versions are kept between checkouts."""
    lock = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    cache = Path(os.environ.get("DLHISTO_CACHE") or Path.home() / ".cache" / "dlhisto")
    return cache / "test-models" / f"{fingerprint()[:16]}-{lock[:16]}"


def make_test_model() -> Path:
    stamp = MODEL.with_suffix(".stamp")
    outputs = (MODEL, ENCODER, CLASSIFIER, DENOISER)
    if all(p.is_file() for p in (*outputs, stamp)) and stamp.read_text() == fingerprint():
        return MODEL
    cached = cache_folder()
    if all((cached / p.name).is_file() for p in outputs):
        for path in outputs:
            shutil.copyfile(cached / path.name, path)
        stamp.write_text(fingerprint())
        return MODEL
    from dlhisto_core.cli import main
    for args, model in ((ARGS, MODEL), (CLASSIFIER_ARGS, CLASSIFIER), (DENOISER_ARGS, DENOISER)):
        if main([*args, "--model", str(model)]) != 0:
            sys.exit(f"could not train the test model {model.name}")
    from safetensors.torch import save_file
    from dlhisto_core.model_package import load_package
    model = load_package(MODEL)[0]
    save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, ENCODER)
    stamp.write_text(fingerprint())
    partial = cached.with_name(cached.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in outputs:
        shutil.copyfile(path, partial / path.name)
    shutil.rmtree(cached, ignore_errors=True)
    partial.rename(cached)
    return MODEL


if __name__ == "__main__":
    print(make_test_model())
