"""The ``dlhisto`` command: one subcommand per analysis step (each one a Galaxy tool). Each
``run_<step>`` reads its arguments (:mod:`parser`), builds the options, calls the step's
function of the package and writes what it returns.

Errors in the input end the command with one line on stderr and exit status 2; no output file
is left behind. Unexpected errors (bugs) give one line too, and the traceback with
``DLHISTO_DEBUG=1``. Run as the ``dlhisto`` command, each step runs in a confined child process
(:mod:`confine`): it reads only the files its input arguments name (:data:`parser.INPUT_FILES`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from ..imaging import stain
from ..classic.annotation import AutoAnnotateOptions
from ..classic.segmentation import MAX_DISTANCE, ClassicOptions, segment_classic
from .parser import INPUT_FILES, build_parser
from .confine import Confinement, run_confined
from .confine import mode as confine_mode
from ..dl.options import ClassifyOptions, DataOptions, PredictOptions, TrainOptions, TransferOptions
from ..base.errors import InputError, one_line, quiet_libraries
from ..imaging.features import FeatureSettings
from ..classic.object_classes import read_object_classes
from ..classic.object_features import ObjectFeatureOptions
from ..io.geojson import ExportOptions, ImportOptions, geojson_to_labels, labels_to_geojson, write_features
from ..ml.pixel_classifier import ForestOptions
from ..io.images import read_image, single_channel
from ..io.writers import write_image, write_labels
from ..io.inputs import pair_by_name
from ..classic.measure import write_objects
from ..base.bounds import check_number, options_from
from ..io.outputs import Cancelled, cancel_on_signals, check_outputs, outputs_together
from ..imaging.preprocessing import PreprocessOptions, check_stain_reference, preprocess
from ..io.slides import downsample_to_slide
from ..io.tables import write_row, write_table
from ..base.threads import limit_threads


def run_preprocess(args: argparse.Namespace) -> None:
    options = options_from(args, PreprocessOptions, channel=_from_one(args.channel),
                           ridge_sigmas=tuple(_numbers(args.ridge_sigmas, "ridge sigmas")),
                           normalize=tuple(args.normalize) if args.normalize else None)
    reference = _stain_reference(args)
    if args.stain_reference_out and reference is None:
        raise InputError("a stain reference is used only with --stain-normalization")
    with outputs_together(args.output, args.stain_reference_out) as (output, reference_out):
        if options.stain_only and options.input_pixel_size is None:  # tile by tile: slides of any size
            stain.normalize_slide(args.input, output, reference, name=args.image_name)
        else:
            result = preprocess(read_image(args.input, args.image_name), options, reference)
            write_image(output, result.data, result.pixel_size)
        if reference_out:
            stain.save(reference, reference_out)


def run_segment_classic(args: argparse.Namespace) -> None:
    image = read_image(args.input, args.image_name)
    plane = single_channel(image.data, _from_one(args.channel))
    result = segment_classic(plane, options_from(args, ClassicOptions))
    with outputs_together(args.labels, args.measurements, args.summary, args.geojson) as (*paths, geojson):
        write_objects(*paths, result.labels, plane, image.pixel_size, _name(args.input, args.image_name),
                      threshold=result.threshold)
        if geojson:
            labels_to_geojson(result.labels, geojson, options_from(args, ExportOptions), plane, image.pixel_size)


def run_geojson_to_labels(args: argparse.Namespace) -> None:
    options = options_from(args, ImportOptions, classes=tuple(_split(args.classes)))
    with outputs_together(args.output) as (output,):
        result = geojson_to_labels(args.geojson, args.image, output, options, pixel_size=args.pixel_size,
                                   name=_name(args.geojson, args.geojson_name), image_name=args.image_name)
    _log(result.describe())


def run_auto_annotate(args: argparse.Namespace) -> None:
    from ..classic import annotation

    reference = read_image(args.reference, args.reference_name)
    marker = read_image(args.marker, args.marker_name)
    options = options_from(args, AutoAnnotateOptions, segmentation=options_from(args, ClassicOptions),
                           marker_channel=_from_one(args.marker_channel))
    labels, found, warped_marker = annotation.auto_annotate(reference, marker, options)
    row = annotation.report_row(found, labels, args.output, _name(args.reference, args.reference_name),
                                _name(args.marker, args.marker_name))
    with outputs_together(args.labels, args.report, args.warped_marker) as (labels_path, report, warped):
        write_labels(labels_path, labels, reference.pixel_size)
        write_row(report, row)
        if warped:
            write_image(warped, warped_marker, reference.pixel_size)
    _log(annotation.describe(found))


def run_pixel_classifier_train(args: argparse.Namespace) -> None:
    from ..ml import pixel_classifier  # scikit-learn and skops load only for the pixel classifier steps

    settings = FeatureSettings(features=tuple(_split(args.features)),
                               scales=tuple(_numbers(args.scales, "scales")), include_raw=args.include_raw)
    pairs = _pairs(args.image, args.annotation, args.image_name, args.annotation_name, "images", "annotations")
    validation = _pairs(args.validation_image, args.validation_annotation, args.validation_image_name,
                        args.validation_annotation_name, "validation images", "validation annotations")
    classifier = pixel_classifier.train(pairs, settings, _split(args.class_names) or None,
                                        options_from(args, pixel_classifier.ForestOptions), validation)
    with outputs_together(args.classifier, args.report) as (classifier_path, report):
        pixel_classifier.save(classifier, classifier_path)
        if report:
            write_table(report, *pixel_classifier.training_table(classifier))


def run_pixel_classifier_predict(args: argparse.Namespace) -> None:
    from ..ml import pixel_classifier

    classifier = pixel_classifier.load(args.classifier, args.classifier_name)
    objects = (args.objects, args.measurements, args.summary)
    if args.objects_class is None:
        if args.geojson:
            raise InputError("--geojson is written from the objects: give --objects-class")
        objects = (None,) * 3
    elif not all(objects):
        raise InputError("--objects-class needs --objects, --measurements and --summary")
    else:
        classifier.check_class(args.objects_class)  # before the work
        check_number(args.min_distance, "min distance", 1, MAX_DISTANCE)  # refused even when not splitting
    with outputs_together(args.probabilities, args.classes, *objects, args.geojson) \
            as (probabilities, classes, *objects, geojson):
        options = options_from(args, pixel_classifier.ClassifyPixelsOptions)
        pixel_classifier.classify_pixels(classifier, args.input, probabilities, classes, options, args.image_name)
        if args.objects_class is not None:
            summary = pixel_classifier.objects_of_class(
                classifier, classes, probabilities, args.objects_class, *objects, args.min_area,
                args.min_distance if args.split_touching else None, _name(args.input, args.image_name), args.tile_size)
        if geojson:
            working = pixel_classifier.working_pixel_size(classifier, args.input, options, args.image_name)
            export = options_from(args, ExportOptions, class_name=summary["object_class"],
                                  class_index=args.objects_class - 1,
                                  downsample=downsample_to_slide(args.input, args.image_name, working))
            labels_to_geojson(objects[0], geojson, export)


def run_object_classifier_train(args: argparse.Namespace) -> None:
    from ..ml import object_classifier

    if not len(args.image) == len(args.labels) == len(args.classes):
        raise InputError(f"{len(args.image)} images, {len(args.labels)} label images and {len(args.classes)} class "
                         "files: give one of each per image")
    class_names = _split(args.class_names)
    examples = []
    for (image, image_name), (labels, labels_name), (classes, classes_name) in zip(
            _named(args.image, args.image_name), _named(args.labels, args.labels_name),
            _named(args.classes, args.classes_name)):
        found = object_classifier.read_object_classes(
            classes, labels, class_names=class_names, name=classes_name, labels_name=labels_name,
            downsample=_labels_to_slide(labels, labels_name, image, image_name))
        examples.append((image, labels, found, image_name, labels_name))
    classifier = object_classifier.train(examples, class_names or None, options_from(args, ForestOptions),
                                         options_from(args, ObjectFeatureOptions))
    with outputs_together(args.classifier, args.report) as (classifier_path, report):
        object_classifier.save(classifier, classifier_path)
        if report:
            write_table(report, *object_classifier.training_table(classifier))
    _log(f"{classifier.training['objects']} objects of {len(classifier.class_names)} classes: out-of-bag accuracy "
         f"{classifier.training['out_of_bag_accuracy']:.3f}")


def run_object_classifier_apply(args: argparse.Namespace) -> None:
    from ..ml import object_classifier

    if args.type_map:
        names = _split(args.class_names)
        if not names:
            raise InputError("--type-map needs --class-names: the names of types 1..K")
        result = object_classifier.type_objects(args.labels, args.type_map, names, args.labels_name,
                                                args.classifier_name)
    elif args.class_names:
        raise InputError("--class-names goes with --type-map; a classifier knows its classes")
    else:
        classifier = object_classifier.load(args.classifier, args.classifier_name)
        result = object_classifier.classify_objects(classifier, args.input, args.labels, args.image_name,
                                                    args.labels_name)
    with outputs_together(args.table, args.geojson) as (table, geojson):
        write_table(table, result.rows(), result.columns())
        if geojson:
            export = options_from(args, ExportOptions, downsample=_labels_to_slide(args.labels, args.labels_name,
                                                                                   args.input, args.image_name))
            write_features(geojson, object_classifier.classified_features(args.labels, result.as_object_classes(),
                                                                          export, args.labels_name))
    counts = np.bincount(result.classes, minlength=len(result.class_names) + 1)
    _log(f"{len(result.classes)} objects: " + ", ".join(f"{n} {c}" for c, n in zip(result.class_names, counts[1:]))
         + (f", {counts[0]} without a type" if counts[0] else ""))


def run_count_cells(args: argparse.Namespace) -> None:
    from ..classic.cell_counts import CountOptions, count_cells, write_counts
    from ..classic.object_classes import kind_of

    downsample = _labels_to_slide(args.labels, args.labels_name, args.image, None) if args.image else 1.0
    classes = read_object_classes(args.classes, args.labels, class_names=_split(args.class_names),
                                  name=args.classes_name, labels_name=args.labels_name, downsample=downsample) \
        if args.classes else None
    regions_kind = "geojson" if args.regions and kind_of(args.regions) == "geojson" else "class_map"
    rows = count_cells(args.labels, classes, args.regions, regions_kind,
                       CountOptions(downsample=downsample, region_names=tuple(_split(args.region_names))),
                       args.image_name or _name(args.labels, args.labels_name), args.labels_name, args.regions_name)
    write_counts(args.table, rows)
    _log("; ".join(f"{r['region']}: {r['count']} cells" for r in rows if r["cell_type"] == "all"))


def run_view(args: argparse.Namespace) -> None:
    from ..view.layers import ViewOptions
    from ..view.page import make_viewer

    summary = make_viewer(args.input, args.page, args.files_dir, _named(args.objects, args.objects_name),
                          _named(args.regions, args.regions_name), _named(args.heatmap, args.heatmap_name),
                          options_from(args, ViewOptions), args.image_name, args.files_url,
                          args.threads or os.cpu_count() or 1)
    _log("; ".join([f"{summary.width} x {summary.height} px in {summary.levels} zoom levels",
                    *(f"{name}: {count if count is not None else 'heatmap'}" for name, _, count in summary.layers)]))


def run_cohort(args: argparse.Namespace) -> None:
    from ..study.cohort import compare_samples, write_cohort
    from ..study.sample_classifier import SampleClassifierOptions

    cohort = compare_samples(_named(args.table, args.table_name), args.sample_sheet, args.sample_sheet_name,
                             args.group_column, options_from(args, SampleClassifierOptions))
    with outputs_together(args.readouts, args.comparison, args.classification, args.report) as paths:
        write_cohort(cohort, *paths, group_column=args.group_column)
    scores = {s["score"]: s for s in cohort.classification.scores}
    _log(f"{len(cohort.readouts.rows)} samples, {len(cohort.readouts.features)} readouts, "
         f"{sum(r['q_value'] < 0.05 for r in cohort.comparison)} differ between groups at q < 0.05; cross-validated "
         f"balanced accuracy {scores['balanced_accuracy']['value']:.3g}, ROC AUC {scores['roc_auc']['value']:.3g}")


def _labels_to_slide(labels: str, labels_name: str | None, image: str, image_name: str | None) -> float:
    """Slide pixels per label pixel: the labels' pixel size / the slide's when both record one, else 1."""
    from ..io.slides import image_reader

    with image_reader(labels, labels_name) as reader:
        labels_pixel_size = reader.pixel_size[1] if reader.pixel_size else None
    with image_reader(image, image_name) as reader:
        known = reader.pixel_size is not None
    return downsample_to_slide(image, image_name, labels_pixel_size) if known else 1.0


def run_train(args: argparse.Namespace) -> None:
    from ..dl import training  # torch loads only for the deep-learning steps

    trained = training.train(**_training_inputs(args), validation=_validation(args), architecture=args.architecture,
                             encoder=args.encoder, checkpoint=args.checkpoint, log=_log)
    trained.save(args.model, args.history, args.curve, name=args.model_name, author=args.author)


def run_transfer(args: argparse.Namespace) -> None:
    from ..dl import training

    trained = training.transfer((args.pretrained, _name(args.pretrained, args.pretrained_name)),
                                **_training_inputs(args), phases=options_from(args, TransferOptions),
                                architecture=args.architecture, encoder=args.encoder, checkpoint=args.checkpoint,
                                log=_log)
    trained.save(args.model, args.history, args.curve, name=args.model_name, author=args.author)


def _training_inputs(args: argparse.Namespace) -> dict:
    """The keyword arguments that train and transfer share: the data and the options."""
    return dict(
        images=_named(args.image, args.image_name), labels=_named(args.labels, args.labels_name) or None,
        targets=_named(args.target, args.target_name) or None,
        tile_classes=(args.tile_classes, _name(args.tile_classes, args.tile_classes_name))
        if args.tile_classes else None,
        class_names=_split(args.class_names) or None,
        data=options_from(args, DataOptions), options=options_from(args, TrainOptions),
        stain_reference=_stain_reference(args))


def _validation(args: argparse.Namespace) -> tuple[list, list] | None:
    """The --validation-image / --validation-labels pairs as train's ``validation``, or None."""
    pairs = _pairs(args.validation_image, args.validation_labels, args.validation_image_name,
                   args.validation_labels_name, "validation images", "validation label images")
    return ([(a, a_name) for a, _, a_name, _ in pairs], [(b, b_name) for _, b, _, b_name in pairs]) if pairs else None


