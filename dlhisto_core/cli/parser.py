"""The arguments of the ``dlhisto`` command: one subcommand per step, its options built from
the options dataclasses (``bounds.add_option``), so that each default, bound and choice is
declared once. :mod:`commands` runs the steps."""

from __future__ import annotations

import argparse
import re

from .. import __version__
from ..classic.annotation import AutoAnnotateOptions
from ..classic.segmentation import THRESHOLD_METHODS, ClassicOptions
from ..study.crossval import CrossValOptions
from ..study.sample_classifier import SampleClassifierOptions
from ..dl.options import ClassifyOptions, DataOptions, PredictOptions, TrainOptions, TransferOptions
from ..evaluation.scoring import MODES
from ..imaging.features import FEATURES, FeatureSettings
from ..io.geojson import ImportOptions
from ..evaluation.metrics import IOU_THRESHOLDS
from ..base.bounds import add_option
from ..ml.pixel_classifier import ClassifyPixelsOptions, ForestOptions
from ..classic.object_features import ObjectFeatureOptions
from ..imaging.preprocessing import PreprocessOptions
from ..models.shipped import SHIPPED
from ..view.layers import ViewOptions
from .arguments import (Parser, add_geojson_output, add_image_name, add_output, add_pairing,
                        add_stain_arguments)

DESCRIPTION = "dlhisto: image analysis for digital histology, one subcommand per step (each one a Galaxy tool)"


INPUT_FILES = frozenset({
    "input", "image", "labels", "target", "annotation", "geojson", "reference", "marker", "classifier", "model",
    "pretrained", "prediction", "truth", "tile_classes", "stain_reference", "validation_image", "validation_labels",
    "validation_annotation", "test_image", "test_labels", "metadata", "credentials", "evaluation", "attach", "bundle",
    "table", "data_manager_json", "classes", "regions", "truth_classes", "prediction_classes", "type_map",
    "objects", "heatmap", "sample_sheet"})
"""The arguments (dests) that name input files, in any step where they are not an output
(:func:`add_output`): the only files a confined step may read besides the software, and the
files an output may not overwrite. Names, descriptions and other text never grant access."""


def add_network_arguments(step: argparse.ArgumentParser, about: str = "") -> None:
    """--architecture and --encoder, with ModelSpec's defaults."""
    from ..models.spec import ARCHITECTURE_NAMES, ENCODERS, ModelSpec

    step.add_argument("--architecture", choices=ARCHITECTURE_NAMES, default=ModelSpec.architecture,
                      help=f"network{about} (default %(default)s)")
    step.add_argument("--encoder", choices=ENCODERS, default=ModelSpec.encoder, help=f"encoder{about} "
                      "(default %(default)s)")


def add_training_arguments(step: argparse.ArgumentParser) -> None:
    """Arguments shared by train and transfer: data, patches, optimisation, outputs."""
    step.add_argument("--image", action="append", required=True, help="training image (repeat for several)")
    step.add_argument("--labels", action="append",
                      help="its label image: classes (semantic) or one id per object (instance)")
    step.add_argument("--target", action="append",
                      help="regression: its target image, e.g. the clean image of a noisy one, or the other modality")
    step.add_argument("--image-name", action="append", help="display name of each image, in order")
    step.add_argument("--labels-name", action="append", help="display name of each label image, in order")
    step.add_argument("--target-name", action="append", help="display name of each target image, in order")
    data, options = DataOptions(), TrainOptions()
    add_option(step, data, "task", help="semantic: classes 0..K-1; instance: objects -> background/interior/boundary; "
               "classification: one class per image (tile), from --tile-classes; regression: pixel values "
               "of --target images (restoration, translation between modalities)")
    add_option(step, data, "target_normalization", help="regression: scale each target with the percentiles of its "
               "input image (input: restoration, same units) or of all targets together (dataset: another modality); "
               "default %(default)s")
    step.add_argument("--tile-classes", help="classification: table of image name <TAB> class")
    step.add_argument("--tile-classes-name", help="display name of the table in messages")
    step.add_argument("--class-names", help="comma-separated class names (0..K-1), or regression output channel names")
    add_option(step, data, "patch_size", help="training patch size, multiple of 16 (default %(default)s)")
    add_option(step, data, "patches_per_image", help="default %(default)s")
    add_option(step, options, "epochs", help="epochs (transfer: of phase 1; default %(default)s)")
    add_option(step, options, "batch_size", help="default %(default)s")
    add_option(step, options, "learning_rate", help="default %(default)s")
    add_option(step, options, "loss", help="segmentation: ce, dice or ce_dice (default); regression: l1 (default) or l2")
    add_option(step, options, "validation_fraction", help="default %(default)s")
    add_option(step, options, "patience", help="early stopping patience in epochs (default %(default)s)")
    add_option(step, options, "strong_augment", help="also augment scale (0.6-1.6x), stains (HED), intensity, blur, "
               "noise and, for fluorescence, cytoplasm-like halos: for models meant for other labs' images")
    add_option(step, options, "seed", help="default %(default)s")
    add_option(step, options, "device", help="default %(default)s")
    add_option(step, options, "precision", help="auto: mixed precision (float16) on CUDA, float32 on CPUs; fp32; "
               "bf16: bfloat16, faster on AVX-512 CPUs, less exact (default %(default)s)")
    step.add_argument("--checkpoint", help="checkpoint file: written every epoch, resumed from if present")
    step.add_argument("--model-name", type=_package_name, default="dlhisto U-Net",
                      help="name of the model package: 5 to 128 letters, digits, spaces and _+-() (bioimage.io's rule)")
    step.add_argument("--author", type=_author_name, default="dlhisto user",
                      help="author recorded in the model package (no slash)")
    add_stain_arguments(step, "map the training images' stains onto --stain-reference first (RGB brightfield); "
                        "the package records the reference and predict maps slides onto it too")
    add_output(step, "--model", required=True, help="output bioimage.io model package (.zip)")
    add_output(step, "--history", help="output: per-epoch losses and validation score (JSON)")
    add_output(step, "--curve", help="output: training curve (PNG)")


