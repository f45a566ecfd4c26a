"""Whole-slide prediction with a model package: the predict step, the outputs of segmentation
(probabilities, class map, objects) and regression models, written tile by tile in bounded memory.

Every model runs on one engine (:mod:`engine`): dlhisto's networks as :class:`engine.NetworkWindows`,
packages made elsewhere through :mod:`foreign`. Regression models (image restoration or
translation) give pixel values instead of class probabilities, scaled back to the target's
units: with the slide's own percentiles for targets normalised by their input, with the
package's fixed values for targets normalised over the training set (:mod:`patches`).

Instance models (background / interior / boundary) become label images as :mod:`instances`
describes, with the thresholds the package records, without ever holding the slide: seeds are
labelled per tile, labels that touch across tile borders are merged (connected components of
the border-touching pairs), small objects are dropped, and objects grow over the foreground in
a second pass that reads each tile with a halo of the growth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..base.errors import InputError
from ..imaging.stain import NormalizedReader
from ..io.images import smallest_label_dtype
from ..io.inputs import named
from ..io.outputs import outputs_together
from ..io.readers import TiledImageReader
from ..io.slides import downsample_to_slide, image_reader
from ..io.tables import write_row
from ..io.tiling import Tile, tile_grid
from ..io.writers import TileSink, write_pyramid, write_tiled_image
from ..models.spec import InstanceThresholds, ModelSpec
from ..models.zoo import is_foreign, load_zoo_model
from . import instances
from .engine import Engine, NetworkWindows, WindowCount
from .foreign import predict_zoo
from .options import PredictOptions


@dataclass
class PredictSummary:
    """What a prediction did: the figures of the summary table of ``dlhisto predict``."""

    windows: int = 0
    skipped: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_names: list[str] = field(default_factory=list)
    channel_means: np.ndarray | None = None
    """Regression: the mean of each channel of the predicted image."""
    objects: int | None = None
    pixel_size: tuple[float, float] | None = None
    shape: tuple[int, int] = (0, 0)
    device: str = "cpu, fp32"
    """Where and in which precision the network ran."""

    def row(self, image_name: str) -> dict:
        """The row of the summary table: size, windows, then the fraction of each class (and the
        object count) or, for regression, the mean of each channel."""
        row = {"image": image_name, "width": self.shape[1], "height": self.shape[0], "windows": self.windows}
        if self.channel_means is not None:
            return {**row, **{f"mean_channel_{k + 1}": mean for k, mean in enumerate(self.channel_means)}}
        row["skipped_windows"] = self.skipped
        total = max(1, int(self.class_pixels.sum()))
        row.update({f"{name}_fraction": count / total for name, count in zip(self.class_names, self.class_pixels)})
        return row if self.objects is None else {**row, "objects": self.objects}

    def describe(self) -> str:
        """One line for the log."""
        if self.channel_means is not None:
            return f"{self.windows} windows, image of {len(self.channel_means)} channel(s) predicted ({self.device})"
        return (f"{self.windows} windows, {self.skipped} skipped as background"
                + ("" if self.objects is None else f", {self.objects} objects") + f" ({self.device})")


def class_map(probabilities: np.ndarray) -> np.ndarray:
    """The (h, w) uint8 argmax of (h, w, K) probabilities (the first class of a tie), one class
    plane at a time: twice as fast as NumPy's argmax over the last axis."""
    classes = np.zeros(probabilities.shape[:2], np.uint8)
    best = probabilities[..., 0]
    for k in range(1, probabilities.shape[-1]):
        plane = probabilities[..., k]
        higher = plane > best
        classes[higher] = k
        best = np.maximum(best, plane)
    return classes