def run_predict(args: argparse.Namespace) -> None:
    from ..dl.prediction import predict  # torch loads only for the deep-learning steps

    summary = predict((args.model, _name(args.model, args.model_name)), (args.input, args.image_name),
                      options_from(args, PredictOptions), probabilities=args.probabilities, classes=args.classes,
                      objects=args.objects, predicted_image=args.predicted_image, summary=args.summary,
                      geojson=args.geojson, geojson_options=options_from(args, ExportOptions),
                      stain_reference=_stain_reference(args))
    _log(summary.describe())


def run_classify(args: argparse.Namespace) -> None:
    from ..dl import classification

    rows = classification.classify((args.model, _name(args.model, args.model_name)),
                                _named(args.image, args.image_name), options_from(args, ClassifyOptions), args.table,
                                args.geojson)
    _log(classification.describe(rows, by_tile=bool(args.tile_size)))


def run_evaluate(args: argparse.Namespace) -> None:
    from ..evaluation.scoring import evaluate

    scores = evaluate(_named(args.prediction, args.prediction_name), _named(args.truth, args.truth_name), args.mode,
                      _numbers(args.thresholds, "IoU thresholds"), _split(args.class_names) or None,
                      _named(args.image, args.image_name) or None,
                      _named(args.truth_classes, args.truth_classes_name) or None,
                      _named(args.prediction_classes, args.prediction_classes_name) or None)
    with outputs_together(args.table, args.confusion, args.report) as paths:  # all three or none
        scores.write(*paths)
    _log(scores.describe())