TRAINING_PAIRS = (("image", "labels", "image", "label image", True), ("image", "target", "image", "target image", True),
                  ("validation_image", "validation_labels", "validation image", "validation label image", True))


def add_validation_arguments(step: argparse.ArgumentParser) -> None:
    """train's annotated validation images (segmentation), paired with their labels."""
    step.add_argument("--validation-image", action="append",
                      help="segmentation: an annotated image to validate on, never trained on (repeat): early "
                      "stopping, and for objects their F1 each epoch and the object thresholds (default: with 5 "
                      "images or more, --validation-fraction of them held out)")
    step.add_argument("--validation-labels", action="append", help="its label image")
    step.add_argument("--validation-image-name", action="append", help="display name of each validation image")
    step.add_argument("--validation-labels-name", action="append", help="display name of each validation label image")


PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_+\- ()]{5,128}$")
"""bioimage.io's rule for a model's name (spec 0.5)."""


def _package_name(text: str) -> str:
    """An argparse type: a model package's name, checked before hours of training, not after."""
    if not PACKAGE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"a model name is 5 to 128 letters, digits, spaces and _+-() (bioimage.io), "
                                         f"not {text!r}")
    return text


def _author_name(text: str) -> str:
    if not text.strip() or "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"an author name is not empty and has no slash (bioimage.io), not {text!r}")
    return text


MAX_THREADS = 256
"""Most threads a step may be given (--threads): more than any node's cores, fewer than would
exhaust the process's threads (ONNX Runtime starts them all at once)."""


def _thread_count(text: str) -> int:
    """An argparse type: a whole number of threads, 1 to :data:`MAX_THREADS`."""
    text = text.strip()
    if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_THREADS}, not {text[:20]!r}")
    return int(text)


def _preprocess(steps) -> None:
    """The arguments of ``dlhisto preprocess``."""
    pre = steps.add_parser("preprocess", help="deconvolve stains, rescale, enhance ridges, smooth, normalise")
    pre.add_argument("input", help="TIFF, OME-TIFF, PNG or JPEG image")
    add_output(pre, "output", help="output image: float32 OME-TIFF")
    add_image_name(pre)
    pre.add_argument("--channel", type=int, metavar="N", help="keep only channel N (counted from 1)")
    defaults = PreprocessOptions()
    add_option(pre, defaults, "deconvolve",
               help="colour deconvolution of an RGB image: one stain or all three (H, E, DAB)")
    add_option(pre, defaults, "input_pixel_size", metavar="UM",
               help="pixel size in µm, when the file records none or a wrong one")
    add_option(pre, defaults, "target_pixel_size", metavar="UM", help="resample to this pixel size")
    add_option(pre, defaults, "ridge", help="Hessian-based ridge enhancement (fibres, axons, vessels)")
    pre.add_argument("--ridge-sigmas", default=",".join(f"{s:g}" for s in defaults.ridge_sigmas),
                     help="comma-separated ridge scales in pixels (default %(default)s)")
    add_option(pre, defaults, "dark_ridges", help="ridges are darker than the background")
    add_option(pre, defaults, "sigma", help="Gaussian smoothing sigma in pixels (default %(default)s)")
    pre.add_argument("--normalize", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="map these percentiles of each channel to 0 and 1 (e.g. 1 99.8)")
    add_stain_arguments(pre, "map the stains of an RGB brightfield image onto --stain-reference first (alone: the "
                        "output stays 8-bit RGB, written tile by tile)")
    add_output(pre, "--stain-reference-out", metavar="FILE", help="output: the stain reference (JSON), to reuse")


def _segment_classic(steps) -> None:
    """The arguments of ``dlhisto segment_classic``."""
    seg = steps.add_parser("segment_classic",
                           help="smooth, threshold, remove small objects, watershed, measure")
    seg.add_argument("input", help="TIFF, OME-TIFF, PNG or JPEG image")
    add_output(seg, "--labels", required=True, help="output label image (OME-TIFF)")
    add_output(seg, "--measurements", required=True, help="output table, one row per object")
    add_output(seg, "--summary", required=True, help="output table: object count and areas")
    add_image_name(seg)
    seg.add_argument("--channel", type=int, metavar="N",
                     help="channel to segment, from 1 (default: the only one, or RGB luminance)")
    defaults = ClassicOptions()
    add_option(seg, defaults, "sigma", help="Gaussian smoothing sigma (default %(default)s)")
    add_option(seg, defaults, "threshold", help="threshold method (default %(default)s)")
    add_option(seg, defaults, "manual_threshold", metavar="VALUE",
               help="threshold on the smoothed image, with --threshold manual")
    add_option(seg, defaults, "dark_objects", help="objects are darker than the background (brightfield)")
    add_option(seg, defaults, "min_area", help="remove smaller objects (pixels, default %(default)s)")
    add_option(seg, defaults, "fill_holes", help="fill holes inside objects")
    add_option(seg, defaults, "watershed", help="do not split touching objects")
    add_option(seg, defaults, "min_distance", help="smallest distance between watershed seeds in pixels "
               "(default %(default)s)")
    add_option(seg, defaults, "exclude_border", help="drop objects touching the border")
    add_geojson_output(seg, "the objects, with area and intensity measurements,")


