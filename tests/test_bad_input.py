"""Bad inputs through the real dlhisto command: exit status 2, one clear line on stderr, no
traceback, and nothing left at the output paths (not even a hidden .part file)."""

import io
import os
import shlex
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile


def dlhisto(*args):
    return subprocess.run([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)],
                          capture_output=True, text=True)


class Payload:
    """Unpickling this would run a shell command; a safe loader must refuse it."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, test_data):
    """The bad input files, made from a 64x64 crop of nuclei.tif and its annotation."""
    folder = tmp_path_factory.mktemp("bad")
    image = tifffile.imread(test_data / "nuclei.tif")[:64, :64]
    labels = tifffile.imread(test_data / "nuclei_groundtruth.tif")[:64, :64]
    tifffile.imwrite(folder / "crop.tif", image)
    tifffile.imwrite(folder / "crop_labels.tif", labels)
    tifffile.imwrite(folder / "labels_64x48.tif", labels[:48])
    tifffile.imwrite(folder / "float_labels.tif", np.where(labels > 0, 0.5, 0).astype(np.float32))
    tifffile.imwrite(folder / "negative_labels.tif", -labels.astype(np.int16))
    tifffile.imwrite(folder / "empty_labels.tif", np.zeros_like(labels))
    tifffile.imwrite(folder / "constant.tif", np.full_like(image, 100))
    for name, value in [("nan.tif", np.nan), ("inf.tif", np.inf)]:
        data = image.astype(np.float32)
        data[5, 5] = value
        tifffile.imwrite(folder / name, data)
    rng = np.random.default_rng(0)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + rng.bytes(2000))
    nuclei = (test_data / "nuclei.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(nuclei[:len(nuclei) // 2])
    # a 1296-byte file whose header declares 1000000x1000000 float32 pixels (3.6 TiB)
    tifffile.imwrite(folder / "huge.tif", np.zeros((16, 16), np.float32), metadata=None)
    with tifffile.TiffFile(folder / "huge.tif", mode="r+") as tif:
        for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tif.pages[0].tags[tag].overwrite(1_000_000)
    with zipfile.ZipFile(folder / "not_a_model.zip", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    (folder / "random.bin").write_bytes(rng.bytes(5000))
    import torch
    buffer = io.BytesIO()
    torch.save({"weight": Payload(f"touch {shlex.quote(str(folder / 'pwned'))}")}, buffer)
    (folder / "evil.pt").write_bytes(buffer.getvalue())
    return folder


@pytest.fixture(scope="module")
def evil_package(bad, nuclei_model):
    """The test U-Net package with its weights replaced by the malicious pickle."""
    with zipfile.ZipFile(nuclei_model) as source, zipfile.ZipFile(bad / "evil_package.zip", "w") as archive:
        archive.writestr("rdf.yaml", source.read("rdf.yaml"))
        archive.writestr("weights.pt", (bad / "evil.pt").read_bytes())
    return bad / "evil_package.zip"


SEGMENT = ["--labels", "{out}/labels.tif", "--measurements", "{out}/objects.tsv", "--summary", "{out}/summary.tsv"]
PIXEL_TRAIN = ["--classifier", "{out}/classifier.zip", "--report", "{out}/report.tsv", "--trees", "5"]
PIXEL_PREDICT = ["--classifier", "{data}/nuclei_classifier.zip", "--probabilities", "{out}/p.tif",
                 "--classes", "{out}/c.tif"]
PREDICT = ["--probabilities", "{out}/p.tif", "--classes", "{out}/c.tif", "--objects", "{out}/o.tif",
           "--summary", "{out}/s.tsv", "--tile-size", "64", "--overlap", "0", "--device", "cpu"]
TRAIN = ["--patch-size", "32", "--patches-per-image", "4", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
         "--model", "{out}/model.zip", "--history", "{out}/history.json", "--curve", "{out}/curve.png"]
EVALUATE = ["--table", "{out}/table.tsv", "--confusion", "{out}/confusion.tsv", "--report", "{out}/report.html"]

CASES = {
    # damaged files
    "corrupt tiff, whole image": (
        ["segment_classic", "{bad}/corrupt.tif", *SEGMENT],
        "cannot read 'corrupt.tif' as TIFF: it holds no readable image"),
    "corrupt tiff, tiles": (
        ["pixel_classifier_train", "--image", "{bad}/corrupt.tif", "--annotation", "{bad}/crop_labels.tif",
         *PIXEL_TRAIN], "cannot read 'corrupt.tif' as TIFF: it holds no readable image"),
    "truncated tiff, whole image": (
        ["preprocess", "{bad}/truncated.tif", "{out}/pre.tif"], "cannot read 'truncated.tif' as TIFF: "),
    "truncated tiff, tiles": (
        ["pixel_classifier_predict", "{bad}/truncated.tif", *PIXEL_PREDICT], "cannot read 'truncated.tif' as TIFF: "),
    # annotations that do not fit their image
    "size mismatch, evaluate": (
        ["evaluate", "--truth", "{bad}/crop_labels.tif", "--prediction", "{bad}/labels_64x48.tif", *EVALUATE],
        "prediction 'labels_64x48.tif' (64x48) and ground truth 'crop_labels.tif' (64x64) differ in size"),
    "fractional labels, evaluate": (
        ["evaluate", "--truth", "{bad}/crop_labels.tif", "--prediction", "{bad}/float_labels.tif", *EVALUATE],
        "'float_labels.tif' is not a label image: it holds fractional values"),
    "negative labels, evaluate": (
        ["evaluate", "--mode", "semantic", "--truth", "{bad}/negative_labels.tif", "--prediction",
         "{bad}/crop_labels.tif", *EVALUATE], "'negative_labels.tif' is not a label image: it holds negative values"),
    "negative scribbles": (
        ["pixel_classifier_train", "--image", "{bad}/crop.tif", "--annotation", "{bad}/negative_labels.tif",
         *PIXEL_TRAIN], "the annotation 'negative_labels.tif' holds negative values"),
    "empty scribbles": (
        ["pixel_classifier_train", "--image", "{bad}/crop.tif", "--annotation", "{bad}/empty_labels.tif",
         *PIXEL_TRAIN], "the annotations must mark at least two classes (found none)"),
    "empty labels, train": (
        ["train", "--image", "{bad}/crop.tif", "--labels", "{bad}/empty_labels.tif", *TRAIN],
        "the label images hold only background (0): there is nothing to learn"),
    # pixels no step can work on
    "constant image, automatic threshold": (
        ["segment_classic", "{bad}/constant.tif", *SEGMENT], "the image is uniform: there is nothing to threshold"),
    "nan, whole image": (
        ["segment_classic", "{bad}/nan.tif", *SEGMENT], "'nan.tif' contains NaN or infinite pixel values"),
    "inf, tiles": (
        ["pixel_classifier_predict", "{bad}/inf.tif", *PIXEL_PREDICT],
        "'inf.tif' contains NaN or infinite pixel values"),
    "one pixel, tiles": (
        ["pixel_classifier_predict", "{data}/one_pixel.tif", *PIXEL_PREDICT],
        "'one_pixel.tif' is 1x1 pixels; at least 2x2 is needed"),
    "huge declared size": (
        ["segment_classic", "{bad}/huge.tif", *SEGMENT],
        "'huge.tif' declares an image of 1000000 x 1000000 pixels; at most 69 gigapixels are accepted"),
    # models
    "zip that is not a model": (
        ["predict", "{bad}/crop.tif", "--model", "{bad}/not_a_model.zip", *PREDICT],
        "'not_a_model.zip' is not a bioimage.io model package with PyTorch weights"),
    "random file as model": (
        ["predict", "{bad}/crop.tif", "--model", "{bad}/random.bin", *PREDICT],
        "'random.bin' is not a bioimage.io model package (File is not a zip file)"),
    "model for other channels": (
        ["predict", "{data}/ihc.png", "--model", "{model}", *PREDICT],
        "the model expects 1-channel images; 'ihc.png' has 3"),
    "malicious pickle in a package, predict": (
        ["predict", "{bad}/crop.tif", "--model", "{evil_package}", *PREDICT],
        "'evil_package.zip' holds Python objects besides tensors and is refused"),
    "malicious pickle, transfer": (
        ["transfer", "--image", "{bad}/crop.tif", "--labels", "{bad}/crop_labels.tif", "--pretrained",
         "{bad}/evil.pt", "--encoder", "mobilenet_v2", *TRAIN],
        "'evil.pt' holds Python objects besides tensors and is refused"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, bad, test_data, tmp_path, request):
    template, message = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    places = {"bad": bad, "out": out, "data": test_data}
    if any("{model}" in a for a in template):
        places["model"] = request.getfixturevalue("nuclei_model")
    if any("{evil_package}" in a for a in template):
        places["evil_package"] = request.getfixturevalue("evil_package")
    result = dlhisto(*[a.format(**places) for a in template])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"dlhisto {template[0]}: error: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []
    assert not (bad / "pwned").exists()


def test_a_constant_image_with_a_manual_threshold_has_no_objects(bad, tmp_path):
    result = dlhisto("segment_classic", bad / "constant.tif", "--threshold", "manual", "--manual-threshold", "150",
                     *[a.format(out=tmp_path) for a in SEGMENT])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert tifffile.imread(tmp_path / "labels.tif").max() == 0
    assert (tmp_path / "summary.tsv").read_text().splitlines()[1].split("\t")[:2] == ["constant.tif", "0"]
    assert len((tmp_path / "objects.tsv").read_text().splitlines()) == 1
