"""Train the small nuclei U-Net that the predict/transfer tests and tool tests use.

The model package (about 50 MB) is not kept in git: it is made here, deterministically (fixed
seed, CPU), from the bundled annotated image, and made again when the training code changes.
Outputs (git-ignored): test-data/nuclei_unet.zip, and its encoder alone as a safetensors file,
test-data/nuclei_unet_encoder.safetensors, the kind of bare pretrained weights transfer learning
accepts. About 45 s on 2 cores.
"""

import hashlib
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
SOURCES = ["dl_data.py", "dl_models.py", "dl_train.py", "model_package.py"]


def fingerprint() -> str:
    digest = hashlib.sha256(" ".join(ARGS[1:]).replace(str(ROOT), "").encode())
    for name in SOURCES:
        digest.update((ROOT / "dlhisto_core" / name).read_bytes())
    return digest.hexdigest()


def make_test_model() -> Path:
    stamp = MODEL.with_suffix(".stamp")
    if MODEL.is_file() and ENCODER.is_file() and stamp.is_file() and stamp.read_text() == fingerprint():
        return MODEL
    from dlhisto_core.cli import main
    if main([*ARGS, "--model", str(MODEL)]) != 0:
        sys.exit("could not train the test model")
    from safetensors.torch import save_file
    from dlhisto_core.model_package import load_package
    model = load_package(MODEL)[0]
    save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, ENCODER)
    stamp.write_text(fingerprint())
    return MODEL


if __name__ == "__main__":
    print(make_test_model())
