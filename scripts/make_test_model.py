"""Train the small models that the predict/transfer/classify tests and tool tests use.

The model packages (50 and 18 MB) are not kept in git: they are made here, deterministically
(fixed seed, CPU) through the Python API (`dlhisto_core.dl.training.train`), from bundled annotated
images, and made again when the training code changes.
Outputs (git-ignored):

- test-data/nuclei_unet.zip: instance U-Net (mobilenet_v2) trained on nuclei.tif;
- test-data/nuclei_unet_encoder.safetensors: its encoder alone, the kind of bare pretrained
  weights transfer learning accepts;
- test-data/stain_classifier.zip: tile classifier H&E vs IHC trained on the 8 tile_*.png images
  (tile_classes.tsv);
- test-data/nuclei_denoiser.zip: restoration U-Net (regression) trained on the noisy quadrants
  1-3 of nuclei.tif (nuclei_q1..3_noisy.tif) with the clean ones as targets; quadrant 4 is
  held out;
- test-data/nuclei_fluorescence.zip: not trained here but written from dlhisto's pretrained
  nuclei_fluorescence model, whose weights are in git: the model of the tests of what a model
  finds (tight counts), since the trained ones differ with the CPU that trained them.

About 4 minutes on 2 cores. A copy of the models is kept in $DLHISTO_CACHE/test-models (default
~/.cache/dlhisto), under their fingerprint and the lock file's, like the test command's venvs, so
that a new checkout on the same machine (CI) does not train them again.
"""

import hashlib
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test-data"
MODEL = DATA / "nuclei_unet.zip"
ENCODER = DATA / "nuclei_unet_encoder.safetensors"
CLASSIFIER = DATA / "stain_classifier.zip"
DENOISER = DATA / "nuclei_denoiser.zip"
FIXED_WEIGHTS = DATA / "nuclei_fluorescence.zip"
AUTHOR = "dlhisto tests"
RECIPES = {  # model: (name, keyword arguments of dlhisto_core.dl.training.train)
    MODEL: ("dlhisto test nuclei U-Net", dict(
        images=["nuclei.tif"], labels=["nuclei_groundtruth.tif"], encoder="mobilenet_v2",
        data=dict(patch_size=128, patches_per_image=64), options=dict(epochs=12))),
    CLASSIFIER: ("dlhisto test stain classifier", dict(
        images=sorted(p.name for p in DATA.glob("tile_*.png")), tile_classes="tile_classes.tsv",
        encoder="mobilenet_v2", data=dict(task="classification", patch_size=64, patches_per_image=32),
        options=dict(epochs=15, encoder_weights="none"))),
    DENOISER: ("dlhisto test nuclei denoiser", dict(
        images=[f"nuclei_q{q}_noisy.tif" for q in (1, 2, 3)], targets=[f"nuclei_q{q}.tif" for q in (1, 2, 3)],
        # 64 patches per image: with 32, ImageNet weights and this CPU's kernels it restored worse than the noisy input
        encoder="mobilenet_v2", data=dict(task="regression", patch_size=128, patches_per_image=64),
        options=dict(epochs=10, learning_rate=3e-3, loss="l1"))),
}
SOURCES = ["dl/patches.py", "dl/loop.py", "dl/prediction.py", "dl/instances.py", "dl/precision.py", "dl/training.py",
           "imaging/intensity.py", "models/networks.py", "models/cards.py", "models/packages.py", "models/spec.py"]


def fingerprint() -> str:
    digest = hashlib.sha256(repr(sorted((p.name, r) for p, r in RECIPES.items())).encode())
    for name in SOURCES:
        digest.update((ROOT / "dlhisto_core" / name).read_bytes())
    return digest.hexdigest()


def train(name: str, recipe: dict, path: Path) -> None:
    """Train one test model (seed 0, CPU) through the Python API, as ``dlhisto train`` would."""
    from dlhisto_core.dl import training

    def in_data(value):
        return [(str(DATA / v), v) for v in value] if isinstance(value, list) else (str(DATA / value), value)

    inputs = {key: in_data(recipe[key]) for key in ("images", "labels", "targets", "tile_classes") if key in recipe}
    trained = training.train(**inputs, encoder=recipe["encoder"], data=training.DataOptions(**recipe["data"]),
                             options=training.TrainOptions(seed=0, device="cpu", **recipe["options"]))
    trained.save(path, name=name, author=AUTHOR)


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
    for path, (name, recipe) in RECIPES.items():
        train(name, recipe, path)
    from safetensors.torch import save_file
    from dlhisto_core.models.packages import load_package
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


def make_fixed_weights_model() -> Path:
    """The shipped nuclei_fluorescence package, written again when its weights or the package
    code change."""
    from dlhisto_core import pretrained_model

    stamp = FIXED_WEIGHTS.with_suffix(".stamp")
    digest = hashlib.sha256()
    for path in (ROOT / "dlhisto_core" / "models" / "weights" / "nuclei_fluorescence.safetensors",
                 ROOT / "dlhisto_core" / "models" / "shipped.py", ROOT / "dlhisto_core" / "models" / "packages.py"):
        digest.update(path.read_bytes())
    if not (FIXED_WEIGHTS.is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest()):
        pretrained_model("nuclei_fluorescence", FIXED_WEIGHTS)
        stamp.write_text(digest.hexdigest())
    return FIXED_WEIGHTS


if __name__ == "__main__":
    print(make_test_model())
    print(make_fixed_weights_model())