def run_crossval(args: argparse.Namespace) -> None:
    from ..study import crossval

    pool = [crossval.AnnotatedImage(image, labels, name) for image, labels, name, _ in
            _pairs(args.image, args.labels, args.image_name, None, "images", "label images for --labels")]
    test = [crossval.AnnotatedImage(image, labels, name) for image, labels, name, _ in
            _pairs(args.test_image, args.test_labels, args.test_image_name, None, "test images",
                   "label images for --test-labels")]
    options = options_from(args, crossval.CrossValOptions, classic=options_from(args, ClassicOptions),
                           sigmas=tuple(_numbers(args.sigmas, "sigmas")), train=options_from(args, TrainOptions),
                           data=options_from(args, DataOptions, task=args.task))
    rows = crossval.cross_validate(pool, test, options, log=_log)
    write_table(args.table, rows, list(dict.fromkeys(key for row in rows for key in row)))
    for line in crossval.describe(rows, options):
        _log(line)


def run_omero_fetch(args: argparse.Namespace) -> None:
    from ..share import omero

    with omero.connect(omero.read_credentials(args.credentials)) as session:
        omero.fetch(session, args.image_id or [], args.dataset_id or [], args.output_dir, args.rois, args.annotations,
                    log=_log)


def run_omero_push(args: argparse.Namespace) -> None:
    from ..share import omero
    from ..io.images import read_labels

    credentials = omero.read_credentials(args.credentials)
    if args.image_id_from_name:
        if not args.labels:
            raise InputError("--image-id-from-name reads the id from the label image's name: give --labels")
        args.image_id = omero.image_id_from_name(_name(args.labels, args.labels_name))
    labels = read_labels(args.labels, args.labels_name) if args.labels else None
    if args.classes and labels is None:
        raise InputError("--classes are the classes of the objects of --labels: give --labels")
    classes = read_object_classes(args.classes, labels.data, class_names=_split(args.class_names),
                                  name=args.classes_name, labels_name=args.labels_name) if args.classes else None
    key_values = [omero.key_value(text) for text in args.key_value or []]
    attachments = _named(args.attach, args.attach_name)
    with omero.connect(credentials) as session:
        rows = omero.push(session, args.image_id, labels and labels.data, args.shape, args.roi_name, attachments,
                          key_values, labels and labels.pixel_size, classes)
    if args.table:
        write_table(args.table, rows, omero.PUSHED_COLUMNS)
    _log(f"OMERO image {args.image_id}: {sum(r['kind'] == 'roi' for r in rows)} ROIs, "
         f"{len(attachments)} file(s), {len(key_values) + 1 + (labels is not None)} key-value pairs")


