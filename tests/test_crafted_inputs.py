"""Crafted inputs, second pass, through the real dlhisto command: forged model base rows, work
that would never end (huge declared sizes, enlargement, polygon vertices, classes), bombs
(GeoJSON, test tensors, unused package members, class counts), numbers of thousands of digits,
and the leftovers of the first pass. Each refusal is one line on stderr, a non-zero exit and
no output; each bounded case ends in seconds."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_hostile_inputs as craft  # noqa: E402
from cli_checks import assert_refused  # noqa: E402


def dlhisto(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def peak_memory_mb(*args, folder: Path) -> tuple[subprocess.CompletedProcess, float]:
    """The command run in one process (not confined) that reports its own peak memory."""
    code = ("import resource, sys; from dlhisto_core.cli import main; status = main(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)); "
            "sys.exit(status)")
    peak = folder / f"peak-{time.monotonic_ns()}"
    result = subprocess.run([sys.executable, "-c", code, str(peak), *map(str, args)], capture_output=True, text=True)
    return result, float(peak.read_text())


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# ---- the model base ------------------------------------------------------------------------------

def params(tmp_path) -> Path:
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"output_data": [{"extra_files_path": str(tmp_path / "files")}]}))
    return path


def test_a_forged_evaluation_cell_cannot_add_a_row_to_the_model_base(nuclei_model, test_data, tmp_path):
    json_path = params(tmp_path)
    result = dlhisto("install_model", "--model", nuclei_model, "--id", "forged", "--data-manager-json", json_path,
                     "--evaluation", test_data / "evaluation_forged_row.tsv")
    assert result.returncode == 0, result.stderr
    rows = json.loads(json_path.read_text())["data_tables"]["dlhisto_models"]
    assert len(rows) == 1 and rows[0]["value"] == rows[0]["path"] == "forged"
    assert rows[0]["name"].endswith(": f1 0.9, panoptic_quality 0.8 (all)")
    assert all("\t" not in v and "\n" not in v for v in rows[0].values())


@pytest.mark.parametrize("description,character", [("good\x07bell", "U+0007"), ("an \x1b[31mescape", "U+001B"),
                                                    ("zero\u200bwidth", "U+200B")])
def test_a_control_character_in_a_model_base_row_is_refused(description, character, nuclei_model, tmp_path):
    json_path = params(tmp_path)
    before = json_path.read_text()
    result = dlhisto("install_model", "--model", nuclei_model, "--id", "nuclei", "--description", description,
                     "--data-manager-json", json_path)
    assert_refused(result, f"the model base's description would hold the control character {character}")
    assert json_path.read_text() == before and not any((tmp_path / "files").rglob("*.zip"))


def test_a_package_whose_checksums_are_wrong_is_one_line_in_the_model_base(nuclei_model, test_data, tmp_path):
    rdf = craft.rdf_of(nuclei_model)
    rdf["weights"]["pytorch_state_dict"]["sha256"] = "0" * 64
    package = tmp_path / "wrong_checksum.zip"
    craft.package(package, rdf, craft.members_of(nuclei_model))
    result = dlhisto("install_model", "--model", package, "--id", "wrong", "--data-manager-json", params(tmp_path),
                     "--evaluation", test_data / "nuclei_evaluation.tsv")
    assert_refused(result, "'wrong_checksum.zip' is not a valid bioimage.io package: weights.pytorch_state_dict: "
                   "Value error, SHA256 mismatch")


def test_model_base_rows_are_checked_column_by_column():
    from dlhisto_core.base.errors import InputError
    from dlhisto_core.models.model_base import COLUMNS, loc_row

    row = {c: "x" for c in COLUMNS} | {"value": "ok", "path": "ok"}
    assert loc_row(row)["value"] == "ok"
    for column, value, message in (("value", "a\nb", "value would hold"), ("path", "../../etc", "must be 1-64"),
                                   ("value", "ok\n", "value would hold"), ("name", "a\tb", "name would hold")):
        with pytest.raises(InputError, match=message):
            loc_row({**row, column: value})


# ---- work that would never end ---------------------------------------------------------------------

def geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def polygon(coordinates, class_name=None) -> dict:
    properties = {"classification": {"name": class_name}} if class_name else {}
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coordinates]},
            "properties": properties}


def test_a_polygon_of_a_million_vertices_is_refused_at_once(tmp_path, out, test_data):
    angles = np.linspace(0, 2 * np.pi, 10**6, endpoint=False)
    ring = np.c_[256 + 200 * np.cos(angles), 256 + 200 * np.sin(angles)].round(3).tolist()
    path = geojson(tmp_path / "dense.geojson", [polygon(ring + ring[:1])])
    start = time.monotonic()
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output", out / "l.tif")
    assert_refused(result, "feature 1 brings the vertices to 1,000,001 (1,000,001 in it); at most 250,000 per "
                   "feature", out)
    assert time.monotonic() - start < 30


def test_a_polygon_of_many_vertices_is_drawn_in_time_and_as_before(tmp_path, out, test_data):
    """200,000 vertices zigzagging over the image: rasterised in seconds (pixels x vertices would be
    hours), the same pixels as the point-in-polygon rule on a simpler outline."""
    angles = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    radius = 200 + 3 * np.sin(angles * 5000)
    ring = np.c_[256 + radius * np.cos(angles), 256 + radius * np.sin(angles)].tolist()
    path = geojson(tmp_path / "wavy.geojson", [polygon(ring + ring[:1])])
    start = time.monotonic()
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output", out / "l.tif")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60
    labels = tifffile.imread(out / "l.tif")
    assert abs(int((labels == 1).sum()) - np.pi * 200**2) < 2 * np.pi * 200 * 3  # the disc, within its waves


def test_a_hundred_thousand_classes_are_refused(tmp_path, out, test_data):
    features = [polygon([[x, 0], [x + 1, 0], [x + 1, 1], [x, 0]], f"class {x}") for x in range(100_000)]
    path = geojson(tmp_path / "classes.geojson", features)
    start = time.monotonic()
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output", out / "c.tif",
                     "--mode", "classes")
    assert_refused(result, "'classes.geojson' has 1001 classes; at most 1000 are accepted", out)
    assert time.monotonic() - start < 30


def test_a_slide_asked_at_a_tiny_pixel_size_is_refused_at_once(test_data, tmp_path, out):
    path = geojson(tmp_path / "one.geojson", [polygon([[10, 10], [50, 10], [50, 50], [10, 10]])])
    start = time.monotonic()
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "cmu_small_region.svs", "--output",
                     out / "l.tif", "--pixel-size", "0.0001")
    assert_refused(result, "at 0.0001 µm would enlarge it 4990 times; at most 16 are accepted", out)
    assert time.monotonic() - start < 30


# ---- bombs -------------------------------------------------------------------------------------------

def test_a_large_geojson_is_read_feature_by_feature(tmp_path, out, test_data):
    """About 100 MB of GeoJSON whose first feature is wrong: refused without parsing the rest at once."""
    nucleus = [[x, y] for x, y in np.c_[20 + 5 * np.cos(np.arange(200) / 32), 20 + 5 * np.sin(np.arange(200) / 32)]]
    features = [{"type": "Feature", "geometry": {"type": "Circle", "coordinates": [0, 0]}}]
    features += [polygon(nucleus + nucleus[:1])] * 12_000
    path = geojson(tmp_path / "big.geojson", features)
    assert path.stat().st_size > 80e6
    result, peak = peak_memory_mb("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output",
                                  out / "l.tif", folder=tmp_path)
    assert_refused(result, "feature 1 has a geometry of type 'Circle'", out)
    _, baseline = peak_memory_mb("geojson_to_labels", geojson(tmp_path / "small.geojson", features[:1]), "--image",
                                 test_data / "nuclei.tif", "--output", out / "l.tif", folder=tmp_path)
    assert peak < baseline + 2.5 * path.stat().st_size / 2**20, (peak, baseline)  # the text, not its objects


def test_the_number_of_features_is_bounded(tmp_path, monkeypatch):
    """2,000,000 features at most (about 0.8 GB of checked geometries); here the bound made 10."""
    from dlhisto_core.io import geojson as module
    from dlhisto_core.base.errors import InputError

    monkeypatch.setattr(module, "MAX_FEATURES", 10)
    points = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [k, k]}} for k in range(11)]
    assert len(module.read_annotations(geojson(tmp_path / "ten.geojson", points[:10]))) == 10
    with pytest.raises(InputError, match="'eleven.geojson' holds more than 10 features; at most 10 are accepted"):
        module.read_annotations(geojson(tmp_path / "eleven.geojson", points))


def test_a_test_tensor_larger_than_its_axes_allow_is_refused_before_loading(zoo, tmp_path, out, test_data):
    source = zoo["ts05_zmuv_halo"]
    members = craft.members_of(source)
    rdf = craft.rdf_of(source)
    name = rdf["inputs"][0]["test_tensor"]["source"]
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((1, 1, 4096, 8192), np.float32))  # 128 MiB of zeros
    package = tmp_path / "big_test_input.zip"
    craft.package(package, rdf, {**members, name: big.read_bytes()})
    assert package.stat().st_size < 2**20
    result, peak = peak_memory_mb("predict", "--model", package, test_data / "nuclei.tif", "--probabilities",
                                  out / "p.tif", folder=tmp_path)
    assert_refused(result, "its test tensor 'raw' has 33,554,432 values; at most 16,777,216 are accepted", out)
    _, baseline = peak_memory_mb("predict", "--model", source, test_data / "nuclei.tif", "--probabilities",
                                 out / "p.tif", folder=tmp_path)
    assert peak < baseline + 64, (peak, baseline)  # the 128 MiB tensor was never loaded


def test_an_unused_member_of_a_package_is_never_decompressed(zoo, tmp_path, out, test_data):
    source = zoo["ts05_zmuv_halo"]
    package = tmp_path / "with_unused.zip"
    craft.zip_bomb_member(package, "unused.bin", 2**30, {"rdf.yaml": yaml.safe_dump(craft.rdf_of(source)).encode(),
                                                          **craft.members_of(source)})
    assert package.stat().st_size < 8 * 2**20
    work = tmp_path / "tmp"
    work.mkdir()
    start = time.monotonic()
    result = dlhisto("predict", "--model", package, test_data / "nuclei.tif", "--probabilities", out / "p.tif",
                     "--tile-size", "128", env={"TMPDIR": str(work)})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60 and list(work.iterdir()) == []
    expected = tifffile.imread(test_data / "zoo" / "ts05_zmuv_halo_expected.tif")
    assert np.allclose(tifffile.imread(out / "p.tif"), expected, atol=1e-5)


def test_sixteen_thousand_classes_are_refused_before_a_confusion_matrix(tmp_path, out):
    truth, predicted = tmp_path / "truth.tsv", tmp_path / "predicted.tsv"
    truth.write_text("image\tclass\n" + "".join(f"tile{k}.png\tc{k}\n" for k in range(16_000)))
    predicted.write_text("image\tclass\n" + "".join(f"tile{k}.png\tc{(k + 1) % 16_000}\n" for k in range(16_000)))
    result = dlhisto("evaluate", "--mode", "classification", "--prediction", predicted, "--truth", truth,
                     "--table", out / "scores.tsv")
    assert_refused(result, "'truth.tsv' has 16000 classes; at most 1000 are accepted", out)


def test_weights_of_zeros_at_the_size_cap_are_refused_without_reading_them_twice(nuclei_model, tmp_path, out,
                                                                                test_data):
    from dlhisto_core.models.packages import MAX_WEIGHTS_BYTES

    rdf = craft.rdf_of(nuclei_model)
    package = tmp_path / "zero_weights.zip"
    craft.zip_bomb_member(package, rdf["weights"]["pytorch_state_dict"]["source"], MAX_WEIGHTS_BYTES,
                          {"rdf.yaml": yaml.safe_dump(rdf).encode()})
    result, peak = peak_memory_mb("predict", "--model", package, test_data / "nuclei.tif", "--classes",
                                  out / "c.tif", folder=tmp_path)
    assert_refused(result, "is neither a PyTorch weights file (torch.save) nor a safetensors file", out)
    _, baseline = peak_memory_mb("predict", "--model", nuclei_model, test_data / "nuclei.tif", "--classes",
                                 out / "c.tif", folder=tmp_path)
    assert peak < baseline + 256, (peak, baseline)  # the gigabyte was read once, at most


# ---- numbers of thousands of digits -------------------------------------------------------------------

@pytest.mark.parametrize("digits", [400, 5000])
def test_whole_numbers_of_hundreds_of_digits_are_one_line(digits, zoo, tmp_path, out, test_data):
    number = "9" * digits
    path = tmp_path / "numbers.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", '
                    f'"coordinates": [{number}, 1]}}}}]}}')
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output", out / "l.tif")
    assert_refused(result, f"'numbers.geojson' holds a number of {digits} digits; at most 30 are accepted", out)
    source = zoo["ts05_zmuv_halo"]
    text = zipfile.ZipFile(source).read("rdf.yaml").decode().replace("min: 64", f"min: {number}", 1)
    package = tmp_path / "numbers.zip"
    craft.package(package, text, craft.members_of(source))
    result = dlhisto("predict", "--model", package, test_data / "nuclei.tif", "--probabilities", out / "p.tif")
    assert_refused(result, f"a number of {digits} digits; at most 30 are accepted", out)


@pytest.mark.parametrize("corner,message", [("NaN", "feature 1 has coordinates that are not finite numbers"),
                                            ("1e308", "feature 1 has a coordinate of 1e+308 pixels; coordinates must "
                                                      "lie within ±1e+09")])
def test_coordinates_that_are_no_pixel_are_one_line(corner, message, tmp_path, out, test_data):
    path = tmp_path / "corner.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", '
                    f'"coordinates": [[[0, 0], [{corner}, 5], [5, 5], [0, 0]]]}}}}]}}')
    result = dlhisto("geojson_to_labels", path, "--image", test_data / "nuclei.tif", "--output", out / "l.tif")
    assert_refused(result, message, out)


# ---- left from the first pass -------------------------------------------------------------------------

def test_a_jpeg_is_read_as_its_exif_orientation_shows_it(tmp_path):
    from dlhisto_core.io.images import read_image

    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:10, :20] = 255  # a white corner, top left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    image.save(tmp_path / "camera.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "camera.jpg").data
    assert shown.shape == (60, 40, 3)
    assert shown[:20, -10:].mean() > 200 and shown[-20:, :10].mean() < 50  # the corner is now top right


def test_an_output_name_of_244_characters_is_written(tmp_path, test_data):
    long_name = "n" * 240 + ".tsv"
    result = dlhisto("segment_classic", test_data / "nuclei_q1.tif", "--labels", tmp_path / "l.tif",
                     "--measurements", tmp_path / long_name, "--summary", tmp_path / "s.tsv")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["l.tif", long_name, "s.tsv"])


@pytest.mark.parametrize("date", [20261231, ["2026-12-31"], {"year": 2026}])
def test_a_deposit_release_date_that_is_not_text_is_one_line(date, test_data, tmp_path, out):
    form = json.loads((test_data / "deposit_metadata.json").read_text())
    form["release_date"] = date
    (tmp_path / "form.json").write_text(json.dumps(form))
    result = dlhisto("deposit", "--metadata", tmp_path / "form.json", "--image", test_data / "nuclei_q1.tif",
                     "--bundle", out / "bundle.zip", "--report", out / "report.json", "--validator-python", "/bin/true",
                     "--pixel-size", "0.5")
    assert_refused(result, "'release_date' must be a date like 2026-12-31", out)


@pytest.mark.parametrize("program", ["/bin/echo", "/bin/true"])
def test_a_validator_that_is_not_a_python_is_one_line(program, test_data, tmp_path, out):
    result = dlhisto("deposit", "--metadata", test_data / "deposit_metadata.json", "--image", test_data / "nuclei_q1.tif",
                     "--bundle", out / "bundle.zip", "--report", out / "report.json", "--validator-python", program,
                     "--pixel-size", "0.5")
    message = ("is not the Python of a BioImage Archive validator environment" if program == "/bin/echo"
               else "the BioImage Archive validator failed: no output")
    assert_refused(result, message, out)