def predict(package, image, options: PredictOptions | None = None, *, probabilities=None, classes=None,
            objects=None, predicted_image=None, summary=None, geojson=None,
            geojson_options=None, stain_reference=None) -> PredictSummary:
    """Predict an image or a whole slide with a dlhisto model package, as ``dlhisto predict``
    (the Galaxy tool) does, and write the requested outputs together (all or none).

    Parameters
    ----------
    package : path or (path, name)
        A bioimage.io package made by ``train`` or ``transfer``.
    image : path, (path, name), reader or array
        The image (see :func:`slides.image_reader`).
    options : PredictOptions, optional
    probabilities, classes, objects : path, optional
        Segmentation models: per-class probabilities, the class map 0..K-1 and (instance models)
        the label image, as pyramidal OME-TIFFs.
    predicted_image : path, optional
        Regression models: the predicted image, in the target's units.
    summary : path, optional
        A one-row table: size, windows, class fractions and object count, or channel means.
    geojson : path, optional
        Instance models: the objects as QuPath GeoJSON detections, in the coordinates of the
        slide's full resolution (see :mod:`geojson`), written as ``geojson_options``
        (:class:`geojson.ExportOptions`) asks.
    stain_reference : stain.StainReference, optional
        Map the slide's stains onto this reference (e.g. one fitted on the training images)
        as it is read (:class:`stain.NormalizedReader`). By default, the reference the
        package's training images were mapped onto, if they were.

    Returns
    -------
    PredictSummary

    Examples
    --------
    >>> from dlhisto_core import predict
    >>> summary = predict("test-data/nuclei_unet.zip", "test-data/nuclei.tif",
    ...                   objects=getfixture("tmp_path") / "objects.tif")
    >>> summary.shape, summary.objects > 80
    ((512, 512), True)
    """
    from ..models import packages

    options = options or PredictOptions()
    path, model_name = named([package])[0]
    image_name = None
    if isinstance(image, tuple):
        image, image_name = image
    if is_foreign(path, model_name):
        return _predict_foreign(path, model_name, image, image_name, options, probabilities, classes, objects,
                                predicted_image, summary, geojson, stain_reference)
    model, spec, rdf = packages.load_package(path, model_name)
    stain_reference = stain_reference or packages.stain_reference(rdf, model_name)
    with contextlib.ExitStack() as stack:
        if stain_reference is not None:
            image = NormalizedReader(stack.enter_context(image_reader(image, name=image_name)), stain_reference)
        options = at_model_pixel_size(options, packages.pixel_size(rdf), image, image_name)
        if spec.task == "regression":
            if probabilities or classes or objects or geojson or not predicted_image:
                raise InputError(f"'{model_name}' predicts images (regression): ask for --predicted-image, "
                                 "not probabilities, classes or objects")
            with outputs_together(predicted_image, summary) as (predicted_path, summary_path):
                result = predict_image(model, spec, image, options, predicted_path,
                                       packages.target_normalization(rdf, spec, model_name), image_name)
                if summary_path:
                    write_row(summary_path, result.row(_image_name(image, image_name)))
            return result
        if predicted_image:
            raise InputError(f"'{model_name}' predicts classes ({spec.task} segmentation), not images; "
                             "ask for probabilities, classes or objects")
        if geojson and not objects:
            raise InputError("GeoJSON is written from the objects: ask for the objects too")
        with outputs_together(probabilities, classes, objects, summary, geojson) as (*paths, summary_path, geojson_path):
            result = predict_slide(model, spec, image, options, *paths, image_name,
                                   packages.instance_thresholds(rdf, model_name))
            result.class_names = rdf["outputs"][0]["axes"][1]["channel_names"]
            if geojson_path:
                from ..io.geojson import ExportOptions, labels_to_geojson

                export = dataclasses.replace(geojson_options or ExportOptions(),
                                             downsample=downsample_to_slide(image, image_name, options.pixel_size))
                labels_to_geojson(paths[2], geojson_path, export)
            if summary_path:
                write_row(summary_path, result.row(_image_name(image, image_name)))
        return result


def _predict_foreign(path, model_name: str, image, image_name: str | None, options: PredictOptions, probabilities,
                     classes, objects, predicted_image, summary, geojson, stain_reference):
    """:func:`predict` with a bioimage.io package made elsewhere (:mod:`models.zoo`): its output
    tensor goes to ``probabilities`` or ``predicted_image``, whichever is asked."""
    if objects or geojson:
        raise InputError(f"'{model_name}' is a bioimage.io model from elsewhere: dlhisto writes its output "
                         "(probabilities or image) and a class map, not objects")
    if probabilities and predicted_image:
        raise InputError(f"'{model_name}' has one output: ask for the probabilities or the predicted image")
    with contextlib.ExitStack() as stack:
        model = stack.enter_context(load_zoo_model(path, model_name))
        if stain_reference is not None:
            image = NormalizedReader(stack.enter_context(image_reader(image, name=image_name)), stain_reference)
        options = at_model_pixel_size(options, model.pixel_size, image, image_name)
        return predict_zoo(model, image, probabilities or predicted_image, classes, summary,
                           image_name=image_name, options=options)


def at_model_pixel_size(options, trained_at: float | None, image, name: str | None = None):
    """``options`` working at the pixel size the model was trained at, when none is asked for
    and both the model and the image record one."""
    if options.pixel_size is not None or trained_at is None:
        return options
    with image_reader(image, name=name) as reader:
        if reader.pixel_size is None:
            return options
    return dataclasses.replace(options, pixel_size=trained_at)


