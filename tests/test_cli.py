"""The dlhisto command as Galaxy runs it: real processes, exit codes, one-line errors, no debris."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile


def dlhisto(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def segment_args(image, out):
    return ["segment_classic", image, "--labels", out / "labels.tif",
            "--measurements", out / "objects.tsv", "--summary", out / "summary.tsv"]


def test_segment_classic_writes_labels_measurements_and_count(test_data, tmp_path):
    result = dlhisto(*segment_args(test_data / "nuclei.tif", tmp_path), "--image-name", "nuclei")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.dtype == np.uint16 and labels.max() == 112
    summary = (tmp_path / "summary.tsv").read_text().splitlines()
    assert summary[1].split("\t")[:2] == ["nuclei", "112"]
    assert len((tmp_path / "objects.tsv").read_text().splitlines()) == 113


def test_preprocess_writes_float_ome_tiff(test_data, tmp_path):
    result = dlhisto("preprocess", test_data / "ihc.png", tmp_path / "h.tif", "--deconvolve", "hematoxylin")
    assert result.returncode == 0, result.stderr
    with tifffile.TiffFile(tmp_path / "h.tif") as tif:
        assert tif.is_ome and tif.asarray().dtype == np.float32


@pytest.mark.parametrize("image, extra, message", [
    ("not_an_image.txt", [], "'not_an_image.txt' is not a TIFF, PNG or JPEG image"),
    ("one_pixel.tif", [], "'one_pixel.tif' is 1x1 pixels; at least 2x2 is needed"),
    ("nuclei.tif", ["--sigma", "-1"], "sigma must be zero or positive, got -1.0"),
    ("absent.tif", [], "cannot read 'absent.tif': no such file"),
    ("nuclei.tif", ["--threshold", "magic"], "argument --threshold: invalid choice: 'magic'"),
    ("nuclei.tif", ["--channel", "2"], "the image has one channel; channel 2 does not exist"),
    ("nuclei.tif", ["--threshold", "manual"], "the manual threshold method needs a threshold value"),
])
def test_bad_input_gives_one_error_line_and_no_output(test_data, tmp_path, image, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    result = dlhisto(*segment_args(test_data / image, out), *extra)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_errors_name_the_dataset_not_the_galaxy_file(test_data, tmp_path):
    galaxy_file = tmp_path / "dataset_1f2e.dat"
    galaxy_file.write_bytes((test_data / "one_pixel.tif").read_bytes())
    result = dlhisto("preprocess", galaxy_file, tmp_path / "out.tif", "--image-name", "my scan.tif")
    assert result.returncode == 2
    assert result.stderr == "dlhisto preprocess: error: 'my scan.tif' is 1x1 pixels; at least 2x2 is needed\n"


def test_unwritable_output_is_a_clear_error(test_data, tmp_path):
    result = dlhisto("preprocess", test_data / "nuclei.tif", tmp_path / "missing_dir" / "out.tif")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "No such file or directory" in result.stderr


def test_internal_errors_are_one_line_unless_debugging(test_data, tmp_path, monkeypatch):
    script = ("import sys, dlhisto_core.cli.commands as c\n"
              "c.read_image = lambda *args: 1 / 0\n"
              "sys.exit(c.main(sys.argv[1:]))\n")
    args = [sys.executable, "-c", script, "preprocess", str(test_data / "nuclei.tif"), str(tmp_path / "o.tif")]
    quiet = subprocess.run(args, capture_output=True, text=True)
    assert quiet.returncode == 4 and quiet.stderr.count("\n") == 1
    assert "internal error: ZeroDivisionError" in quiet.stderr
    loud = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "DLHISTO_DEBUG": "1"})
    assert "Traceback" in loud.stderr


def test_version():
    result = dlhisto("--version")
    assert result.returncode == 0 and result.stdout.startswith("dlhisto 0.")


def test_pixel_classifier_train_and_predict_from_the_command_line(test_data, tmp_path):
    train = dlhisto("pixel_classifier_train", "--image", test_data / "nuclei.tif",
                    "--annotation", test_data / "nuclei_scribbles.tif", "--class-names", "nucleus,background",
                    "--trees", "30", "--classifier", tmp_path / "c.zip", "--report", tmp_path / "report.tsv")
    assert train.returncode == 0, train.stderr
    assert (tmp_path / "report.tsv").read_text().splitlines()[1].startswith("nucleus\t268\t")
    predict = dlhisto("pixel_classifier_predict", test_data / "nuclei.tif", "--classifier", tmp_path / "c.zip",
                      "--probabilities", tmp_path / "p.tif", "--classes", tmp_path / "classes.tif",
                      "--objects-class", "1", "--objects", tmp_path / "o.tif", "--measurements", tmp_path / "m.tsv",
                      "--summary", tmp_path / "s.tsv", "--min-area", "60", "--split-touching")
    assert predict.returncode == 0, predict.stderr
    count = int((tmp_path / "s.tsv").read_text().splitlines()[1].split("\t")[1])
    assert 110 <= count <= 140  # the human annotation holds 125 nuclei
    assert tifffile.imread(tmp_path / "o.tif").max() == count


def test_pixel_classifier_predict_refuses_an_unknown_class_and_leaves_nothing(test_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = dlhisto("pixel_classifier_predict", test_data / "nuclei.tif",
                     "--classifier", test_data / "nuclei_classifier.zip", "--probabilities", out / "p.tif",
                     "--classes", out / "c.tif", "--objects-class", "3", "--objects", out / "o.tif",
                     "--measurements", out / "m.tsv", "--summary", out / "s.tsv")
    assert result.returncode == 2
    assert result.stderr == ("dlhisto pixel_classifier_predict: error: the classifier knows classes 1 to 2; "
                             "class 3 does not exist\n")
    assert list(out.iterdir()) == []


def test_train_writes_a_loadable_package_history_and_curve(test_data, tmp_path):
    """(Its encoder starts from the ImageNet weights dlhisto ships; a quadrant validates, whole.)"""
    import json

    from dlhisto_core.models.packages import load_package
    quadrant = "nuclei_q{}{}.tif".format
    result = dlhisto("train", *[arg for q in (1, 2) for arg in ("--image", test_data / quadrant(q, ""), "--labels",
                                                                  test_data / quadrant(q, "_groundtruth"))],
                     "--validation-image", test_data / quadrant(3, ""), "--validation-image-name", "q3",
                     "--validation-labels", test_data / quadrant(3, "_groundtruth"), "--task", "instance", "--encoder", "mobilenet_v2", "--encoder-weights", "imagenet",
                     "--patch-size", "64", "--patches-per-image", "16", "--epochs", "2", "--batch-size", "4",
                     "--device", "cpu", "--model", tmp_path / "model.zip", "--history", tmp_path / "history.json",
                     "--curve", tmp_path / "curve.png")
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout and "training on cpu (fp32): " in result.stdout
    assert "encoder started from ImageNet weights: 312 tensors" in result.stdout
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] and 0 <= history["best_val_f1"] <= 1
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    _, spec, rdf = load_package(tmp_path / "model.zip")
    assert spec.task == "instance" and spec.out_channels == 3 and spec.encoder == "mobilenet_v2"
    assert rdf["config"]["dlhisto"]["training"]["epochs_run"] == 2
    assert rdf["config"]["dlhisto"]["training"]["origin"] == "trained from ImageNet encoder weights"
    assert rdf["config"]["dlhisto"]["instances"]["tuned_on"] == "validation images (1)"
    assert "q3" in rdf["config"]["dlhisto"]["training"]["images"]


@pytest.mark.parametrize("option, value, message", [
    ("--model-name", "U-Net v1.2", "a model name is 5 to 128 letters, digits, spaces and _+-() (bioimage.io)"),
    ("--author", "Lab A/B", "an author name is not empty and has no slash (bioimage.io)")])
def test_train_refuses_names_the_package_cannot_hold_before_training(test_data, tmp_path, option, value, message):
    """bioimage.io refuses them when the package is written: after the training, were they not checked first."""
    result = dlhisto("train", "--image", test_data / "nuclei_q1.tif", "--labels", test_data / "nuclei_q1_groundtruth.tif",
                     option, value, "--model", tmp_path / "model.zip")
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert "epoch" not in result.stdout and not (tmp_path / "model.zip").exists()


def test_train_refuses_validation_images_without_labels(test_data, tmp_path):
    result = dlhisto("train", "--image", test_data / "nuclei_q1.tif", "--labels", test_data / "nuclei_q1_groundtruth.tif",
                     "--validation-image", test_data / "nuclei_q2.tif", "--model", tmp_path / "model.zip")
    assert result.returncode == 2 and result.stderr == (
        "dlhisto train: error: 1 validation images but 0 validation label images: give one per image\n")
    assert not (tmp_path / "model.zip").exists()


def test_train_refuses_mismatched_labels_and_leaves_nothing(test_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = dlhisto("train", "--image", test_data / "ihc.png", "--labels", test_data / "nuclei_groundtruth.tif",
                     "--model", out / "model.zip", "--history", out / "h.json", "--curve", out / "c.png")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "labels 'nuclei_groundtruth.tif' (512x512) do not match the size of image 'ihc.png' (256x256)" in result.stderr
    assert list(out.iterdir()) == []


TRANSFER_DATA = ("--patch-size", "64", "--patches-per-image", "8", "--batch-size", "4", "--device", "cpu")


def test_transfer_from_a_package_runs_both_phases(test_data, tmp_path, nuclei_model):
    import json

    from dlhisto_core.models.packages import load_package
    result = dlhisto("transfer", "--image", test_data / "nuclei.tif", "--labels", test_data / "nuclei_groundtruth.tif",
                     "--pretrained", nuclei_model, "--freeze-stages", "4", "--epochs", "1", "--finetune-epochs", "1",
                     *TRANSFER_DATA, "--model", tmp_path / "model.zip", "--history", tmp_path / "history.json")
    assert result.returncode == 0, result.stderr
    assert "374 tensors loaded, 0 did not fit, 0 of the model left as initialised" in result.stdout
    assert "phase 1: 4 encoder stage(s) frozen" in result.stdout and "learning rate 0.0001" in result.stdout
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [(e["epoch"], e["phase"]) for e in history] == [(1, "frozen"), (2, "fine-tune")]
    assert history[0]["val_dice"] > 0.3  # pretrained: it segments nuclei from the first epoch
    _, spec, rdf = load_package(tmp_path / "model.zip")
    assert spec.encoder == "mobilenet_v2" and "fine-tuned from 'nuclei_unet.zip'" in rdf["description"]


def test_transfer_from_a_bare_encoder_to_new_classes(test_data, tmp_path, nuclei_model):
    encoder = nuclei_model.with_name("nuclei_unet_encoder.safetensors")
    result = dlhisto("transfer", "--image", test_data / "nuclei.tif", "--labels", test_data / "nuclei_foreground.tif",
                     "--task", "semantic", "--pretrained", encoder, "--encoder", "mobilenet_v2",
                     "--epochs", "1", "--finetune-epochs", "0", *TRANSFER_DATA, "--model", tmp_path / "model.zip")
    assert result.returncode == 0, result.stderr
    assert "tensors loaded, 0 did not fit" in result.stdout and "phase 2" not in result.stdout


@pytest.mark.parametrize("weights, message", [
    ("code_in_pickle.pt", "'code_in_pickle.pt' holds Python objects besides tensors and is refused"),
    ("nuclei_unet_encoder.safetensors", "no weight in 'nuclei_unet_encoder.safetensors' fits this model"),
])
def test_transfer_refuses_unsafe_or_unfitting_weights(test_data, tmp_path, nuclei_model, weights, message):
    out = tmp_path / "out"
    out.mkdir()
    result = dlhisto("transfer", "--image", test_data / "nuclei.tif", "--labels", test_data / "nuclei_groundtruth.tif",
                     "--pretrained", test_data / weights, "--encoder", "resnet18", "--epochs", "1",
                     *TRANSFER_DATA, "--model", out / "model.zip")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "ran code" not in result.stdout
    assert list(out.iterdir()) == []



def test_threads_caps_every_library_the_step_uses(test_data, tmp_path):
    """``dlhisto --threads 1`` (Galaxy's GALAXY_SLOTS) holds numpy's BLAS and PyTorch, loaded
    before or after, to one thread (by default each takes one per core)."""
    step = ["--threads", "1", *map(str, segment_args(test_data / "nuclei.tif", tmp_path))]
    probe = (f"import sys, threadpoolctl; from dlhisto_core.cli import main; assert main({step!r}) == 0; "
             "import torch; print(torch.get_num_threads(), "
             "max(p['num_threads'] for p in threadpoolctl.threadpool_info()))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    assert (tmp_path / "labels.tif").exists()


@pytest.mark.parametrize("count,shown", [("0", "'0'"), ("100000", "'100000'"), ("9" * 5000, "'" + "9" * 20 + "'")])
def test_threads_must_be_a_count_a_node_has(count, shown, test_data, tmp_path):
    result = dlhisto("--threads", count, *segment_args(test_data / "nuclei.tif", tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"--threads: expected a whole number from 1 to 256, not {shown}" in result.stderr
    assert not list(tmp_path.iterdir())