def run_deposit(args: argparse.Namespace) -> None:
    from ..share import deposit

    files = deposit.DepositFiles(
        images=_named(args.image, args.image_name), labels=_named(args.labels, args.labels_name),
        tables=_named(args.table, args.table_name),
        model=(args.model, _name(args.model, args.model_name)) if args.model else None)
    bundle = deposit.deposit(args.metadata, files, args.bundle, args.report, args.validator_python, args.pixel_size)
    _log(bundle.describe())


def run_deposit_upload(args: argparse.Namespace) -> None:
    from ..share import deposit

    if not args.network:
        raise InputError("uploading needs the network: add --network to send the bundle to the archive")
    user, password = os.environ.get("BIA_FTP_USER"), os.environ.get("BIA_FTP_PASSWORD")
    if not user or not password:
        raise InputError("set BIA_FTP_USER and BIA_FTP_PASSWORD (from the archive's submission tool)")
    sent = deposit.upload(args.bundle, args.host, args.folder, user, password)
    _log(f"{sent} files uploaded to {args.host}/{args.folder}; finish the submission in the archive's "
         "submission tool")


def run_install_model(args: argparse.Namespace) -> None:
    from ..models.model_base import install_from_data_manager
    from ..models.shipped import pretrained_model

    with tempfile.TemporaryDirectory(prefix="dlhisto-install-") as work:
        if args.pretrained:  # the shipped model's package, and its held-out evaluation unless one is given
            args.model = str(pretrained_model(args.pretrained, Path(work) / f"{args.pretrained}.zip",
                                              Path(work) / "held_out_evaluation.tsv"))
            args.model_name = args.model_name or args.pretrained
            if not args.evaluation:
                args.evaluation = str(Path(work) / "held_out_evaluation.tsv")
                args.evaluation_name = "held-out images (scripts/build_pretrained.py)"
        row = install_from_data_manager(args.model, args.data_manager_json, _name(args.model, args.model_name),
                                        args.id, args.description, args.evaluation,
                                        args.evaluation and _name(args.evaluation, args.evaluation_name))
    _log(f"'{row['name']}' goes into the model base as '{row['value']}' ({row['task']}, {row['channels']} "
         f"channel(s){', ' + row['pixel_size'] + ' µm' if row['pixel_size'] else ''})")


