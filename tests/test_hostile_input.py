"""Crafted but plausible inputs, a full disk and cancelled jobs, through the real dlhisto command:
no file is read outside the inputs, no bomb is expanded, nothing half-written or stray is left,
and every refusal is exit status 2 with exactly one line on stderr (disk full: 3; SIGTERM: 143;
Ctrl-C: 130). The crafted files are made by scripts/make_hostile_inputs.py."""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_hostile_inputs as craft  # noqa: E402
from cli_checks import assert_refused  # noqa: E402

from dlhisto_core import cli
from dlhisto_core.evaluation import metrics  # noqa: E402


def dlhisto(*args, env=None, limit_file_size=None):
    """Run the real command; ``limit_file_size`` caps every file it writes (RLIMIT_FSIZE)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))
    return subprocess.run([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, preexec_fn=limit if limit_file_size else None)


def in_process(capsys, *args):
    """The same command run by ``commands.main`` in this process: the same code, exit status and
    stderr, without a new Python and PyTorch each time (for the grids of cases)."""
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def crop(tmp_path_factory, test_data):
    folder = tmp_path_factory.mktemp("crop")
    tifffile.imwrite(folder / "crop.tif", tifffile.imread(test_data / "nuclei.tif")[:96, :96])
    tifffile.imwrite(folder / "crop_labels.tif", tifffile.imread(test_data / "nuclei_groundtruth.tif")[:96, :96])
    tifffile.imwrite(folder / "crop_classes.tif",
                     (tifffile.imread(test_data / "nuclei_groundtruth.tif")[:96, :96] > 0).astype(np.uint8))
    # the scribbles mark both classes in this corner
    tifffile.imwrite(folder / "corner.tif", tifffile.imread(test_data / "nuclei.tif")[:128, 32:160])
    tifffile.imwrite(folder / "corner_scribbles.tif", tifffile.imread(test_data / "nuclei_scribbles.tif")[:128, 32:160])
    return folder


# ---- 1. no file read outside the inputs --------------------------------------------------------

@pytest.mark.parametrize("reference", ["absolute", "relative"])
@pytest.mark.parametrize("step", ["preprocess", "pixel_classifier_predict"])
def test_an_ome_tiff_pointing_at_another_file_is_refused(reference, step, tmp_path, out, test_data):
    secret = tmp_path / "secret" / "other.tif"
    secret.parent.mkdir()
    tifffile.imwrite(secret, np.full((64, 64), 4242, np.uint16))
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    crafted = uploads / "dataset_1.dat"
    craft.ome_external_reference(crafted, str(secret) if reference == "absolute" else "../secret/other.tif")
    with tifffile.TiffFile(crafted) as tif, warnings.catch_warnings():  # the attack is real: tifffile alone
        warnings.simplefilter("ignore")                                   # reads the other file's pixels
        assert tif.series[0].pages[0].asarray().max() == 4242
    args = ([crafted, out / "o.tif"] if step == "preprocess" else
            [crafted, "--classifier", test_data / "nuclei_classifier.zip", "--probabilities", out / "p.tif",
             "--classes", out / "c.tif", "--tile-size", "64"])
    result = dlhisto(step, *args, "--image-name", "upload.ome.tif")
    assert_refused(result, "'upload.ome.tif' is one file of a multi-file OME-TIFF: its OME-XML refers to ", out)


def test_a_single_file_ome_tiff_naming_itself_is_read(tmp_path, test_data):
    from dlhisto_core.io.readers import TiledImageReader
    from dlhisto_core.io.images import read_image
    data = tifffile.imread(test_data / "nuclei.tif")[:64, :64]
    path = tmp_path / "bioformats.ome.tif"
    craft.ome_self_reference(path, data)
    assert np.array_equal(read_image(path).data, data)
    with TiledImageReader(path) as reader:
        assert np.array_equal(reader.read_region(0, 0, 64, 64), data)


def test_the_galaxy_test_file_points_at_another_file(test_data):
    with tifffile.TiffFile(test_data / "ome_external_reference.ome.tif") as tif:
        assert 'FileName="../nuclei.tif"' in tif.ome_metadata


# ---- 2. bombs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bombs(tmp_path_factory, nuclei_model, test_data):
    folder = tmp_path_factory.mktemp("bombs")
    rdf = craft.rdf_of(nuclei_model)
    craft.zip_bomb_member(folder / "weights_bomb.zip", "weights.pt", 2**30 + 2**27,
                          {"rdf.yaml": yaml.safe_dump(rdf).encode()})
    text = craft.yaml_alias_bomb() + yaml.safe_dump(rdf, sort_keys=False)
    craft.package(folder / "yaml_bomb.zip", text, craft.members_of(nuclei_model))
    with zipfile.ZipFile(test_data / "nuclei_classifier.zip") as source:
        metadata = source.read("classifier.json")
    craft.zip_declaring(folder / "classifier_bomb.zip", "forest.skops", 5 * 2**29, {"classifier.json": metadata})
    return folder


def peak_memory_mb(*args) -> tuple[subprocess.CompletedProcess, float]:
    """Run the command in a child that reports its own peak memory."""
    code = ("import resource, sys; from dlhisto_core.cli import main; status = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=open(sys.argv[0] + '.peak', 'w')); "
            "sys.exit(status)")
    script = Path(args[-1]).with_suffix(".py")
    script.write_text(code)
    result = subprocess.run([sys.executable, script, *map(str, args[:-1])], capture_output=True, text=True)
    return result, float(Path(str(script) + ".peak").read_text())


def test_a_package_whose_weights_decompress_to_gigabytes_is_refused_before_reading(bombs, crop, tmp_path, out):
    assert (bombs / "weights_bomb.zip").stat().st_size < 2**23
    result, peak = peak_memory_mb("predict", crop / "crop.tif", "--model", bombs / "weights_bomb.zip",
                                  "--classes", out / "c.tif", tmp_path / "run")
    assert_refused(result, "'weights_bomb.zip': 'weights.pt' would decompress to 1.1 GiB; at most 1.0 GiB", out)
    _, baseline = peak_memory_mb("predict", crop / "crop.tif", "--model", crop / "crop.tif", "--classes",
                                 out / "c.tif", tmp_path / "baseline")
    assert peak < baseline + 100, (peak, baseline)  # nothing was decompressed


def test_yaml_aliases_are_refused(bombs, crop, out):
    result = dlhisto("predict", crop / "crop.tif", "--model", bombs / "yaml_bomb.zip", "--classes", out / "c.tif")
    assert_refused(result, "'yaml_bomb.zip': rdf.yaml is not valid YAML at line 2: YAML aliases (*name) are not "
                   "accepted", out)


def test_a_classifier_whose_forest_decompresses_to_gigabytes_is_refused(bombs, crop, out):
    result = dlhisto("pixel_classifier_predict", crop / "crop.tif", "--classifier", bombs / "classifier_bomb.zip",
                     "--probabilities", out / "p.tif", "--classes", out / "c.tif")
    assert_refused(result, "'classifier_bomb.zip' would decompress to 2.5 GiB; at most 2.0 GiB", out)


# ---- 9. malformed metadata: one line naming the input and what is wrong -------------------------

def _model_fields(rdf):
    return rdf["config"]["dlhisto"]["model"]


PACKAGE_DEFECTS = {
    "no model spec": (lambda rdf: rdf["config"]["dlhisto"].pop("model"),
                      "has an invalid rdf.yaml at config.dlhisto.model: Field required"),
    "n_classes as text": (lambda rdf: _model_fields(rdf).update(n_classes="three"),
                          "has an invalid rdf.yaml at config.dlhisto.model.n_classes: Input should be a valid integer"),
    "absurd size": (lambda rdf: _model_fields(rdf).update(in_channels=10**9),
                    "config.dlhisto.model.in_channels: Input should be less than or equal to 64"),
    "class names nested": (lambda rdf: rdf["outputs"][0]["axes"][1].update(channel_names=[["a", "b"] for _ in "abc"]),
                           "has an invalid rdf.yaml at outputs.0.axes.1.channel_names.0: Input should be a valid string"),
    "too many class names": (lambda rdf: rdf["outputs"][0]["axes"][1].update(channel_names=["x"] * 5000),
                             "outputs.0.axes.1.channel_names: List should have at most 256 items"),
    "weights source outside": (lambda rdf: rdf["weights"]["pytorch_state_dict"].update(source="../../etc/passwd"),
                               "has no file '../../etc/passwd'"),
    "weights for another network": (lambda rdf: _model_fields(rdf).update(encoder="resnet34"),
                                    "do not fit the network it declares: "),
    "negative pixel size": (lambda rdf: rdf["inputs"][0]["axes"][2].update(scale=-0.5, unit="micrometer"),
                            "has an invalid rdf.yaml at inputs.0.axes.2.scale: Input should be greater than 0.0001"),
}


@pytest.mark.parametrize("defect", PACKAGE_DEFECTS)
def test_a_malformed_package_is_one_line(defect, nuclei_model, crop, tmp_path, out, capsys):
    rdf = craft.rdf_of(nuclei_model)
    change, message = PACKAGE_DEFECTS[defect]
    change(rdf)
    craft.package(tmp_path / "model.zip", rdf, craft.members_of(nuclei_model))
    result = in_process(capsys, "predict", crop / "crop.tif", "--model", tmp_path / "model.zip", "--classes", out / "c.tif")
    assert_refused(result, message, out)


def test_a_yaml_error_is_one_line(nuclei_model, crop, tmp_path, out, capsys):
    craft.package(tmp_path / "model.zip", "name: x\n  bad: [indentation\n", craft.members_of(nuclei_model))
    result = in_process(capsys, "predict", crop / "crop.tif", "--model", tmp_path / "model.zip", "--classes", out / "c.tif")
    assert_refused(result, "'model.zip': rdf.yaml is not valid YAML at line 2: ", out)


def test_the_galaxy_test_package_has_a_bad_config(test_data, crop, out):
    result = dlhisto("predict", crop / "crop.tif", "--model", test_data / "package_bad_config.zip",
                     "--classes", out / "c.tif")
    assert_refused(result, "config.dlhisto.model.n_classes: Input should be a valid integer", out)


CLASSIFIER_DEFECTS = {
    "json list": (b"[1, 2, 3]", "is not a dlhisto pixel classifier (format 'list')"),
    "not utf-8": (b'{"format": "\xff\xfe"}', "classifier.json is not UTF-8 text"),
    "scales absurd": (None, "has an invalid classifier.json at features.scales.0: Input should be less than or equal "
                            "to 64"),
    "class names too long": (None, "class_names.0: String should have at most 200 characters"),
}


@pytest.mark.parametrize("defect", CLASSIFIER_DEFECTS)
def test_a_malformed_classifier_is_one_line(defect, test_data, crop, tmp_path, out, capsys):
    with zipfile.ZipFile(test_data / "nuclei_classifier.zip") as source:
        metadata, forest = json.loads(source.read("classifier.json")), source.read("forest.skops")
    text, message = CLASSIFIER_DEFECTS[defect]
    if defect == "scales absurd":
        metadata["features"]["scales"][0] = 1e9
    elif defect == "class names too long":
        metadata["class_names"][0] = "n" * 5000
    with zipfile.ZipFile(tmp_path / "classifier.zip", "w") as archive:
        archive.writestr("classifier.json", text if text is not None else json.dumps(metadata))
        archive.writestr("forest.skops", forest)
    result = in_process(capsys, "pixel_classifier_predict", crop / "crop.tif", "--classifier", tmp_path / "classifier.zip",
                     "--probabilities", out / "p.tif", "--classes", out / "c.tif")
    assert_refused(result, message, out)


@pytest.mark.parametrize("credentials,message", [
    ({"host": "omero", "user": "bob", "password": 12345678}, "the OMERO password in the OMERO credentials file must be "
                                                             "text of one line"),
    ({"host": "omero", "user": "bob", "password": "hunter2-secret", "port": 70000},
     "the OMERO port in the OMERO credentials file must be a whole number from 1 to 65535"),
    ({"host": ["omero"], "user": "bob", "password": "hunter2-secret"},
     "the OMERO host in the OMERO credentials file must be text"),
])
def test_malformed_omero_credentials_are_one_line(credentials, message, tmp_path, out, capsys):
    (tmp_path / "omero.json").write_text(json.dumps(credentials))
    result = in_process(capsys, "omero_fetch", "--credentials", tmp_path / "omero.json", "--image-id", "1",
                     "--output-dir", out)
    assert_refused(result, message)
    assert str(credentials.get("password")) not in result.stderr


@pytest.mark.parametrize("physical_size,message", [
    ("INF", "records a pixel size of inf x inf µm; a pixel size must be between"),
    ("0", "records a pixel size of 0 x 0 µm"), ("-0.5", "records a pixel size of -0.5 x -0.5 µm"),
    ("NaN", "records a pixel size of nan x nan µm"), ("0.5um", "records its OME PhysicalSizeX as '0.5um', which is not "
                                                              "a number"),
])
def test_a_pixel_size_that_is_no_length_is_refused(physical_size, message, tmp_path, out, test_data, capsys):
    path = tmp_path / "image.ome.tif"
    craft.ome_with_pixel_size(path, tifffile.imread(test_data / "nuclei.tif")[:64, :64], physical_size)
    result = in_process(capsys, "segment_classic", path, "--labels", out / "l.tif", "--measurements", out / "m.tsv",
                     "--summary", out / "s.tsv")
    assert_refused(result, f"'image.ome.tif' {message}", out)


def test_a_16_bit_rgb_png_keeps_its_depth(tmp_path):
    import imagecodecs

    from dlhisto_core.io.images import read_image
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 8601, (40, 50, 3), dtype=np.uint16)
    pixels[0, 0, 0] = 8600
    (tmp_path / "deep.png").write_bytes(imagecodecs.png_encode(pixels))
    tifffile.imwrite(tmp_path / "deep.tif", pixels, photometric="rgb")
    png, tif = read_image(tmp_path / "deep.png"), read_image(tmp_path / "deep.tif")
    assert png.data.dtype == np.uint16 and png.data.max() == 8600
    assert np.array_equal(png.data, tif.data)


def test_a_class_name_that_is_tex_or_html_does_not_break_the_report(crop, out, capsys):
    result = in_process(capsys, "evaluate", "--mode", "semantic", "--truth", crop / "crop_classes.tif", "--prediction",
                        crop / "crop_classes.tif", "--class-names", "$\\frac{<b>,<script>x</script>",
                     "--table", out / "t.tsv", "--report", out / "r.html")
    assert result.returncode == 0, result.stderr
    page = (out / "r.html").read_text()
    assert "<script>x" not in page and "&lt;script&gt;x" in page


MATCH_A_MILLION = """
import resource, sys
import numpy as np
from dlhisto_core.evaluation import metrics
side = 1000
labels = (np.arange(side * side, dtype=np.uint32).reshape(side, side) + 1).repeat(2, 0).repeat(2, 1)
shifted = np.roll(labels, 1, axis=1)  # each 2x2 object now shares a third of itself with two neighbours
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
same, moved = metrics.match_instances(labels, labels, (0.5,))[0], metrics.match_instances(labels, shifted, (0.5,))[0]
aji = metrics.aggregated_jaccard_index(labels, shifted)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(same.tp, same.f1, moved.tp, aji, grown)
"""


def test_instance_matching_of_a_million_objects_stays_in_bounded_memory():
    """Measured in a process of its own: this one's peak (ru_maxrss) already holds earlier tests',
    under which any growth would hide."""
    done = subprocess.run([sys.executable, "-c", MATCH_A_MILLION], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    tp, f1, moved_tp, aji, grown = done.stdout.split()
    assert (int(tp), float(f1), int(moved_tp)) == (10**6, 1.0, 0)
    assert float(aji) == pytest.approx(1 / 3, abs=1e-3)
    assert float(grown) < 1500, grown  # a dense object-by-object matrix would need 8 TB
    # below IoU 0.5 the overlaps chain the objects of a row together: matched exactly, group by group
    small = (np.arange(100 * 100, dtype=np.uint32).reshape(100, 100) + 1).repeat(2, 0).repeat(2, 1)
    chained, = metrics.match_instances(small, np.roll(small, 1, axis=1), (0.3,))
    assert chained.tp == 100 * 100 and chained.mean_matched_iou == pytest.approx(1 / 3)


def test_evaluate_matches_90000_objects_through_the_command(tmp_path, out):
    labels = (np.arange(300 * 300, dtype=np.uint32).reshape(300, 300) + 1).repeat(2, 0).repeat(2, 1)
    tifffile.imwrite(tmp_path / "objects.tif", labels)
    result = dlhisto("evaluate", "--truth", tmp_path / "objects.tif", "--prediction", tmp_path / "objects.tif",
                     "--thresholds", "0.5", "--table", out / "t.tsv")
    assert result.returncode == 0, result.stderr
    assert "90000 matched, 0 false positives, 0 missed; F1 1.000" in result.stdout


# ---- 5. one path for several outputs -------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["pixel_classifier_predict", "{crop}", "--classifier", "{data}/nuclei_classifier.zip", "--probabilities",
      "{out}/o.tif", "--classes", "{out}/o.tif"], "--probabilities and --classes name the same file"),
    (["segment_classic", "{crop}", "--labels", "{out}/x", "--measurements", "{out}/m.tsv", "--summary", "{out}/x"],
     "--labels and --summary name the same file"),
    (["segment_classic", "{crop}", "--labels", "{crop}", "--measurements", "{out}/m.tsv", "--summary", "{out}/s"],
     "the output --labels would overwrite the input"),
])
def test_one_path_for_two_outputs_is_refused_before_any_work(args, message, crop, out, test_data, capsys):
    result = in_process(capsys, *[a.format(crop=crop / "crop.tif", out=out, data=test_data) for a in args])
    assert_refused(result, message, out)


# ---- 3, 4. full disk: all outputs appear together or none ----------------------------------------

DISK_FULL_STEPS = {
    "segment_classic": ["{crop}", "--labels", "{out}/labels.tif", "--measurements", "{out}/objects.tsv",
                        "--summary", "{out}/summary.tsv"],
    "pixel_classifier_train": ["--image", "{corner}", "--annotation", "{scribbles}",
                               "--classifier", "{out}/classifier.zip", "--report", "{out}/report.tsv", "--trees", "5"],
    "pixel_classifier_predict": ["{crop}", "--classifier", "{data}/nuclei_classifier.zip", "--probabilities",
                                 "{out}/p.tif", "--classes", "{out}/c.tif", "--objects-class", "1", "--objects",
                                 "{out}/o.tif", "--measurements", "{out}/m.tsv", "--summary", "{out}/s.tsv",
                                 "--tile-size", "64"],
    "train": ["--image", "{crop}", "--labels", "{labels}", "--patch-size", "32", "--patches-per-image", "4",
              "--epochs", "2", "--batch-size", "2", "--device", "cpu", "--encoder", "mobilenet_v2", "--model",
              "{out}/model.zip", "--history", "{out}/history.json", "--curve", "{out}/curve.png", "--checkpoint",
              "{out}/checkpoint.pt"],
    "predict": ["{crop}", "--model", "{model}", "--probabilities", "{out}/p.tif", "--classes", "{out}/c.tif",
                "--objects", "{out}/o.tif", "--summary", "{out}/s.tsv", "--tile-size", "64", "--overlap", "0",
                "--device", "cpu"],
    "evaluate": ["--truth", "{labels}", "--prediction", "{labels}", "--image", "{crop}", "--table", "{out}/t.tsv",
                 "--report", "{out}/report.html"],
    "auto_annotate": ["{crop}", "{crop}", "--reference-channel", "bright", "--method",
                      "phase", "--labels", "{out}/l.tif", "--report", "{out}/r.tsv", "--warped-marker", "{out}/w.tif"],
}


@contextlib.contextmanager
def small_disk(folder: Path, size: int):
    """A real file system of ``size`` bytes at ``folder`` (tmpfs; the test command runs as root)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("step", DISK_FULL_STEPS)