def _geojson_to_labels(steps) -> None:
    """The arguments of ``dlhisto geojson_to_labels``."""
    gj = steps.add_parser("geojson_to_labels", help="QuPath GeoJSON annotations -> a label image (one id per area) "
                          "or a class map (scribbles for the pixel classifier)")
    gj.add_argument("geojson", help="GeoJSON FeatureCollection, as QuPath exports it")
    gj.add_argument("--geojson-name", metavar="NAME", help="name of the GeoJSON file in messages")
    gj.add_argument("--image", required=True, help="the image or slide the annotations were drawn on (its size)")
    add_image_name(gj)
    add_output(gj, "--output", required=True, help="output: label image or class map (tiled OME-TIFF)")
    defaults = ImportOptions()
    add_option(gj, defaults, "mode", help="labels: one id per area (Polygon, MultiPolygon); classes: the class "
               "number of each pixel, strokes (lines, points) included (default %(default)s)")
    gj.add_argument("--classes", help="classes mode: comma-separated class names, numbered 1, 2, ... in this order "
                    "(default: the names found, sorted)")
    gj.add_argument("--pixel-size", type=float, metavar="UM", help="write the output at this pixel size in µm "
                    "(the slide's coordinates are scaled to it)")


def _auto_annotate(steps) -> None:
    """The arguments of ``dlhisto auto_annotate``."""
    aa = steps.add_parser("auto_annotate", help="training labels from a second image of the same section: register "
                                                "the marker onto the reference, segment it, labels in the reference frame")
    aa.add_argument("reference", help="the image the labels are for (e.g. the H&E scan)")
    aa.add_argument("marker", help="the same section imaged with a marker (e.g. a fluorescent nuclear stain)")
    add_output(aa, "--labels", required=True, help="output label image, in the reference's frame (OME-TIFF)")
    add_output(aa, "--report", required=True, help="output table: the transform, its residual, the objects")
    add_output(aa, "--warped-marker", help="output: the marker in the reference's frame, to check the overlay")
    aa.add_argument("--reference-name", help="name of the reference in messages and tables")
    aa.add_argument("--marker-name", help="name of the marker image in messages and tables")
    defaults = AutoAnnotateOptions()
    add_option(aa, defaults, "reference_channel", help="how the reference shows the marked structures: "
               "hematoxylin (RGB brightfield, default), dark or bright structures of a grey image")
    aa.add_argument("--marker-channel", type=int, metavar="N", help="channel of the marker image, from 1")
    add_option(aa, defaults, "method",
               help="phase: shift only (phase correlation); rigid, similarity, affine: keypoints + RANSAC")
    add_option(aa, defaults, "output", help="instances: one id per object; classes: 1 where the marker is on")
    add_option(aa, defaults.segmentation, "sigma", help="smoothing of the marker before its threshold "
               "(default %(default)s)")
    add_option(aa, defaults.segmentation, "threshold", help="threshold method (default %(default)s)")
    add_option(aa, defaults.segmentation, "min_area", help="smallest marker object kept (pixels, default %(default)s)")


def _pixel_classifier_train(steps) -> None:
    """The arguments of ``dlhisto pixel_classifier_train``."""
    train = steps.add_parser("pixel_classifier_train",
                             help="train a random forest pixel classifier from sparse annotations")
    train.add_argument("--image", action="append", required=True, help="training image (repeat for several)")
    train.add_argument("--annotation", action="append", required=True,
                       help="label image of the same size: 0 = not annotated, 1..K = class (one per --image)")
    train.add_argument("--image-name", action="append", help="display name of each image, in order")
    train.add_argument("--annotation-name", action="append", help="display name of each annotation, in order")
    train.add_argument("--validation-image", action="append",
                       help="image whose annotated pixels measure the accuracy, never used to train (repeatable)")
    train.add_argument("--validation-annotation", action="append", help="annotation of each --validation-image")
    train.add_argument("--validation-image-name", action="append", help="display name of each validation image")
    train.add_argument("--validation-annotation-name", action="append",
                       help="display name of each validation annotation")
    add_output(train, "--classifier", required=True, help="output classifier (.zip)")
    add_output(train, "--report", help="output table: annotated pixels per class, out-of-bag accuracy")
    train.add_argument("--class-names", help="comma-separated names of classes 1..K")
    features, forest = FeatureSettings(), ForestOptions()
    train.add_argument("--features", default=",".join(features.features),
                       help=f"comma-separated filters (default: all of {', '.join(FEATURES)})")
    train.add_argument("--scales", default=",".join(f"{s:g}" for s in features.scales),
                       help="comma-separated Gaussian scales in pixels (default %(default)s)")
    add_option(train, features, "include_raw", flag="--raw", help="do not use the unfiltered intensities as features")
    add_option(train, forest, "trees", help="number of trees (default %(default)s)")
    add_option(train, forest, "seed", help="random seed (same seed, same classifier)")