def run_pretrained(args: argparse.Namespace) -> None:
    from ..models.shipped import pretrained_model

    pretrained_model(args.name, args.output, args.evaluation)
    _log(f"{args.name}: written to {args.output}")


STEPS = {name[4:]: function for name, function in globals().items() if name.startswith("run_")}
"""The function that runs each subcommand of :func:`parser.build_parser`."""


def _python_environments(python: str) -> list[Path]:
    """The folders of a Python's virtual environment and of the installation it was made from
    (each a folder with a ``pyvenv.cfg`` or a ``lib/python3.*``); nothing else around the program."""
    found = []
    for program in (Path(python).absolute(), Path(python).resolve()):
        prefix = program.parent.parent
        if (prefix / "pyvenv.cfg").is_file() or any(prefix.glob("lib/python3.*")):
            found.append(prefix)
    return found


def _stain_reference(args: argparse.Namespace):
    """The stain reference of --stain-normalization and --stain-reference (fitted or loaded), or None."""
    if not args.stain_normalization:
        if args.stain_reference:
            raise InputError("a stain reference is used only with --stain-normalization")
        return None
    if not args.stain_reference:
        raise InputError("--stain-normalization needs --stain-reference: an image to fit it on, or a saved one")
    name = _name(args.stain_reference, args.stain_reference_name)
    return check_stain_reference(stain.reference_from(args.stain_reference, args.stain_normalization, name),
                                 args.stain_normalization)


