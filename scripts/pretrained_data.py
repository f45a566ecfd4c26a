"""The annotated images of the pretrained nuclei models, by source and use, at their working pixel size.

Every source is cut into three parts that never meet: ``train`` (the network learns from it),
``tune`` (best epoch, object thresholds) and ``held_out`` (scored once, after the build; the
figures of the model cards, the README and tests/test_shipped_models.py). Images are written as
OME-TIFF with the working pixel size, so that a package trained on them records it and
``predict`` resamples other images to it.

H&E (working size HE_PIXEL_SIZE, 0.5 µm):

- ``nest``: histolytics' ovarian carcinoma nest crop and its nuclei instance mask (1294 nuclei);
- ``stroma``: histolytics' stromal crop and its 423 classed nuclei polygons, drawn as instances;
  beside each labels file, the nuclei's types (``_types.tif``: 1 connective, 2 inflammatory, 3
  neoplastic, histolytics' type map and polygon classes: a model's types, not an expert's);
  both cut by rows as fetch_test_slides.HE_NUCLEI_ROWS: the top 576 train, the next 192 tune,
  the last 732 are held out. histolytics records no pixel size; HISTOLYTICS_PIXEL_SIZE is
  estimated from its lymphocytes (the "inflammatory" nuclei: median equivalent diameter 15.8
  px in the nest crop's polygons, 16.2 px in the stromal crop's) against the 7 µm of a small
  lymphocyte's nucleus: 0.44 µm per pixel. The masks are a segmentation model's output.

Fluorescence (working size FLUORESCENCE_PIXEL_SIZE, 0.5 µm, images used as they are):

- ``mnfinder``: mnfinder 1.2.3's ``training-data`` (every 5th of its 30 images tunes, the rest
  train) and ``validation-data`` (3 images, 235 nuclei: held out); its ``test-data`` is never read.
  Its RPE1 and U2OS nuclei (median 550 px) against a typical RPE1 nuclear area of about 140 µm²
  give about 0.5 µm per pixel;
- ``dsb2018``: stardist's DSB2018 image cut into its quadrants as test-data/nuclei_q1..4 (its
  nuclei, median 440 px, at the same scale within the augmentation's range): the first three
  train, the fourth (29 nuclei) is held out, the quadrant the demo and README score.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_test_slides  # noqa: E402
import reference_data  # noqa: E402

from dlhisto_core.io.writers import write_image, write_labels  # noqa: E402

HE_PIXEL_SIZE = 0.5
HISTOLYTICS_PIXEL_SIZE = fetch_test_slides.HISTOLYTICS_PIXEL_SIZE
FLUORESCENCE_PIXEL_SIZE = 0.5
STROMAL_POLYGONS = ("hgsc_stromal_cells.parquet", "18fdeb9ccb620d757fa47a8bb6c20915d5f40f981b5bb8ce2aa3a4d1b97fe0f9")
USES = ("train", "tune", "held_out")
TYPES = fetch_test_slides.CELL_TYPES
"""histolytics' nuclei types, 1..3 in its type maps."""

Pairs = dict[str, dict[str, list[tuple[Path, Path]]]]
"""use -> source -> (image, labels) TIFF pairs."""