def _object_classifier_train(steps) -> None:
    """The arguments of ``dlhisto object_classifier_train``."""
    train = steps.add_parser("object_classifier_train",
                             help="train a random forest that classifies objects (cells) from their measurements")
    train.add_argument("--image", action="append", required=True, help="image or slide (repeat for several)")
    train.add_argument("--labels", action="append", required=True, help="its objects: a label image (one per --image)")
    train.add_argument("--classes", action="append", required=True,
                       help="classes of some objects: a table (label, class), a class map (scribbles or a type map) or "
                       "QuPath GeoJSON drawn on the image (one per --image)")
    for what in ("image", "labels", "classes"):
        train.add_argument(f"--{what}-name", action="append", help=f"display name of each --{what}, in order")
    train.add_argument("--class-names", help="comma-separated class names: the classes a class map's numbers 1..K "
                       "stand for, or the classes and their order (default: sorted)")
    add_output(train, "--classifier", required=True, help="output classifier (.zip)")
    add_output(train, "--report", help="output table: objects per class, out-of-bag accuracy")
    features, forest = ObjectFeatureOptions(), ForestOptions()
    add_option(train, features, "ring_width", metavar="UM", help="ring around each object measured (µm, default "
               "%(default)s)")
    add_option(train, features, "neighbour_radius", metavar="UM", help="neighbours counted within (µm, default "
               "%(default)s)")
    add_option(train, forest, "trees", help="number of trees (default %(default)s)")
    add_option(train, forest, "seed", help="random seed (same seed, same classifier)")


def _object_classifier_apply(steps) -> None:
    """The arguments of ``dlhisto object_classifier_apply``."""
    apply = steps.add_parser("object_classifier_apply", help="classify every object (cell) of a label image, with "
                             "an object classifier or by the vote of its pixels in a type map")
    apply.add_argument("input", help="the image or slide the objects were found on")
    add_image_name(apply)
    apply.add_argument("--labels", required=True, help="the objects: a label image (its pixel size may differ)")
    apply.add_argument("--labels-name", help="display name of the label image")
    types = apply.add_mutually_exclusive_group(required=True)
    types.add_argument("--classifier", help="classifier from object_classifier_train")
    types.add_argument("--type-map", help="a class map of types 1..K (0 = none) on the labels' pixels, e.g. predict's "
                       "class map with nuclei_types_he: each object takes the type most of its pixels have")
    apply.add_argument("--classifier-name", "--type-map-name", dest="classifier_name",
                       help="display name of the classifier or type map in messages")
    apply.add_argument("--class-names", help="with --type-map: comma-separated names of types 1..K")
    add_output(apply, "--table", required=True, help="output table: label, centre, class, probability of each class")
    add_output(apply, "--geojson", help="output: the objects as QuPath detections classified with their class and "
               "colour, in the coordinates of the input's full resolution")


def _count_cells(steps) -> None:
    """The arguments of ``dlhisto count_cells``."""
    count = steps.add_parser("count_cells", help="count cells per type and region: counts, fractions, densities")
    count.add_argument("--labels", required=True, help="the cells: a label image")
    count.add_argument("--labels-name", help="display name of the label image")
    count.add_argument("--classes", help="their types: a table (label, class; object_classifier_apply's), a type map "
                       "or QuPath GeoJSON (default: count all cells as one)")
    count.add_argument("--classes-name", help="display name of the classes")
    count.add_argument("--class-names", help="comma-separated names of a type map's classes 1..K")
    count.add_argument("--regions", help="regions to count in: QuPath GeoJSON areas (annotations, a tissue map of "
                       "classify) or a region map (0 = none)")
    count.add_argument("--regions-name", help="display name of the regions")
    count.add_argument("--region-names", help="comma-separated names of a region map's regions 1..K")
    count.add_argument("--image", help="the slide the GeoJSON files were drawn on (its pixel size places them on the "
                       "labels); default: the labels' own pixels")
    add_image_name(count)
    add_output(count, "--table", required=True, help="output table: image, region, cell type, count, fraction, "
               "region area (mm²), density (per mm²)")


def _view(steps) -> None:
    """The arguments of ``dlhisto view``."""
    view = steps.add_parser("view", help="a zoomable viewer page of a slide with its results over it (objects, "
                            "regions, heatmaps): Deep Zoom tiles made once, OpenSeadragon, offline")
    view.add_argument("input", help="the slide or image (scanner formats, OME-TIFF, TIFF, PNG, JPEG)")
    add_image_name(view)
    for flag, what in (("objects", "objects to outline, coloured by class, measurements shown on click (QuPath "
                        "GeoJSON detections: predict, segment_classic, object_classifier_apply)"),
                       ("regions", "regions to fill, coloured by class (QuPath GeoJSON: classify's tissue map, "
                        "annotations)"),
                       ("heatmap", "a probability map (a layer per channel) or class map (OME-TIFF) to shade, placed "
                        "by its pixel size")):
        view.add_argument(f"--{flag}", action="append", help=f"{what}; repeat for several")
        view.add_argument(f"--{flag}-name", action="append", help="its layer's name (default: the file name)")
    options = ViewOptions()
    add_option(view, options, "outline_width", help="objects' outline width in slide pixels (default %(default)s)")
    add_option(view, options, "region_fill", help="opacity of the regions' fill (default %(default)s)")
    add_option(view, options, "heatmap_opacity", help="heatmaps' opacity when shown (default %(default)s)")
    add_output(view, "--page", required=True, help="output: the viewer page (HTML)")
    view.add_argument("--files-dir", required=True, help="folder for the page's tiles and scripts (Galaxy: the "
                      "dataset's extra files)")
    view.add_argument("--files-url", help="the folder's URL relative to the page (default: its relative path; "
                      "Galaxy: '' as it serves extra files beside the page)")