def _log(line: str) -> None:
    print(line, flush=True)


def _name(path: str, given: str | None) -> str:
    """The display name of an input: the --*-name given, or the file name."""
    return given or Path(path).name


def _names(given: list[str] | None, paths: list[str]) -> list[str]:
    """Display names of repeated inputs: the --*-name values, or the file names."""
    if given and len(given) != len(paths):
        raise InputError(f"{len(given)} names given for {len(paths)} files")
    return given or [Path(p).name for p in paths]


def _named(paths: list[str] | None, given: list[str] | None) -> list[tuple[str, str]]:
    """(path, display name) pairs of a repeated input (empty when it is not given)."""
    return list(zip(paths or [], _names(given, paths or [])))


def _pairs(first: list[str] | None, second: list[str] | None, first_names, second_names, what: str,
           other: str) -> list[tuple[str, str, str, str]]:
    """(first, second, first name, second name) of two repeated inputs given one for one."""
    if len(first or []) != len(second or []):
        raise InputError(f"{len(first or [])} {what} but {len(second or [])} {other}: give one per image")
    return [(a, b, a_name, b_name) for (a, a_name), (b, b_name) in
            zip(_named(first, first_names), _named(second, second_names))]


def _from_one(channel: int | None) -> int | None:
    """A channel counted from 1 on the command line, from 0 in Python."""
    return None if channel is None else channel - 1


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in _split(text)]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got '{text}'") from None


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _pair_by_name(args: argparse.Namespace) -> None:
    """Reorder the second input of each pair (and its names) to follow the first, by name."""
    for first, second, what, other, complete in args.pairs:
        paths = getattr(args, second)
        if not paths:
            continue
        names = _names(getattr(args, f"{first}_name"), getattr(args, first))
        other_names = _names(getattr(args, f"{second}_name"), paths)
        order = [k for k in pair_by_name(names, other_names, what, other, complete) if k is not None]
        setattr(args, second, [paths[k] for k in order])
        setattr(args, f"{second}_name", [other_names[k] for k in order])