def _image_name(image, name: str | None) -> str:
    """The name of the image in the summary table: the given one, or the file's."""
    return name or (Path(image).name if isinstance(image, (str, Path)) else getattr(image, "name", None) or "image")


def predict_slide(model: torch.nn.Module, spec: ModelSpec, image_path, options: PredictOptions,
                  probabilities_path=None, classes_path=None, objects_path=None,
                  name: str | None = None,
                  thresholds: InstanceThresholds = InstanceThresholds()) -> PredictSummary:
    """Predict a slide and write the requested outputs as pyramidal OME-TIFFs:
    probabilities (float32, one channel per class), the class map (uint8, 0..K-1) and, for
    instance models, the objects (label image) made with ``thresholds``. ``image_path`` is a
    file, a reader (``readers.TiledImageReader``) or an array (see ``slides.image_reader``)."""
    if not (probabilities_path or classes_path or objects_path):
        raise InputError("ask for at least one output: probabilities, classes or objects")
    if objects_path and spec.task != "instance":
        raise InputError(f"objects come from instance models; this model does {spec.task} segmentation")
    engine = Engine(NetworkWindows(model, spec), options)
    summary = PredictSummary(class_pixels=np.zeros(spec.out_channels, np.int64), device=engine.describe())
    size = options.tile_size
    with image_reader(image_path, name=name, pixel_size=options.pixel_size) as reader, \
            tempfile.TemporaryDirectory(prefix="dlhisto-predict-") as work:  # honours TMPDIR (Galaxy: per job)
        work = Path(work)
        height, width = reader.shape[:2]
        summary.shape, summary.pixel_size = (height, width), reader.pixel_size
        with contextlib.ExitStack() as stack:
            sinks = {}
            if classes_path:
                sinks["classes"] = stack.enter_context(TileSink(work / "classes.tif", (height, width), np.uint8, size))
            if probabilities_path:
                sinks["probabilities"] = stack.enter_context(
                    TileSink(work / "probabilities.tif", (height, width, spec.out_channels), np.float32, size))
            objects = stack.enter_context(_ObjectLabeller(work, (height, width), size, thresholds)) \
                if objects_path else None
            for tile, probabilities in engine.tiles(reader, summary):
                classes = class_map(probabilities)
                summary.class_pixels += np.bincount(classes.ravel(), minlength=spec.out_channels)
                if "classes" in sinks:
                    sinks["classes"].put(classes)
                if probabilities_path:
                    sinks["probabilities"].put(probabilities)
                if objects:
                    objects.add(tile, probabilities)
        if probabilities_path:
            write_pyramid(probabilities_path, work / "probabilities.tif", size, reader.pixel_size)
        if classes_path:
            write_pyramid(classes_path, work / "classes.tif", size, reader.pixel_size, labels=True)
        if objects_path:
            summary.objects = objects.finish(work / "objects.tif", options.min_area)
            write_pyramid(objects_path, work / "objects.tif", size, reader.pixel_size, labels=True)
    return summary


def probabilities_in_memory(model: torch.nn.Module, spec: ModelSpec, image, options: PredictOptions | None = None,
                            name: str | None = None) -> np.ndarray:
    """The (H, W, K) class probabilities of a whole image, held in memory: for images, not
    slides (tuning the object thresholds on annotated images)."""
    engine = Engine(NetworkWindows(model, spec), options or PredictOptions())
    with image_reader(image, name=name) as reader:
        values = np.zeros((*reader.shape[:2], spec.out_channels), np.float32)
        for tile, probabilities in engine.tiles(reader, WindowCount()):
            values[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width] = probabilities
    return values


def predict_image(model: torch.nn.Module, spec: ModelSpec, image_path, options: PredictOptions, output_path,
                  target_normalization: dict, name: str | None = None) -> PredictSummary:
    """Predict the image of pixel values of a regression model (restoration, translation) for a
    slide (a file, a reader or an array) and write it as a pyramidal float32 OME-TIFF with the
    slide's pixel size."""
    engine = Engine(NetworkWindows(model, spec, target_normalization), options)
    summary = PredictSummary(device=engine.describe())
    sums = np.zeros(spec.out_channels)
    with image_reader(image_path, name=name, pixel_size=options.pixel_size) as reader, \
            tempfile.TemporaryDirectory(prefix="dlhisto-predict-") as work:  # honours TMPDIR (Galaxy: per job)
        height, width = reader.shape[:2]
        summary.shape, summary.pixel_size = (height, width), reader.pixel_size
        level0 = Path(work) / "predicted.tif"
        shape = (height, width) if spec.out_channels == 1 else (height, width, spec.out_channels)
        with TileSink(level0, shape, np.float32, options.tile_size) as sink:
            for _, values in engine.tiles(reader, summary):
                sums += values.sum(axis=(0, 1), dtype=np.float64)
                sink.put(values[..., 0] if spec.out_channels == 1 else values)
        write_pyramid(output_path, level0, options.tile_size, reader.pixel_size)
    summary.channel_means = sums / (height * width)
    return summary