def _cohort(steps) -> None:
    """The arguments of ``dlhisto cohort``."""
    cohort = steps.add_parser("cohort", help="a study's samples: one row of readouts per sample, the groups compared "
                              "readout by readout, the samples classified from their readouts (cross-validated)")
    cohort.add_argument("--table", action="append", required=True, help="a table of the samples (count_cells, "
                        "classify's tiles, object measurements): its 'image' column names each row's sample, or "
                        "without one its name does; repeat for every table")
    cohort.add_argument("--table-name", action="append", help="its name (default: the file name), the sample's "
                        "name for a table without an 'image' column")
    cohort.add_argument("--sample-sheet", required=True, help="table of the samples: a 'sample' column, a group "
                        "column and any covariates")
    cohort.add_argument("--sample-sheet-name", help="display name of the sample sheet")
    cohort.add_argument("--group-column", default="group", help="the sample sheet's column of groups (default "
                        "%(default)s)")
    options = SampleClassifierOptions()
    add_option(cohort, options, "method", help="classifier of the samples: logistic (L2-regularised logistic "
               "regression) or forest (default %(default)s)")
    for name in ("folds", "regularisation", "trees", "bootstrap", "seed"):
        add_option(cohort, options, name, help="default %(default)s")
    add_output(cohort, "--readouts", required=True, help="output table: one row per sample, its sheet's columns "
               "and its readouts")
    add_output(cohort, "--comparison", help="output table: every readout compared between the groups")
    add_output(cohort, "--classification", help="output table: cross-validated scores with 95 %% intervals, each "
               "sample's out-of-fold prediction, the top features")
    add_output(cohort, "--report", help="output: HTML report with box plots by group")


def _pixel_classifier_predict(steps) -> None:
    """The arguments of ``dlhisto pixel_classifier_predict``."""
    predict = steps.add_parser("pixel_classifier_predict",
                               help="classify every pixel of an image, tile by tile; optionally label objects")
    predict.add_argument("input", help="image to classify (TIFF, OME-TIFF, PNG, JPEG)")
    add_image_name(predict)
    predict.add_argument("--classifier", required=True, help="classifier from pixel_classifier_train")
    predict.add_argument("--classifier-name", help="display name of the classifier in messages")
    add_output(predict, "--probabilities", required=True, help="output: probability of each class (OME-TIFF)")
    add_output(predict, "--classes", required=True, help="output: class of each pixel, 1..K (OME-TIFF)")
    add_option(predict, ClassifyPixelsOptions(), "tile_size", help="tile size in pixels, a multiple of 16 "
               "(default %(default)s)")
    add_option(predict, ClassifyPixelsOptions(), "pixel_size", metavar="UM",
               help="classify at this pixel size in µm (default: the one the classifier was trained at, when it and "
               "the image record one); the outputs have this pixel size")
    predict.add_argument("--objects-class", type=int, metavar="K",
                         help="also label the objects of class K and measure them")
    add_output(predict, "--objects", help="output label image of the objects")
    add_output(predict, "--measurements", help="output table, one row per object")
    add_output(predict, "--summary", help="output table: object count and areas")
    objects = ClassicOptions()
    add_option(predict, objects, "min_area", help="drop smaller objects (pixels, default %(default)s)")
    predict.add_argument("--split-touching", action="store_true", help="split touching objects by watershed")
    add_option(predict, objects, "min_distance", help="smallest distance between watershed seeds in pixels "
               "(default %(default)s)")
    add_geojson_output(predict, "the objects, classified with the class's name,")


def _train(steps) -> None:
    """The arguments of ``dlhisto train``."""
    tr = steps.add_parser("train", help="train a U-Net from annotated images; output a bioimage.io model package")
    add_training_arguments(tr)
    add_validation_arguments(tr)
    add_pairing(tr, *TRAINING_PAIRS)
    add_network_arguments(tr)
    add_option(tr, TrainOptions(), "encoder_weights", help="imagenet: start the encoder from ImageNet weights where "
               "dlhisto ships them (mobilenet_v2; random for the others); none: random (default %(default)s)")


def _transfer(steps) -> None:
    """The arguments of ``dlhisto transfer``."""
    tf = steps.add_parser("transfer", help="fine-tune a pretrained model (package or weights file) on new images")
    add_training_arguments(tf)
    add_pairing(tf, *TRAINING_PAIRS[:2])
    tf.add_argument("--pretrained", required=True,
                    help="a dlhisto model package, or a PyTorch state dict / safetensors file (e.g. ImageNet encoder)")
    tf.add_argument("--pretrained-name", help="display name of the pretrained file in messages")
    add_network_arguments(tf, " of a bare weights file (a package brings its own)")
    phases = TransferOptions()
    add_option(tf, phases, "freeze_stages", help="encoder stages (0-5, from the input side) kept fixed in phase 1 "
               "(default %(default)s: the whole encoder)")
    add_option(tf, phases, "finetune_epochs", help="phase 2: epochs with every layer trainable (0: no phase 2; "
               "default %(default)s)")
    add_option(tf, phases, "finetune_lr_factor", help="phase 2 learning rate = this x --learning-rate "
               "(default %(default)s)")


