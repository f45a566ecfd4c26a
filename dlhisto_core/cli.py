"""The ``dlhisto`` command: one subcommand per analysis step (each one a Galaxy tool).

Errors in the input end the command with one line on stderr and exit status 2; no output file
is left behind. Unexpected errors (bugs) give one line too, and the traceback with
``DLHISTO_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .annotation import AutoAnnotateOptions
from .classic import THRESHOLD_METHODS, ClassicOptions, objects_from_mask, segment_classic
from .dl_options import DataOptions, PredictOptions, TrainOptions, TransferOptions
from .errors import InputError, one_line
from .inputs import pair_by_name
from .features import FEATURES, FeatureSettings
from .image_io import TiledImageReader, check_pixel_size, read_image, single_channel, write_image, write_labels
from .measure import measure_objects, measurement_columns, summarize_objects
from .tables import write_table
from .metrics import IOU_THRESHOLDS
from .options import add_option, options_from
from .outputs import Cancelled, cancel_on_signals, check_outputs, outputs_together
from .preprocessing import PreprocessOptions, preprocess

if TYPE_CHECKING:  # the heavy modules load only in the steps that need them
    import numpy as np

class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like every other dlhisto error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_preprocess(args: argparse.Namespace) -> None:
    image = read_image(args.input, args.image_name)
    options = options_from(args, PreprocessOptions, channel=None if args.channel is None else args.channel - 1,
                           ridge_sigmas=tuple(_numbers(args.ridge_sigmas, "ridge sigmas")),
                           normalize=tuple(args.normalize) if args.normalize else None)
    result = preprocess(image, options)
    write_image(args.output, result.data, result.pixel_size)


def run_segment_classic(args: argparse.Namespace) -> None:
    image = read_image(args.input, args.image_name)
    plane = single_channel(image.data, None if args.channel is None else args.channel - 1)
    result = segment_classic(plane, options_from(args, ClassicOptions))
    with outputs_together(args.labels, args.measurements, args.summary) as paths:
        write_objects(args, *paths, result.labels, plane, image.pixel_size, threshold=result.threshold)


def write_objects(args: argparse.Namespace, labels_path, measurements_path, summary_path, labels, intensity,
                  pixel_size, **summary_extra) -> None:
    """Write a label image, its measurement table and its one-row summary."""
    rows = measure_objects(labels, intensity, pixel_size)
    summary = summarize_objects(rows, args.image_name or Path(args.input).name, labels.size, **summary_extra)
    write_labels(labels_path, labels, pixel_size)
    write_table(measurements_path, rows, measurement_columns(pixel_size))
    write_table(summary_path, [summary], list(summary))


def run_auto_annotate(args: argparse.Namespace) -> None:
    from .annotation import auto_annotate

    reference = read_image(args.reference, args.reference_name)
    marker = read_image(args.marker, args.marker_name)
    options = options_from(args, AutoAnnotateOptions, segmentation=options_from(args, ClassicOptions),
                           marker_channel=None if args.marker_channel is None else args.marker_channel - 1)
    labels, found, warped_marker = auto_annotate(reference, marker, options)
    row = {"reference": args.reference_name or Path(args.reference).name,
           "marker": args.marker_name or Path(args.marker).name, "method": found.method,
           "rotation_deg": found.rotation_deg, "translation_x": found.translation[0],
           "translation_y": found.translation[1], "residual_px": found.residual_px, "matches": found.matches}
    if args.output == "instances":
        row["objects"] = int(labels.max())
    else:
        row["marked_fraction"] = float((labels > 0).mean())
    with outputs_together(args.labels, args.report, args.warped_marker) as (labels_path, report, warped):
        write_labels(labels_path, labels, reference.pixel_size)
        write_table(report, [row], list(row))
        if warped:
            write_image(warped, warped_marker, reference.pixel_size)
    print(f"marker registered onto the reference ({found.method}): rotation {found.rotation_deg:.2f} deg, "
          f"translation ({found.translation[0]:.1f}, {found.translation[1]:.1f}) px, residual "
          f"{found.residual_px:.2f} px over {found.matches} matched keypoints", flush=True)


def run_pixel_classifier_train(args: argparse.Namespace) -> None:
    from . import pixel_classifier  # scikit-learn and skops load only for the pixel classifier steps
    if len(args.image) != len(args.annotation):
        raise InputError(f"{len(args.image)} images but {len(args.annotation)} annotations: give one annotation per image")
    names = _names(args.image_name, args.image)
    annotation_names = _names(args.annotation_name, args.annotation)
    settings = FeatureSettings(features=tuple(_split(args.features)), scales=tuple(map(float, _split(args.scales))),
                               include_raw=not args.no_raw)
    validation = args.validation_image or []
    if len(validation) != len(args.validation_annotation or []):
        raise InputError("give one --validation-annotation per --validation-image")
    validation_pairs = list(zip(validation, args.validation_annotation or [],
                                _names(args.validation_image_name, validation),
                                _names(args.validation_annotation_name, args.validation_annotation or [])))
    classifier = pixel_classifier.train(list(zip(args.image, args.annotation, names, annotation_names)), settings,
                                        _split(args.class_names) or None, n_trees=args.trees, seed=args.seed,
                                        validation_pairs=validation_pairs)
    training = classifier.training
    columns = ["class", "annotated_pixels", "out_of_bag_accuracy"]
    if validation_pairs:
        columns += ["validation_pixels", "validation_accuracy"]
    rows = training["classes"] + [{"class": "all", **{c: training[c] for c in columns[1:]}}]
    with outputs_together(args.classifier, args.report) as (classifier_path, report):
        pixel_classifier.save(classifier, classifier_path)
        if report:
            write_table(report, rows, columns)


def run_pixel_classifier_predict(args: argparse.Namespace) -> None:
    from . import pixel_classifier
    classifier = pixel_classifier.load(args.classifier, args.classifier_name)
    if args.objects_class is not None:
        if not 1 <= args.objects_class <= classifier.n_classes:
            raise InputError(f"the classifier knows classes 1 to {classifier.n_classes}; "
                             f"class {args.objects_class} does not exist")
        if not (args.objects and args.measurements and args.summary):
            raise InputError("--objects-class needs --objects, --measurements and --summary")
    objects = (args.objects, args.measurements, args.summary) if args.objects_class is not None else (None,) * 3
    with outputs_together(args.probabilities, args.classes, *objects) as (probabilities, classes, *objects):
        pixel_size = pixel_classifier.classify_pixels(classifier, args.input, probabilities, classes,
                                                    args.tile_size, args.image_name)
        if args.objects_class is not None:
            class_map = read_image(classes).data
            with TiledImageReader(probabilities) as reader:
                probability = reader.read_region(0, 0, *class_map.shape)[..., args.objects_class - 1]
            labels = objects_from_mask(class_map == args.objects_class, args.min_area,
                                       args.min_distance if args.split_touching else None)
            write_objects(args, *objects, labels, probability, pixel_size,
                          object_class=classifier.class_names[args.objects_class - 1])


def run_train(args: argparse.Namespace) -> None:
    from . import training  # torch loads only for the deep-learning steps

    trained = training.train(**_training_inputs(args), architecture=args.architecture, encoder=args.encoder,
                             checkpoint=args.checkpoint, log=_log)
    trained.save(args.model, args.history, args.curve, name=args.model_name, author=args.author)


def run_transfer(args: argparse.Namespace) -> None:
    from . import training

    trained = training.transfer((args.pretrained, args.pretrained_name or Path(args.pretrained).name),
                                **_training_inputs(args), phases=options_from(args, TransferOptions), architecture=args.architecture,
                                encoder=args.encoder, checkpoint=args.checkpoint, log=_log)
    trained.save(args.model, args.history, args.curve, name=args.model_name, author=args.author)


def _training_inputs(args: argparse.Namespace) -> dict:
    """The keyword arguments that train and transfer share: the data and the options."""
    def named(paths, names):
        return list(zip(paths, _names(names, paths))) if paths else None

    return dict(
        images=named(args.image, args.image_name), labels=named(args.labels, args.labels_name),
        targets=named(args.target, args.target_name),
        tile_classes=(args.tile_classes, args.tile_classes_name or Path(args.tile_classes).name)
        if args.tile_classes else None,
        class_names=_split(args.class_names) or None,
        data=options_from(args, DataOptions), options=options_from(args, TrainOptions))


def _log(line: str) -> None:
    print(line, flush=True)


def run_predict(args: argparse.Namespace) -> None:
    from . import dl_predict, model_package  # torch loads only for the deep-learning steps

    model, spec, rdf = model_package.load_package(args.model, args.model_name)
    options = options_from(args, PredictOptions)
    model_name = args.model_name or Path(args.model).name
    if spec.task == "regression":
        _predict_image(args, model, spec, model_package.target_normalization(rdf, spec, model_name), options)
        return
    if args.predicted_image:
        raise InputError(f"'{model_name}' predicts classes ({spec.task} segmentation), not images; "
                         "ask for probabilities, classes or objects")
    with outputs_together(args.probabilities, args.classes, args.objects, args.summary) as paths:
        probabilities, classes, objects, summary_path = paths
        summary = dl_predict.predict_slide(model, spec, args.input, options, probabilities, classes, objects,
                                           args.image_name)
        if summary_path:
            class_names = rdf["outputs"][0]["axes"][1]["channel_names"]
            total = max(1, sum(summary.class_pixels))
            row = {"image": args.image_name or Path(args.input).name, "width": summary.shape[1],
                   "height": summary.shape[0], "windows": summary.windows, "skipped_windows": summary.skipped}
            for name, count in zip(class_names, summary.class_pixels):
                row[f"{name}_fraction"] = count / total
            if summary.objects is not None:
                row["objects"] = summary.objects
            write_table(summary_path, [row], list(row))
    print(f"{summary.windows} windows, {summary.skipped} skipped as background"
          + ("" if summary.objects is None else f", {summary.objects} objects") + f" ({summary.device})", flush=True)


def _predict_image(args: argparse.Namespace, model, spec, target_normalization: dict, options) -> None:
    """predict with a regression model: the predicted image and its summary."""
    from . import dl_predict

    if args.probabilities or args.classes or args.objects or not args.predicted_image:
        raise InputError(f"'{args.model_name or Path(args.model).name}' predicts images (regression): "
                         "ask for --predicted-image, not probabilities, classes or objects")
    with outputs_together(args.predicted_image, args.summary) as (predicted_image, summary_path):
        summary = dl_predict.predict_image(model, spec, args.input, options, predicted_image, target_normalization,
                                           args.image_name)
        if summary_path:
            row = {"image": args.image_name or Path(args.input).name, "width": summary.shape[1],
                   "height": summary.shape[0], "windows": summary.windows}
            row.update({f"mean_channel_{k + 1}": mean for k, mean in enumerate(summary.channel_means)})
            write_table(summary_path, [row], list(row))
    print(f"{summary.windows} windows, image of {spec.n_classes} channel(s) predicted ({summary.device})", flush=True)


def run_classify(args: argparse.Namespace) -> None:
    from . import dl_classify, model_package

    model, spec, rdf = model_package.load_package(args.model, args.model_name)
    class_names = rdf["outputs"][0]["axes"][1]["channel_names"]
    images = list(zip(args.image, _names(args.image_name, args.image)))
    rows = list(dl_classify.classify(model, spec, class_names, images, args.tile_size, args.batch_size, args.device))
    write_table(args.table, rows, ["image", "x", "y", "width", "height", "class", *[f"p_{c}" for c in class_names]])
    counts = {c: sum(r["class"] == c for r in rows) for c in class_names}
    print(f"{len(rows)} {'tiles' if args.tile_size else 'images'}: "
          + ", ".join(f"{n} {c}" for c, n in counts.items()), flush=True)


def run_evaluate(args: argparse.Namespace) -> None:
    with outputs_together(args.table, args.confusion, args.report) as paths:  # all three or none
        _evaluate(args, *paths)


def _evaluate(args: argparse.Namespace, table, confusion_path, report_path) -> None:
    from . import evaluate, report

    if args.mode == "classification":
        _evaluate_tile_classes(args, table, confusion_path, report_path)
        return
    if len(args.truth) != len(args.prediction):
        raise InputError(f"{len(args.prediction)} predictions but {len(args.truth)} ground truths: give one per prediction")
    prediction_names = _names(args.prediction_name, args.prediction)
    if args.mode == "restoration":
        loaded = evaluate.load_restoration_pairs(list(zip(args.truth, args.prediction,
                                                          _names(args.truth_name, args.truth), prediction_names)))
        rows = evaluate.restoration_rows(loaded)
        write_table(table, rows, list(rows[0]))
        if report_path:
            report.restoration_report(report_path, rows, loaded)
        print(f"{len(rows) - 1} image(s): PSNR {rows[-1]['psnr']:.2f} dB, SSIM {rows[-1]['ssim']:.3f}, "
              f"NRMSE {rows[-1]['nrmse']:.4f}", flush=True)
        return
    loaded = evaluate.load_pairs(list(zip(args.truth, args.prediction, _names(args.truth_name, args.truth),
                                          prediction_names)))
    backgrounds = None
    if args.image:
        if len(args.image) != len(args.prediction):
            raise InputError(f"{len(args.image)} images for {len(args.prediction)} predictions: give one per prediction")
        backgrounds = {name: _background_image(path, image_name, truth.shape)
                       for path, image_name, name, (truth, _, _) in
                       zip(args.image, _names(args.image_name, args.image), prediction_names, loaded)}
    if args.mode == "instance":
        thresholds = [float(t) for t in _split(args.thresholds)]
        if not thresholds or not all(0 < t <= 1 for t in thresholds):
            raise InputError(f"IoU thresholds must be between 0 and 1, got '{args.thresholds}'")
        rows = evaluate.instance_rows(loaded, thresholds)
        write_table(table, rows, list(rows[0]))
        if report_path:
            report.instance_report(report_path, rows, loaded, backgrounds)
        pooled = next(r for r in rows if r["image"] == evaluate.ALL_IMAGES)  # at the first threshold
        print(f"{len(loaded)} image(s), IoU {pooled['threshold']:g}: {pooled['tp']} matched, {pooled['fp']} false "
              f"positives, {pooled['fn']} missed; F1 {pooled['f1']:.3f}, AJI {pooled['aji']:.3f}", flush=True)
    else:
        rows, confusion = evaluate.class_rows(loaded, _split(args.class_names) or None)
        names = evaluate.class_list(_split(args.class_names), len(confusion))
        write_table(table, rows, list(rows[0]))
        _write_confusion(confusion_path, confusion, names)
        if report_path:
            report.class_report(report_path, rows, confusion, names, loaded, backgrounds)


def _evaluate_tile_classes(args: argparse.Namespace, table, confusion_path, report_path) -> None:
    from . import evaluate, report

    if len(args.truth) != 1:
        raise InputError(f"classification takes one table of true classes, got {len(args.truth)}")
    truth_name = _names(args.truth_name, args.truth)[0]
    rows, confusion, names = evaluate.evaluate_tile_classes(
        list(zip(args.prediction, _names(args.prediction_name, args.prediction))), (args.truth[0], truth_name),
        _split(args.class_names) or None)
    write_table(table, rows, ["class", "tiles", "predicted", "precision", "recall", "f1", "accuracy",
                              "balanced_accuracy"])
    _write_confusion(confusion_path, confusion, names)
    if report_path:
        report.classification_report(report_path, rows, confusion, names)
    overall = rows[-1]
    print(f"{overall['tiles']} images or tiles: accuracy {overall['accuracy']:.3f}, balanced accuracy "
          f"{overall['balanced_accuracy']:.3f}", flush=True)


def _write_confusion(path, confusion, names: list[str]) -> None:
    if path:
        write_table(path, [{"true class": n, **dict(zip(names, map(int, row)))} for n, row in zip(names, confusion)],
                    ["true class", *names])


def _background_image(path: str, name: str, shape: tuple) -> "np.ndarray":
    """The image a prediction was made from, to draw the errors on."""
    data = read_image(path, name).data
    if data.shape[:2] != shape:
        raise InputError(f"image '{name}' ({data.shape[1]}x{data.shape[0]}) differs in size from its prediction "
                         f"({shape[1]}x{shape[0]})")
    return data


def run_crossval(args: argparse.Namespace) -> None:
    from . import crossval

    def annotated(images, labels, image_names, labels_option):
        if len(images or []) != len(labels or []):
            raise InputError(f"{len(images or [])} images but {len(labels or [])} label images for {labels_option}: "
                             "give one per image")
        return [crossval.AnnotatedImage(image, label, name)
                for image, label, name in zip(images or [], labels or [], _names(image_names, images or []))]

    pool = annotated(args.image, args.labels, args.image_name, "--labels")
    test = annotated(args.test_image, args.test_labels, args.test_image_name, "--test-labels")
    overlap = sorted({i.name for i in pool} & {i.name for i in test})
    if overlap:
        raise InputError(f"image '{overlap[0]}' is both in the cross-validation pool and in the test set")
    options = options_from(args, crossval.CrossValOptions, classic=options_from(args, ClassicOptions),
                           sigmas=tuple(_numbers(args.sigmas, "sigmas")))
    rows = crossval.cross_validate(pool, test, options, log=_log)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_table(args.table, rows, columns)
    for row in rows[-4:]:
        if row["fold"] == "mean":
            key = crossval.INSTANCE_SCORES[0] if args.task == "instance" else "mean_iou"
            sd = next(r for r in rows if r["fold"] == "sd" and r["role"] == row["role"])[key]
            print(f"{row['role']}: {key} {row[key]:.3f} +- {sd:.3f} over {args.folds} folds", flush=True)


def run_omero_fetch(args: argparse.Namespace) -> None:
    from . import omero

    credentials = omero.read_credentials(args.credentials)
    out = Path(args.output_dir)
    with omero.connect(credentials) as session:
        image_ids = list(args.image_id or [])
        for dataset_id in args.dataset_id or []:
            image_ids += session.dataset_image_ids(dataset_id)
        if not image_ids:
            raise InputError("give at least one --image-id or --dataset-id")
        roi_rows, annotation_rows = [], []
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=_existing_dir(out)) as work:
            work = Path(work)
            (work / "images").mkdir()
            (work / "labels").mkdir()
            for image_id in dict.fromkeys(image_ids):
                fetched = session.fetch_image(image_id)
                file_name = f"{image_id}_{_safe_name(fetched.name)}.ome.tif"
                write_image(work / "images" / file_name, fetched.pixels, fetched.pixel_size)
                labels, rois = omero.rois_to_labels(session.rois(image_id), fetched.pixels.shape[:2])
                write_labels(work / "labels" / file_name, labels, fetched.pixel_size)
                roi_rows += [{"image_id": image_id, "image": fetched.name, "label": k, "roi_id": roi.id,
                              "name": roi.name, "shapes": ",".join(roi.shapes), "text": roi.text}
                             for k, roi in enumerate(rois, 1)]
                annotation_rows += [{"image_id": image_id, "image": fetched.name, **row}
                                    for row in session.annotations(image_id)]
                print(f"image {image_id} '{fetched.name}': {fetched.pixels.shape[1]}x{fetched.pixels.shape[0]}, "
                      f"{len(rois)} ROIs", flush=True)
            with outputs_together(args.rois, args.annotations) as (rois, annotations):  # with the images, or none
                if rois:
                    write_table(rois, roi_rows, ["image_id", "image", "label", "roi_id", "name", "shapes", "text"])
                if annotations:
                    write_table(annotations, annotation_rows, ["image_id", "image", "kind", "namespace", "key",
                                                               "value"])
                for folder in ("images", "labels"):
                    (out / folder).mkdir(exist_ok=True)
                    for path in sorted((work / folder).iterdir()):
                        os.replace(path, out / folder / path.name)


def run_omero_push(args: argparse.Namespace) -> None:
    from . import __version__, omero
    from .image_io import read_labels

    credentials = omero.read_credentials(args.credentials)
    if args.image_id_from_name:
        if not args.labels:
            raise InputError("--image-id-from-name reads the id from the label image's name: give --labels")
        args.image_id = _image_id_from_name(args.labels_name or Path(args.labels).name)
    labels = read_labels(args.labels, args.labels_name).data if args.labels else None
    pairs = [("dlhisto.version", __version__)] + [_key_value(text) for text in args.key_value or []]
    if args.attach_name and len(args.attach_name) != len(args.attach or []):
        raise InputError(f"{len(args.attach_name)} names for {len(args.attach or [])} attached files")
    attachments = list(zip(args.attach or [], args.attach_name or [Path(p).name for p in args.attach or []]))
    rows = []
    with omero.connect(credentials) as session:
        session.image(args.image_id)  # an unknown image fails before anything is written
        if labels is not None:
            roi_ids = session.push_labels(args.image_id, labels, args.shape, args.roi_name)
            rows += [{"image_id": args.image_id, "kind": "roi", "id": i} for i in roi_ids]
            pairs.append(("dlhisto.rois", str(len(roi_ids))))
        for path, name in attachments:
            rows.append({"image_id": args.image_id, "kind": "file", "name": name,
                         "id": session.attach_file(args.image_id, path, name, _mimetype(name))})
        rows.append({"image_id": args.image_id, "kind": "map", "id": session.add_key_values(args.image_id, pairs)})
    if args.table:
        write_table(args.table, rows, ["image_id", "kind", "id", "name"])
    print(f"OMERO image {args.image_id}: {sum(r['kind'] == 'roi' for r in rows)} ROIs, "
          f"{len(attachments)} file(s), {len(pairs)} key-value pairs", flush=True)


def run_deposit(args: argparse.Namespace) -> None:
    from . import deposit

    files = deposit.DepositFiles(
        images=list(zip(args.image, _names(args.image_name, args.image))),
        labels=list(zip(args.labels or [], _names(args.labels_name, args.labels or []))),
        tables=list(zip(args.table or [], _names(args.table_name, args.table or []))),
        model=(args.model, args.model_name or Path(args.model).name) if args.model else None)
    form = deposit.read_metadata(args.metadata, with_labels=bool(files.labels), with_model=bool(files.model))
    pixel_size = (args.pixel_size, args.pixel_size) if args.pixel_size is not None else None
    if pixel_size is not None:
        check_pixel_size(pixel_size, "--pixel-size is")
    with outputs_together(args.bundle, args.report) as (bundle_path, report_path):
        bundle = deposit.build(form, files, bundle_path, args.validator_python, pixel_size)
        report = {"bundle": Path(args.bundle).name, "files": bundle.files, **bundle.validation}
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    warnings = sum(len(v) for k, v in bundle.validation.get("issues", {}).items() if k == "WARNING")
    print(f"bundle of {len(bundle.files)} files accepted by bia-ro-crate-validator {bundle.validation['validator']}"
          f" ({warnings} warnings)", flush=True)


def run_deposit_upload(args: argparse.Namespace) -> None:
    from . import deposit

    if not args.network:
        raise InputError("uploading needs the network: add --network to send the bundle to the archive")
    user, password = os.environ.get("BIA_FTP_USER"), os.environ.get("BIA_FTP_PASSWORD")
    if not user or not password:
        raise InputError("set BIA_FTP_USER and BIA_FTP_PASSWORD (from the archive's submission tool)")
    sent = deposit.upload(args.bundle, args.host, args.folder, user, password)
    print(f"{sent} files uploaded to {args.host}/{args.folder}; finish the submission in the archive's "
          "submission tool", flush=True)


def _existing_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe_name(name: str) -> str:
    """A file-name-safe form of an OMERO image name, without its extension."""
    stem = Path(name).name.split(".")[0]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:80] or "image"


def _image_id_from_name(name: str) -> int:
    """The OMERO image id that starts a name given by omero_fetch ('1201_slide_3' -> 1201)."""
    digits = name.split("_", 1)[0]
    if not digits.isdigit() or not digits.strip("0"):
        raise InputError(f"'{name}' does not start with an OMERO image id and '_' "
                         "(as the images of omero_fetch are named); give the image id instead")
    return int(digits)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"key-value pairs are written key=value, got '{text}'")
    return key.strip(), value.strip()


def _mimetype(name: str) -> str:
    import mimetypes
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in _split(text)]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got '{text}'") from None


def _names(given: list[str] | None, paths: list[str]) -> list[str]:
    """Display names of repeated inputs: the --*-name values, or the file names."""
    if given and len(given) != len(paths):
        raise InputError(f"{len(given)} names given for {len(paths)} files")
    return given or [Path(p).name for p in paths]


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def add_output(step: argparse.ArgumentParser, flag: str, **options) -> None:
    """An output file of the step: :func:`main` checks, before any work, that no two outputs
    share a path and that none would overwrite an input."""
    action = step.add_argument(flag, **options)
    step.set_defaults(outputs={**(step.get_default("outputs") or {}), action.dest: flag})


def add_pairing(step: argparse.ArgumentParser, *pairs: tuple[str, str, str, str, bool]) -> None:
    """--pair-by-name: the repeated inputs (first, second) of each pair are matched by their
    display names instead of their order (Galaxy collections, by element identifier); each pair
    is (first option, second option, what the first is, what the second is, whether every first
    needs a second)."""
    step.add_argument("--pair-by-name", action="store_true",
                      help="pair the repeated inputs by their names (--*-name), not by their order")
    step.set_defaults(pairs=pairs)


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


def add_image_name(step: argparse.ArgumentParser) -> None:
    step.add_argument("--image-name", metavar="NAME",
                      help="name of the input in messages and tables (default: its file name)")


def add_network_arguments(step: argparse.ArgumentParser, about: str = "") -> None:
    """--architecture and --encoder, with ModelSpec's defaults."""
    from .model_spec import ARCHITECTURE_NAMES, ENCODERS, ModelSpec

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
    add_option(step, options, "seed", help="default %(default)s")
    add_option(step, options, "device", help="default %(default)s")
    step.add_argument("--checkpoint", help="checkpoint file: written every epoch, resumed from if present")
    step.add_argument("--model-name", default="dlhisto U-Net", help="name of the model package")
    step.add_argument("--author", default="dlhisto user", help="author recorded in the model package")
    add_output(step, "--model", required=True, help="output bioimage.io model package (.zip)")
    add_output(step, "--history", help="output: per-epoch losses and validation score (JSON)")
    add_output(step, "--curve", help="output: training curve (PNG)")