class _ObjectLabeller:
    """Instance labels across tiles: provisional per-tile labels of the seeds, merged where they
    touch, and the foreground they grow over, both kept in ``work``."""

    def __init__(self, work: Path, shape: tuple[int, int], tile_size: int, thresholds: InstanceThresholds):
        self.shape, self.tile_size, self.thresholds = shape, tile_size, thresholds
        self._seeds_path, self._foreground_path = work / "seeds.tif", work / "foreground.tif"
        self._sink = TileSink(self._seeds_path, shape, np.uint32, tile_size)
        self._foreground = TileSink(self._foreground_path, shape, np.uint8, tile_size)
        self._count = 0
        self._areas = [np.zeros(1, np.int64)]
        self._pairs: list[np.ndarray] = []
        self._bottom: dict[int, np.ndarray] = {}  # last row of labels of the tile above, per column
        self._right: np.ndarray | None = None  # last column of the tile to the left

    def add(self, tile: Tile, probabilities: np.ndarray) -> None:
        """Label the seeds of a tile's (h, w, 3) probabilities and keep its foreground."""
        self._foreground.put(instances.foreground(probabilities, self.thresholds).astype(np.uint8))
        local, n = ndi.label(instances.seeds(probabilities, self.thresholds))
        self._areas.append(np.bincount(local.ravel(), minlength=n + 1)[1:])
        labels = np.where(local > 0, local + self._count, 0).astype(np.uint32)
        self._count += n
        column = tile.x // self.tile_size
        if tile.y > 0:
            self._touching(self._bottom[column], labels[0])
        if tile.x > 0:
            self._touching(self._right, labels[:, 0])
        self._bottom[column], self._right = labels[-1].copy(), labels[:, -1].copy()
        self._sink.put(labels)

    def _touching(self, before: np.ndarray, after: np.ndarray) -> None:
        both = (before > 0) & (after > 0)
        if both.any():
            self._pairs.append(np.unique(np.stack([before[both], after[both]], axis=1), axis=0))

    def __enter__(self) -> "_ObjectLabeller":
        return self

    def __exit__(self, *exc) -> None:
        self._sink.__exit__(*exc)
        self._foreground.__exit__(*exc)

    def finish(self, objects_path: Path, min_area: int) -> int:
        """Write the final label image (merged, filtered, grown over the foreground); return the
        count. Call after the labeller's ``with`` block."""
        n = self._count + 1
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        areas = np.bincount(component, weights=np.concatenate(self._areas), minlength=component.max() + 1)
        kept = areas >= max(min_area, 1)
        kept[component[0]] = False  # the background
        # number the kept objects in the order they first appear, tile by tile
        first_label = np.full(component.max() + 1, n, np.int64)
        np.minimum.at(first_label, component, np.arange(n))
        order = np.argsort(first_label[kept], kind="stable")
        final = np.zeros(component.max() + 1, np.int64)
        final[np.flatnonzero(kept)[order]] = np.arange(1, kept.sum() + 1)
        lookup = final[component].astype(smallest_label_dtype(int(kept.sum())))
        growth = self.thresholds.growth
        with TiledImageReader(self._seeds_path) as seeds, TiledImageReader(self._foreground_path) as foreground:
            def tiles():
                for tile in tile_grid(*self.shape, self.tile_size):
                    y0, x0 = max(tile.y - growth, 0), max(tile.x - growth, 0)
                    halo = tile.with_halo(growth)
                    labels = lookup[seeds.read_region(halo.y, halo.x, halo.height, halo.width)]
                    if not labels.any():  # nothing to grow (background tiles)
                        yield np.zeros((tile.height, tile.width), lookup.dtype)
                        continue
                    mask = foreground.read_region(halo.y, halo.x, halo.height, halo.width) > 0
                    grown = instances.grow(labels, mask, growth)
                    dy, dx = tile.y - y0, tile.x - x0
                    yield grown[dy:dy + tile.height, dx:dx + tile.width]
            write_tiled_image(objects_path, tiles(), self.shape, lookup.dtype, self.tile_size)
        return int(kept.sum())