def main(argv: list[str] | None = None, confine: bool | None = None) -> int:
    """Run one step from its command line; returns the exit status.

    ``confine``: run the step in a confined child process (:mod:`confine`); by default when
    run as the ``dlhisto`` command (``argv`` None), not when called from Python with ``argv``.
    """
    args = build_parser().parse_args(argv)
    prog = f"dlhisto {args.step}"
    confined = argv is None if confine is None else confine
    return _guarded(prog, functools.partial(_start, args, prog, confined))


def _start(args: argparse.Namespace, prog: str, confined: bool) -> int:
    """Check the outputs, then run the step here or in a confined child."""
    outputs, inputs = _outputs_and_inputs(args)
    check_outputs(outputs, inputs)
    if confined and confine_mode() != "off":
        return run_confined(functools.partial(_guarded, prog, functools.partial(_run, args)),
                            _confinement(args, outputs, inputs), functools.partial(_fail, prog))
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        limit_threads(args.threads)
    with cancel_on_signals():
        if getattr(args, "pair_by_name", False):
            _pair_by_name(args)
        STEPS[args.step](args)
    return 0


def _guarded(prog: str, run) -> int:
    """``run()``'s exit status, an error turned into its one line and exit status."""
    try:
        with quiet_libraries():
            return run()
    except Cancelled as exc:
        return _fail(prog, f"cancelled by {exc}; no output was written", 128 + exc.signum)
    except InputError as exc:
        return _fail(prog, str(exc), 2)
    except MemoryError:
        return _fail(prog, "out of memory; try a smaller image or tile size", 3)
    except OSError as exc:
        return _fail(prog, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 3)
    except Exception as exc:  # a bug: still one readable line for the Galaxy user
        if os.environ.get("DLHISTO_DEBUG"):
            traceback.print_exc()
        return _fail(prog, f"internal error: {type(exc).__name__}: {exc} "
                     "(please report it; DLHISTO_DEBUG=1 shows the traceback)", 4, label="")


NETWORK_STEPS = {"omero_fetch", "omero_push", "deposit_upload"}
"""Steps that talk to a server: confined like the others, but with TCP."""


def _confinement(args: argparse.Namespace, outputs: dict, inputs: list) -> Confinement:
    """What the step may touch: its inputs, its outputs, and the folders some steps write whole."""
    confinement = Confinement(read=[Path(p) for p in inputs], outputs=[Path(p) for p in outputs.values() if p],
                              network=args.step in NETWORK_STEPS)
    if getattr(args, "checkpoint", None):
        confinement.write.append(Path(args.checkpoint).resolve().parent)
    for folder in (getattr(args, "output_dir", None), getattr(args, "files_dir", None)):  # written whole
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            confinement.write.append(Path(folder))
    if args.step == "install_model":  # Galaxy's parameters, replaced by the row; the package's folder
        from ..models.model_base import data_manager_folder

        confinement.outputs.append(Path(args.data_manager_json))
        folder = Path(data_manager_folder(args.data_manager_json))
        folder.mkdir(parents=True, exist_ok=True)
        confinement.write.append(folder)
    if args.step == "deposit":
        from ..share.deposit import validator_python_path

        python = validator_python_path(args.validator_python)
        if python:  # the validator's environment, and the Python it was made from
            confinement.read += [Path(python).absolute(), *_python_environments(python)]
    return confinement


def _fail(prog: str, message: str, status: int, label: str = "error: ") -> int:
    """Print the one line Galaxy shows the user, and return the exit status."""
    print(f"{prog}: {label}{one_line(message, 1000)}", file=sys.stderr, flush=True)
    return status


def _outputs_and_inputs(args: argparse.Namespace) -> tuple[dict, list]:
    """The step's output paths, and the existing files and folders its input arguments name
    (:data:`parser.INPUT_FILES`)."""
    flags = getattr(args, "outputs", None) or {}
    outputs = {flag: getattr(args, dest) for dest, flag in flags.items()}
    inputs = []
    for dest in sorted(INPUT_FILES - set(flags)):
        value = getattr(args, dest, None)
        inputs += [item for item in (value if isinstance(value, list) else [value])
                   if isinstance(item, str) and os.path.exists(item)]
    return outputs, inputs