def _predict(steps) -> None:
    """The arguments of ``dlhisto predict``."""
    pr = steps.add_parser("predict", help="apply a U-Net model package (segmentation or regression) to a whole slide, "
                          "tile by tile")
    pr.add_argument("input", help="image or whole slide (tiled/pyramidal TIFF, OME-TIFF, PNG, JPEG)")
    add_image_name(pr)
    pr.add_argument("--model", required=True, help="bioimage.io model package made by dlhisto train or transfer")
    pr.add_argument("--model-name", help="display name of the model in messages")
    add_output(pr, "--probabilities", help="output: probability of each class (pyramidal OME-TIFF, float32)")
    add_output(pr, "--classes", help="output: class map 0..K-1 (pyramidal OME-TIFF)")
    add_output(pr, "--objects", help="output: label image of the objects (instance models)")
    add_output(pr, "--predicted-image", help="output: the predicted image of a regression model (restoration, "
                    "translation), float32 pyramidal OME-TIFF in the target's units")
    add_output(pr, "--summary", help="output table: windows, skipped windows, class fractions, object count")
    defaults = PredictOptions()
    add_option(pr, defaults, "tile_size", help="output tile size, multiple of 32 (default %(default)s)")
    add_option(pr, defaults, "overlap", help="overlap of neighbouring windows, blended smoothly; multiple of 32 "
               "(default %(default)s)")
    add_option(pr, defaults, "batch_size", help="windows per forward pass (default %(default)s)")
    add_option(pr, defaults, "device", help="default %(default)s")
    add_option(pr, defaults, "precision", help="auto: mixed precision (float16) on CUDA, float32 on CPUs; fp32; "
               "bf16: bfloat16, about 2x faster on CPUs with AVX-512 BF16, changes about 0.2 %% of the class map "
               "(default %(default)s)")
    add_option(pr, defaults, "skip_background",
               help="do not run the network on windows without tissue (they become class 0)")
    add_option(pr, defaults, "min_tissue", help="with --skip-background: smallest tissue fraction of a window that "
               "is predicted (default %(default)s)")
    add_option(pr, defaults, "min_area", help="drop objects with a smaller interior (pixels, default %(default)s)")
    add_option(pr, defaults, "flips", help="test-time augmentation: average the outputs over each window and its "
               "3 flips (4 times the work)")
    add_option(pr, defaults, "pixel_size", metavar="UM", help="work at this pixel size in µm: read the slide's pyramid "
               "level nearest to it (not coarser) and resample the rest; the outputs have this pixel size")
    add_geojson_output(pr, "the objects (instance models)")
    add_stain_arguments(pr, "map the slide's stains onto --stain-reference as it is read (RGB brightfield), e.g. "
                        "onto a training image's (default: the reference the package records, if any)")


def _classify(steps) -> None:
    """The arguments of ``dlhisto classify``."""
    cl = steps.add_parser("classify", help="classify images, or the tiles of a slide, with a tile classifier package")
    cl.add_argument("--image", action="append", required=True, help="image to classify (repeat for several)")
    cl.add_argument("--image-name", action="append", help="display name of each image, in order")
    cl.add_argument("--model", required=True, help="tile classifier package from dlhisto train --task classification")
    cl.add_argument("--model-name", help="display name of the model in messages")
    add_output(cl, "--table", required=True, help="output table: one row per image or tile, class and probabilities")
    add_output(cl, "--geojson", help="output: the tiles of one image as QuPath GeoJSON tile objects in the slide's "
               "coordinates, classified (a tissue map over the slide)")
    defaults = ClassifyOptions()
    add_option(cl, defaults, "tile_size",
               help="cut each image into tiles of this size (multiple of 32) and classify every tile")
    add_option(cl, defaults, "batch_size", help="default %(default)s")
    add_option(cl, defaults, "device", help="default %(default)s")
    add_option(cl, defaults, "precision", help="as predict's (default %(default)s)")
    add_option(cl, defaults, "pixel_size", metavar="UM", help="classify at this pixel size in µm (pyramid level "
               "nearest to it, resampled)")
    add_option(cl, defaults, "skip_background", help="with tiles: tiles without tissue (the slide's overview) are "
               "class 'background', not classified, left out of the tissue map")
    add_option(cl, defaults, "min_tissue", help="with --skip-background: the tissue fraction below which a tile is "
               "background (default %(default)s)")


def _evaluate(steps) -> None:
    """The arguments of ``dlhisto evaluate``."""
    ev = steps.add_parser("evaluate", help="compare predictions with ground truth: instance matching or pixel classes")
    ev.add_argument("--prediction", action="append", required=True, help="label image, class map or classify table (repeatable)")
    ev.add_argument("--truth", action="append", required=True, help="its ground truth, in the same order (classification: one table of true classes)")
    ev.add_argument("--prediction-name", action="append", help="display name of each prediction, in order")
    ev.add_argument("--truth-name", action="append", help="display name of each ground truth, in order")
    ev.add_argument("--mode", choices=MODES, default=MODES[0],
                    help="instance: objects matched at IoU thresholds; semantic: classes pixel by pixel; "
                    "classification: classify tables (--prediction) against one table of true classes (--truth); "
                    "restoration: predicted images against target images (PSNR, SSIM, NRMSE, MAE); typed: objects "
                    "and their classes (per-class F1 and PQ, mPQ)")
    ev.add_argument("--image", action="append", help="the image of each prediction, to draw the errors on (report)")
    ev.add_argument("--image-name", action="append", help="display name of each image, in order")
    add_pairing(ev, ("prediction", "truth", "prediction", "ground truth", True),
                ("prediction", "image", "prediction", "image", True),
                ("prediction", "truth_classes", "prediction", "classes of the ground truth", True),
                ("prediction", "prediction_classes", "prediction", "classes of the prediction", True))
    ev.add_argument("--thresholds", default=",".join(f"{t:g}" for t in IOU_THRESHOLDS),
                    help="instance: comma-separated IoU thresholds (default 0.5 to 0.95 by 0.05)")
    ev.add_argument("--class-names", help="semantic: names of classes 0..K-1; classification and typed: the "
                    "classes in the confusion matrix's order (default: sorted), a type map's 1..K; comma-separated")
    ev.add_argument("--truth-classes", action="append", help="typed: the classes of each truth's objects (a type map, "
                    "a table label/class or QuPath GeoJSON), in order")
    ev.add_argument("--prediction-classes", action="append", help="typed: the classes of each prediction's objects "
                    "(object_classifier_apply's table, a type map or GeoJSON), in order")
    ev.add_argument("--truth-classes-name", action="append", help="display name of each --truth-classes, in order")
    ev.add_argument("--prediction-classes-name", action="append", help="display name of each --prediction-classes")
    add_output(ev, "--table", required=True, help="output table: per image and pooled ('all') scores")
    add_output(ev, "--confusion", help="output confusion matrix (pooled; semantic, classification)")
    add_output(ev, "--report", help="output: HTML report with tables, plots and pictures of the errors")