TRAINING_PAIRS = (("image", "labels", "image", "label image", True), ("image", "target", "image", "target image", True))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dlhisto", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dlhisto {__version__}")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

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
    pre.set_defaults(func=run_preprocess)

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
    seg.set_defaults(func=run_segment_classic)

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
    aa.set_defaults(func=run_auto_annotate)

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
    train.add_argument("--features", default=",".join(FEATURES),
                       help=f"comma-separated filters (default: all of {', '.join(FEATURES)})")
    train.add_argument("--scales", default="0.7,1.6,3.5,5",
                       help="comma-separated Gaussian scales in pixels (default 0.7,1.6,3.5,5)")
    train.add_argument("--no-raw", action="store_true", help="do not use the unfiltered intensities as features")
    train.add_argument("--trees", type=int, default=100, help="number of trees (default 100)")
    train.add_argument("--seed", type=int, default=0, help="random seed (same seed, same classifier)")
    train.set_defaults(func=run_pixel_classifier_train)

    predict = steps.add_parser("pixel_classifier_predict",
                               help="classify every pixel of an image, tile by tile; optionally label objects")
    predict.add_argument("input", help="image to classify (TIFF, OME-TIFF, PNG, JPEG)")
    add_image_name(predict)
    predict.add_argument("--classifier", required=True, help="classifier from pixel_classifier_train")
    predict.add_argument("--classifier-name", help="display name of the classifier in messages")
    add_output(predict, "--probabilities", required=True, help="output: probability of each class (OME-TIFF)")
    add_output(predict, "--classes", required=True, help="output: class of each pixel, 1..K (OME-TIFF)")
    predict.add_argument("--tile-size", type=int, default=512, help="tile size in pixels (default 512)")
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
    predict.set_defaults(func=run_pixel_classifier_predict)

    tr = steps.add_parser("train", help="train a U-Net from annotated images; output a bioimage.io model package")
    add_training_arguments(tr)
    add_pairing(tr, TRAINING_PAIRS[0], TRAINING_PAIRS[1])
    add_network_arguments(tr)
    tr.set_defaults(func=run_train)

    tf = steps.add_parser("transfer", help="fine-tune a pretrained model (package or weights file) on new images")
    add_training_arguments(tf)
    add_pairing(tf, TRAINING_PAIRS[0], TRAINING_PAIRS[1])
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
    tf.set_defaults(func=run_transfer)

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
    add_option(pr, defaults, "skip_background",
               help="do not run the network on windows without tissue (they become class 0)")
    add_option(pr, defaults, "min_tissue", help="with --skip-background: smallest tissue fraction of a window that "
               "is predicted (default %(default)s)")
    add_option(pr, defaults, "min_area", help="drop objects with a smaller interior (pixels, default %(default)s)")
    pr.set_defaults(func=run_predict)

    cl = steps.add_parser("classify", help="classify images, or the tiles of a slide, with a tile classifier package")
    cl.add_argument("--image", action="append", required=True, help="image to classify (repeat for several)")
    cl.add_argument("--image-name", action="append", help="display name of each image, in order")
    cl.add_argument("--model", required=True, help="tile classifier package from dlhisto train --task classification")
    cl.add_argument("--model-name", help="display name of the model in messages")
    add_output(cl, "--table", required=True, help="output table: one row per image or tile, class and probabilities")
    cl.add_argument("--tile-size", type=int,
                    help="cut each image into tiles of this size (multiple of 32) and classify every tile")
    cl.add_argument("--batch-size", type=int, default=16)
    cl.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    cl.set_defaults(func=run_classify)

    ev = steps.add_parser("evaluate", help="compare predictions with ground truth: instance matching or pixel classes")
    ev.add_argument("--prediction", action="append", required=True, help="label image, class map or classify table (repeatable)")
    ev.add_argument("--truth", action="append", required=True, help="its ground truth, in the same order (classification: one table of true classes)")
    ev.add_argument("--prediction-name", action="append", help="display name of each prediction, in order")
    ev.add_argument("--truth-name", action="append", help="display name of each ground truth, in order")
    ev.add_argument("--mode", choices=["instance", "semantic", "classification", "restoration"], default="instance",
                    help="instance: objects matched at IoU thresholds; semantic: classes pixel by pixel; "
                    "classification: classify tables (--prediction) against one table of true classes (--truth); "
                    "restoration: predicted images against target images (PSNR, SSIM, NRMSE, MAE)")
    ev.add_argument("--image", action="append", help="the image of each prediction, to draw the errors on (report)")
    ev.add_argument("--image-name", action="append", help="display name of each image, in order")
    add_pairing(ev, ("prediction", "truth", "prediction", "ground truth", True),
                ("prediction", "image", "prediction", "image", True))
    ev.add_argument("--thresholds", default=",".join(f"{t:g}" for t in IOU_THRESHOLDS),
                    help="instance: comma-separated IoU thresholds (default 0.5 to 0.95 by 0.05)")
    ev.add_argument("--class-names", help="semantic: names of classes 0..K-1; classification: the classes in "
                    "the confusion matrix's order (default: sorted); comma-separated")
    add_output(ev, "--table", required=True, help="output table: per image and pooled ('all') scores")
    add_output(ev, "--confusion", help="output confusion matrix (pooled; semantic, classification)")
    add_output(ev, "--report", help="output: HTML report with tables, plots and pictures of the errors")
    ev.set_defaults(func=run_evaluate)

    cv = steps.add_parser("crossval", help="k-fold cross-validation of a segmentation method, with a held-out test set")
    from .crossval import CrossValOptions

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
    for name in ("epochs", "patch_size", "patches_per_image", "batch_size", "learning_rate", "encoder", "device"):
        add_option(unet, defaults, name, help="default %(default)s")
    cv.set_defaults(func=run_crossval)

    of = steps.add_parser("omero_fetch", help="fetch images and their ROIs (as label images) and annotations from OMERO")
    of.add_argument("--credentials", help="JSON file: host, port, user + password or session_key, group; default: "
                    "the environment variables OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD, OMERO_SESSION_KEY, "
                    "OMERO_GROUP (never give a password on the command line)")
    of.add_argument("--image-id", type=int, action="append", help="OMERO image id (repeatable)")
    of.add_argument("--dataset-id", type=int, action="append", help="OMERO dataset id: all its images (repeatable)")
    of.add_argument("--output-dir", required=True, help="folder for images/ and labels/ (same file names)")
    add_output(of, "--rois", help="output table: the ROIs and the label each became")
    add_output(of, "--annotations", help="output table: tags and key-value pairs of the images")
    of.set_defaults(func=run_omero_fetch)

    op = steps.add_parser("omero_push", help="push a label image (as ROIs), files and key-value pairs to an OMERO image")
    op.add_argument("--credentials", help="JSON file or, by default, OMERO_* environment variables, as for omero_fetch")
    target = op.add_mutually_exclusive_group(required=True)
    target.add_argument("--image-id", type=int, help="the OMERO image the results belong to")
    target.add_argument("--image-id-from-name", action="store_true",
                        help="the image id is the number that starts --labels-name (omero_fetch names its "
                             "images <id>_<name>), so that a workflow maps over a whole fetched dataset")
    op.add_argument("--labels", help="label image (one id per object): one ROI per object")
    op.add_argument("--labels-name", help="display name of the label image in messages")
    op.add_argument("--shape", choices=["mask", "polygon"], default="mask",
                    help="mask: exact pixels; polygon: outline, editable in OMERO.iviewer (default mask)")
    op.add_argument("--roi-name", default="dlhisto", help="ROI names: this and the object's label")
    op.add_argument("--attach", action="append", help="file to attach to the image (repeatable)")
    op.add_argument("--attach-name", action="append", help="its name in OMERO, in order")
    op.add_argument("--key-value", action="append", metavar="KEY=VALUE",
                    help="recorded in a key-value map on the image (repeatable); dlhisto.version is always added")
    add_output(op, "--table", help="output table: what was created in OMERO (kind, id)")
    op.set_defaults(func=run_omero_push)

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
    dp.set_defaults(func=run_deposit)

    du = steps.add_parser("deposit_upload", help="upload a deposit bundle to the BioImage Archive's FTP area "
                          "(uses the network; only with --network)")
    du.add_argument("bundle", help="the bundle made by dlhisto deposit")
    du.add_argument("--host", required=True, help="FTP host given by the archive's submission tool")
    du.add_argument("--folder", required=True, help="your submission's private folder on it")
    du.add_argument("--network", action="store_true", help="allow this command to use the network")
    du.set_defaults(func=run_deposit_upload)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"dlhisto {args.step}"
    try:
        with cancel_on_signals():
            check_outputs(*_outputs_and_inputs(args))
            if getattr(args, "pair_by_name", False):
                _pair_by_name(args)
            args.func(args)
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
    return 0


def _fail(prog: str, message: str, status: int, label: str = "error: ") -> int:
    """Print the one line Galaxy shows the user, and return the exit status."""
    print(f"{prog}: {label}{one_line(message, 1000)}", file=sys.stderr, flush=True)
    return status


def _outputs_and_inputs(args: argparse.Namespace) -> tuple[dict, list]:
    """The step's output paths, and every other argument naming an existing file (its inputs)."""
    flags = getattr(args, "outputs", None) or {}
    outputs = {flag: getattr(args, dest) for dest, flag in flags.items()}
    inputs = []
    for dest, value in vars(args).items():
        if dest not in flags and dest != "checkpoint":
            inputs += [item for item in (value if isinstance(value, list) else [value])
                       if isinstance(item, str) and os.path.isfile(item)]
    return outputs, inputs


if __name__ == "__main__":
    sys.exit(main())