def _folder(name: str) -> Path:
    folder = reference_data.CACHE / "reference-data" / "pretrained" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stromal_nuclei(histolytics: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """histolytics' stromal nuclei polygons as an instance mask of the stromal crop (a pixel
    belongs to the polygon that encloses its centre; where two overlap, the later one), and
    their types as a type map (1..3 as TYPES)."""
    import pyarrow.parquet as pq
    import shapely
    from skimage import draw

    name, sha256 = STROMAL_POLYGONS
    path = reference_data.from_wheel(fetch_test_slides.HISTOLYTICS, f"histolytics/data/{name}", sha256,
                                     fetch_test_slides.DATA / name)
    table = pq.read_table(path)
    labels, types = np.zeros((1500, 1500), np.uint16), np.zeros((1500, 1500), np.uint8)
    polygons = shapely.from_wkb(table.column("geometry").to_pylist())
    for index, (polygon, kind) in enumerate(zip(polygons, table.column("class_name").to_pylist()), 1):
        x, y = np.asarray(polygon.exterior.coords).T
        rows, cols = draw.polygon(y - 0.5, x - 0.5, labels.shape)
        labels[rows, cols] = index
        types[rows, cols] = TYPES.index(kind) + 1
    return labels, types


def _resampled(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear, anti-aliased) and labels (nearest) scaled by ``factor``."""
    from skimage import transform

    shape = tuple(round(n * factor) for n in image.shape[:2])
    image = transform.resize(image, shape + image.shape[2:], order=1, anti_aliasing=factor < 1, preserve_range=True)
    labels = transform.resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
    return np.round(image).astype(np.uint8), labels.astype(np.uint16)


def he_nuclei() -> Pairs:
    """The H&E nuclei pairs (module docstring), at HE_PIXEL_SIZE."""
    from PIL import Image

    histolytics = fetch_test_slides.fetch_histolytics()
    crops = {"nest": (np.asarray(Image.open(histolytics["hgsc_nest.jpg"]).convert("RGB")),
                      np.load(histolytics["hgsc_nest_inst_mask.npz"], allow_pickle=False)["nuc_raster"],
                      np.load(histolytics["hgsc_nest_type_mask.npz"], allow_pickle=False)["nuc_raster"]),
             "stroma": (np.asarray(Image.open(histolytics["hgsc_stromal_he.jpg"]).convert("RGB")),
                        *stromal_nuclei(histolytics))}
    folder, factor = _folder("he"), HISTOLYTICS_PIXEL_SIZE / HE_PIXEL_SIZE
    pairs: Pairs = {use: {} for use in USES}
    for source, (image, labels, types) in crops.items():
        for use, (start, stop, down, across) in fetch_test_slides.HE_NUCLEI_ROWS.items():
            pairs[use][source] = []
            height, width = (stop - start) // down, image.shape[1] // across
            for top in range(start, stop, height):
                for left in range(0, across * width, width):
                    part = (slice(top, top + height), slice(left, left + width))
                    small_image, small_labels = _resampled(image[part], labels[part], factor)
                    stem = folder / f"{source}_{use}_{top}_{left}"
                    write_image(stem.with_suffix(".tif"), small_image, (HE_PIXEL_SIZE,) * 2)
                    write_labels(stem.with_name(stem.name + "_labels.tif"), small_labels, (HE_PIXEL_SIZE,) * 2)
                    small_types = _resampled(image[part], types[part], factor)[1].astype(np.uint8)
                    write_labels(types_of(stem.with_name(stem.name + "_labels.tif")), small_types, (HE_PIXEL_SIZE,) * 2)
                    pairs[use][source].append((stem.with_suffix(".tif"), stem.with_name(stem.name + "_labels.tif")))
    return pairs


def types_of(labels: Path) -> Path:
    """The type map written beside the labels of an H&E pair (:func:`he_nuclei`)."""
    return labels.with_name(labels.name.replace("_labels.tif", "_types.tif"))


def fluorescence_nuclei() -> Pairs:
    """The fluorescence nuclei pairs (module docstring), recorded at FLUORESCENCE_PIXEL_SIZE."""
    folder = _folder("fluorescence")
    size = (FLUORESCENCE_PIXEL_SIZE,) * 2

    def recorded(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        written = []
        for image, labels in pairs:
            stem = folder / image.stem
            write_image(stem.with_suffix(".tif"), tifffile.imread(image), size)
            write_labels(stem.with_name(stem.name + "_labels.tif"), tifffile.imread(labels), size)
            written.append((stem.with_suffix(".tif"), stem.with_name(stem.name + "_labels.tif")))
        return written

    training, tuning = reference_data.mnfinder_training_and_tuning()
    image, labels = (tifffile.imread(path) for path in reference_data.stardist_nuclei())
    quadrants = []
    for k, (y, x) in enumerate(((0, 0), (0, 256), (256, 0), (256, 256)), 1):
        stem = folder / f"dsb2018_q{k}"
        write_image(stem.with_suffix(".tif"), image[y:y + 256, x:x + 256], size)
        write_labels(stem.with_name(stem.name + "_labels.tif"), labels[y:y + 256, x:x + 256], size)
        quadrants.append((stem.with_suffix(".tif"), stem.with_name(stem.name + "_labels.tif")))
    return {"train": {"mnfinder": recorded(training), "dsb2018": quadrants[:3]},
            "tune": {"mnfinder": recorded(tuning)},
            "held_out": {"mnfinder": recorded(reference_data.mnfinder_split("validation-data")),
                         "dsb2018": quadrants[3:]}}


def flat(pairs: dict[str, list[tuple[Path, Path]]]) -> list[tuple[Path, Path]]:
    """All the pairs of one use, source after source."""
    return [pair for source in pairs.values() for pair in source]


if __name__ == "__main__":
    for what in (he_nuclei, fluorescence_nuclei):
        for use, sources in what().items():
            print(what.__name__, use, {source: len(items) for source, items in sources.items()})