def _crossval(steps) -> None:
    """The arguments of ``dlhisto crossval``."""
    cv = steps.add_parser("crossval", help="k-fold cross-validation of a segmentation method, with a held-out test set")
    defaults = CrossValOptions()
    add_option(cv, defaults, "method", help="default %(default)s")
    add_option(cv, defaults, "task",
               help="instance: labels are objects, scored by matching; semantic: labels are classes 0..K-1")
    cv.add_argument("--image", action="append", required=True, help="annotated image of the pool (repeatable)")
    cv.add_argument("--labels", action="append", required=True, help="its labels, in the same order")
    cv.add_argument("--image-name", action="append", help="display name of each pool image, in order")
    cv.add_argument("--labels-name", action="append", help="display name of each label image, in order")
    cv.add_argument("--test-image", action="append", help="held-out test image (repeatable): never trained on")
    cv.add_argument("--test-labels", action="append", help="its labels, in the same order")
    cv.add_argument("--test-image-name", action="append", help="display name of each test image, in order")
    cv.add_argument("--test-labels-name", action="append", help="display name of each test label image, in order")
    add_pairing(cv, ("image", "labels", "image", "label image", True),
                ("test_image", "test_labels", "test image", "test label image", True))
    add_option(cv, defaults, "folds", help="number of folds (default %(default)s)")
    add_option(cv, defaults, "seed", help="seed of the fold assignment and of training")
    add_option(cv, defaults, "iou_threshold", help="instance: IoU for a match (default %(default)s)")
    add_output(cv, "--table", required=True, help="output table: scores per fold and role, mean and sd")
    objects = cv.add_argument_group("objects and the classic pipeline")
    objects.add_argument("--sigmas", default=",".join(f"{s:g}" for s in defaults.sigmas),
                         help="classic: candidate smoothing sigmas (default %(default)s)")
    add_option(objects, defaults.classic, "threshold", choices=THRESHOLD_METHODS[:-1], help="classic: threshold")
    add_option(objects, defaults.classic, "dark_objects", help="classic: objects darker than the background")
    add_option(objects, defaults.classic, "min_area", help="smallest object kept, pixels (default %(default)s)")
    add_option(objects, defaults.classic, "min_distance", help="watershed seed distance (default %(default)s)")
    add_option(objects, defaults.classic, "watershed", help="do not split touching objects")
    forest = cv.add_argument_group("pixel classifier")
    add_option(forest, defaults, "pixels_per_class",
               help="pixels drawn per class and image from the labels (default %(default)s)")
    add_option(forest, defaults, "trees", help="trees of the random forest (default %(default)s)")
    unet = cv.add_argument_group("U-Net")
    for name in ("epochs", "batch_size", "learning_rate", "device"):
        add_option(unet, defaults.train, name, help="default %(default)s")
    for name in ("patch_size", "patches_per_image"):
        add_option(unet, defaults.data, name, help="default %(default)s")
    add_option(unet, defaults, "encoder", help="default %(default)s")


def _omero_fetch(steps) -> None:
    """The arguments of ``dlhisto omero_fetch``."""
    of = steps.add_parser("omero_fetch", help="fetch images and their ROIs (as label images) and annotations from OMERO")
    of.add_argument("--credentials", help="JSON file: host, port, user + password or session_key, group; default: "
                    "the environment variables OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD, OMERO_SESSION_KEY, "
                    "OMERO_GROUP (never give a password on the command line)")
    of.add_argument("--image-id", type=int, action="append", help="OMERO image id (repeatable)")
    of.add_argument("--dataset-id", type=int, action="append", help="OMERO dataset id: all its images (repeatable)")
    of.add_argument("--output-dir", required=True, help="folder for images/ and labels/ (same file names)")
    add_output(of, "--rois", help="output table: the ROIs and the label each became")
    add_output(of, "--annotations", help="output table: tags and key-value pairs of the images")