def test_a_full_disk_leaves_no_output(step, crop, tmp_path, test_data, nuclei_model, capsys):
    places = {"crop": crop / "crop.tif", "labels": crop / "crop_labels.tif", "corner": crop / "corner.tif",
              "scribbles": crop / "corner_scribbles.tif", "data": test_data, "model": nuclei_model}
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    template = DISK_FULL_STEPS[step]
    done = in_process(capsys, step, *[a.format(out=roomy, **places) for a in template])
    assert done.returncode == 0, done.stderr
    sizes = {p.name: p.stat().st_size for p in roomy.iterdir()}
    assert len(sizes) >= 2
    page = 4096
    needed = sum(-(-s // page) * page for s in sizes.values())
    full = tmp_path / "full"
    with small_disk(full, needed - page) as mounted:  # one page short: the last output written does not fit
        limit = None if mounted else max(sizes.values()) - 1
        result = dlhisto(step, *[a.format(out=full, **places) for a in template], limit_file_size=limit)
        assert result.returncode == 3, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert ("No space left on device" if mounted else "File too large") in result.stderr
        assert ".part" not in result.stderr and str(full) in result.stderr, result.stderr
        left = sorted(p.name for p in full.iterdir())
        if step == "train" and left == ["checkpoint.pt"]:  # resumable state of the last whole epoch, by design
            import torch
            assert set(torch.load(full / "checkpoint.pt", weights_only=True)) >= {"model", "optimizer", "state"}
        else:
            assert left == [], "an output was left behind"


# ---- 8. cancelled jobs ----------------------------------------------------------------------------

def _wait_for(condition, seconds=120.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("signum,status,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_cancelled_training_cleans_up(signum, status, name, test_data, tmp_path, out):
    work = tmp_path / "tmp"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(work)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dlhisto_core.cli", "train", "--image", test_data / "nuclei.tif", "--labels",
         test_data / "nuclei_groundtruth.tif", "--patch-size", "64", "--patches-per-image", "16", "--epochs", "50",
         "--device", "cpu", "--model", out / "model.zip", "--history", out / "history.json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the confined step's TMPDIR is a private folder inside the job's
    assert _wait_for(lambda: any(work.glob("**/dlhisto-train-*/checkpoint.pt")) or process.poll() is not None)
    assert process.poll() is None, "training ended before it could be cancelled"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert stderr == f"dlhisto train: error: cancelled by {name}{' (Ctrl-C)' if name == 'SIGINT' else ''}; no " \
                     "output was written\n"
    assert list(out.iterdir()) == [] and list(work.iterdir()) == []


def test_a_cancelled_prediction_leaves_no_part_file(test_data, nuclei_model, tmp_path, out):
    work = tmp_path / "tmp"
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "dlhisto_core.cli", "predict", test_data / "nuclei.tif", "--model", nuclei_model,
         "--probabilities", out / "p.tif", "--classes", out / "c.tif", "--objects", out / "o.tif",
         "--tile-size", "64", "--overlap", "32", "--batch-size", "1", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(work)})
    assert _wait_for(lambda: any(out.glob(".*.part")) and any(work.iterdir()) or process.poll() is not None)
    assert process.poll() is None, "prediction ended before it could be cancelled"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and stderr.count("\n") == 1, stderr
    assert list(out.iterdir()) == [] and list(work.iterdir()) == []