def _omero_push(steps) -> None:
    """The arguments of ``dlhisto omero_push``."""
    op = steps.add_parser("omero_push", help="push a label image (as ROIs), files and key-value pairs to an OMERO image")
    op.add_argument("--credentials", help="JSON file or, by default, OMERO_* environment variables, as for omero_fetch")
    target = op.add_mutually_exclusive_group(required=True)
    target.add_argument("--image-id", type=int, help="the OMERO image the results belong to")
    target.add_argument("--image-id-from-name", action="store_true",
                        help="the image id is the number that starts --labels-name (omero_fetch names its "
                             "images <id>_<name>), so that a workflow maps over a whole fetched dataset")
    op.add_argument("--labels", help="label image (one id per object): one ROI per object")
    op.add_argument("--labels-name", help="display name of the label image in messages")
    op.add_argument("--classes", help="the objects' classes (e.g. cell types: object_classifier_apply's table, a type "
                    "map or GeoJSON): each ROI's text and colour")
    op.add_argument("--classes-name", help="display name of the classes")
    op.add_argument("--class-names", help="comma-separated names of a type map's classes 1..K")
    op.add_argument("--shape", choices=["mask", "polygon"], default="mask",
                    help="mask: exact pixels; polygon: outline, editable in OMERO.iviewer (default mask)")
    op.add_argument("--roi-name", default="dlhisto", help="ROI names: this and the object's label")
    op.add_argument("--attach", action="append", help="file to attach to the image (repeatable)")
    op.add_argument("--attach-name", action="append", help="its name in OMERO, in order")
    op.add_argument("--key-value", action="append", metavar="KEY=VALUE",
                    help="recorded in a key-value map on the image (repeatable); dlhisto.version is always added")
    add_output(op, "--table", help="output table: what was created in OMERO (kind, id)")


def _deposit(steps) -> None:
    """The arguments of ``dlhisto deposit``."""
    dp = steps.add_parser("deposit", help="a BioImage Archive submission: RO-Crate (REMBI), file list, checksums, "
                          "images as OME-TIFF, in one zip, checked by the archive's validator")
    dp.add_argument("--metadata", required=True, help="metadata form (JSON): study, authors, REMBI fields")
    dp.add_argument("--image", action="append", required=True, help="image (repeatable)")
    dp.add_argument("--image-name", action="append", help="display name of each image, in order")
    dp.add_argument("--labels", action="append", help="its label image (repeatable, same order)")
    dp.add_argument("--labels-name", action="append", help="display name of each label image, in order")
    add_pairing(dp, ("image", "labels", "image", "label image", False))
    dp.add_argument("--table", action="append", help="measurement or evaluation table to include (repeatable)")
    dp.add_argument("--table-name", action="append", help="display name of each table, in order")
    dp.add_argument("--model", help="model package to include (bioimage.io zip)")
    dp.add_argument("--model-name", help="its file name in the bundle")
    dp.add_argument("--pixel-size", type=float, help="pixel size in micrometres, for images that lack one")
    dp.add_argument("--validator-python", help="Python of the environment with bia-ro-crate-validator "
                    "(default: $DLHISTO_BIA_VALIDATOR_PYTHON)")
    add_output(dp, "--bundle", required=True, help="output: the submission (zip)")
    add_output(dp, "--report", required=True, help="output: the validator's verdict and the file list (JSON)")


def _deposit_upload(steps) -> None:
    """The arguments of ``dlhisto deposit_upload``."""
    du = steps.add_parser("deposit_upload", help="upload a deposit bundle to the BioImage Archive's FTP area "
                          "(uses the network; only with --network)")
    du.add_argument("bundle", help="the bundle made by dlhisto deposit")
    du.add_argument("--host", required=True, help="FTP host given by the archive's submission tool")
    du.add_argument("--folder", required=True, help="your submission's private folder on it")
    du.add_argument("--network", action="store_true", help="allow this command to use the network")


def _install_model(steps) -> None:
    """The arguments of ``dlhisto install_model``."""
    inst = steps.add_parser("install_model", help="check a bioimage.io package and describe it for the facility's "
                            "model base (the Galaxy data manager of the dlhisto_models table)")
    source = inst.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="the package (dlhisto's or one made elsewhere)")
    source.add_argument("--pretrained", choices=list(SHIPPED), help="one of dlhisto's pretrained models, with its "
                        "evaluation on held-out images (unless --evaluation is given)")
    inst.add_argument("--model-name", help="display name of the package in messages")
    inst.add_argument("--id", help="id of the table row (default: from the package's name)")
    inst.add_argument("--description", help="description of the row (default: the package's)")
    inst.add_argument("--evaluation", help="the table of evaluate or crossval for this model: into the model card "
                      "of a dlhisto package, its headline figures into the row's name")
    inst.add_argument("--evaluation-name", help="display name of the evaluation table")
    inst.add_argument("--data-manager-json", required=True, metavar="FILE",
                      help="Galaxy's data manager parameters (JSON), replaced by the row to add")


def _pretrained(steps) -> None:
    """The arguments of ``dlhisto pretrained``."""
    pt = steps.add_parser("pretrained", help="write one of the pretrained models dlhisto ships as a bioimage.io "
                          "package (for predict, classify, transfer or the model base)")
    pt.add_argument("name", choices=list(SHIPPED), help="the model: " + "; ".join(
        f"{model.name}: {model.what}" for model in SHIPPED.values()))
    add_output(pt, "output", help="the package (zip)")
    add_output(pt, "--evaluation", metavar="FILE", help="also write its evaluation on held-out images (the table "
               "of evaluate, TSV), for install_model --evaluation")


STEP_PARSERS = (
    _preprocess, _segment_classic, _geojson_to_labels, _auto_annotate, _pixel_classifier_train,
    _pixel_classifier_predict, _object_classifier_train, _object_classifier_apply, _count_cells, _train, _transfer,
    _predict, _classify, _evaluate, _view, _crossval, _cohort, _omero_fetch, _omero_push, _deposit, _deposit_upload, _install_model,
    _pretrained)
"""One function per step adds its arguments, in the order ``dlhisto --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dlhisto", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dlhisto {__version__}")
    parser.add_argument("--threads", type=_thread_count, metavar="N",
                        help="CPU threads of each library (Galaxy: the job's GALAXY_SLOTS; default: one per core)")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for add_step in STEP_PARSERS:
        add_step(steps)
    return parser
