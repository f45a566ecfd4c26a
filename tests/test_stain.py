"""Stain normalisation (Macenko, Reinhard): the numbers of torchstain's NumPy implementation,
tile by tile on slides, references saved and refused, and through the command line."""

import json

import numpy as np
import pytest
import tifffile

from dlhisto_core.imaging import stain
from dlhisto_core.cli import main
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import read_image

from torchstain.numpy import normalizers as torchstain_normalizers  # the reference (requirements-test.lock)

SOURCES = ["ihc.png", "he_right.png", "tile_he_1.png"]


@pytest.fixture(scope="module")
def reference_image(test_data) -> np.ndarray:
    return read_image(test_data / "he.jpg").data


def stain_angles(a, b) -> np.ndarray:
    """Angle in degrees between the hematoxylin vectors of two stain matrices, and between the eosin ones."""
    return np.degrees(np.arccos(np.clip((np.asarray(a) * np.asarray(b)).sum(axis=0), -1, 1)))


@pytest.mark.parametrize("source", SOURCES)
def test_macenko_is_torchstains(reference_image, source, test_data):
    """Same stain matrix and concentrations; the output differs by rounding only (torchstain
    truncates to 8 bits, dlhisto rounds): at most 1 grey level."""
    theirs = torchstain_normalizers.NumpyMacenkoNormalizer()
    theirs.fit(reference_image)
    ours = stain.fit(reference_image, "macenko")
    assert np.asarray(ours.stain_matrix) == pytest.approx(theirs.HERef, abs=1e-12)
    assert np.asarray(ours.max_concentrations) == pytest.approx(theirs.maxCRef, rel=1e-12)
    image = read_image(test_data / source).data[..., :3]
    expected, _, _ = theirs.normalize(image, stains=False)
    result = stain.StainNormalizer(ours, image).normalize(image)
    difference = np.abs(result.astype(int) - expected.astype(int))
    assert result.dtype == np.uint8 and result.shape == image.shape
    assert difference.max() <= 1 and 0.3 < difference.mean() < 0.7  # truncation against rounding


@pytest.mark.parametrize("source", SOURCES)
def test_reinhard_is_torchstains(reference_image, source, test_data):
    theirs = torchstain_normalizers.NumpyReinhardNormalizer()
    theirs.fit(reference_image)
    ours = stain.fit(reference_image, "reinhard")
    assert np.asarray(ours.lab_mean) == pytest.approx(theirs.target_means, abs=1e-4)  # theirs in float32
    assert np.asarray(ours.lab_std) == pytest.approx(theirs.target_stds, abs=1e-4)
    image = read_image(test_data / source).data[..., :3]
    difference = np.abs(stain.StainNormalizer(ours, image).normalize(image).astype(int)
                        - theirs.normalize(image).astype(int))
    assert difference.max() <= 1


def test_normalised_images_have_the_references_stains(reference_image, test_data):
    """The IHC image's stain directions lie 9.5 and 24 degrees from the H&E reference's; after
    normalisation, 0.4 and 1.6 degrees (measured), and its stain percentiles come within 11 %."""
    image = read_image(test_data / "ihc.png").data
    reference = stain.fit(reference_image, "macenko")
    before = stain.fit(image, "macenko")
    after = stain.fit(stain.StainNormalizer(reference, image).normalize(image), "macenko")
    assert stain_angles(before.stain_matrix, reference.stain_matrix).min() > 9
    assert stain_angles(after.stain_matrix, reference.stain_matrix).max() < 2
    assert np.asarray(after.max_concentrations) == pytest.approx(reference.max_concentrations, rel=0.12)
    lab = stain.fit(reference_image, "reinhard")
    mapped = stain.fit(stain.StainNormalizer(lab, image).normalize(image), "reinhard")
    assert np.asarray(mapped.lab_mean) == pytest.approx(lab.lab_mean, abs=0.1)
    assert np.asarray(mapped.lab_std) == pytest.approx(lab.lab_std, abs=0.1)


@pytest.mark.parametrize("method", stain.METHODS)
def test_a_slide_is_normalised_tile_by_tile_as_a_whole(reference_image, method, test_data, tmp_path, monkeypatch):
    reference = stain.fit(reference_image, method)
    image = read_image(test_data / "ihc.png").data
    whole = stain.StainNormalizer(reference, image).normalize(image)
    assert stain.normalize_slide(image, tmp_path / "tiled.tif", reference, tile_size=64) == (256, 256)
    assert np.array_equal(tifffile.imread(tmp_path / "tiled.tif"), whole)
    # a slide larger than the sample: statistics from every 2nd pixel, within a grey level of all
    monkeypatch.setattr(stain, "SAMPLE_PIXELS", 256 * 256 // 4)
    stain.normalize_slide(image, tmp_path / "sampled.tif", reference, tile_size=64)
    difference = np.abs(tifffile.imread(tmp_path / "sampled.tif").astype(int) - whole)
    assert np.mean(difference <= 1) > 0.99


def test_references_round_trip_and_hostile_ones_are_refused(reference_image, tmp_path):
    for method in stain.METHODS:
        reference = stain.fit(reference_image, method)
        stain.save(reference, tmp_path / f"{method}.json")
        assert stain.load(tmp_path / f"{method}.json") == reference
    saved = json.loads((tmp_path / "macenko.json").read_text())
    cases = {
        "a list": ([1, 2], "is not a dlhisto stain reference"),
        "another format": ({**saved, "format": "other"}, "is not a dlhisto stain reference"),
        "two columns short": ({**saved, "stain_matrix": [[1, 2]]}, "needs 3 x 2 finite numbers"),
        "NaN": ({**saved, "max_concentrations": [float("nan"), 1]}, "needs 2 finite numbers"),
        "zero spread": ({**saved, "max_concentrations": [0, 1]}, r"concentrations must lie in \(0, 11.08"),
        "stain vectors of zeros": ({**saved, "stain_matrix": [[0, 0]] * 3}, "stain vectors of length 1"),
        "values of 1e308": ({**saved, "stain_matrix": [[1e308, 1e308]] * 3}, "stain vectors of length 1"),
        "one stain twice": ({**saved, "stain_matrix": [[0.6, 0.6], [0.64, 0.64], [0.48, 0.48]]},
                            "the same direction"),
        "negative densities": ({**saved, "stain_matrix": [[-0.6, 0.3], [-0.64, 0.78], [-0.48, 0.55]]},
                               "no negative optical density"),
        "huge concentration": ({**saved, "max_concentrations": [1e308, 1]}, "concentrations must lie in"),
        "a 5000-digit number": (json.dumps({**saved, "max_concentrations": "N"}).replace('"N"', f"[{'9' * 5000}, 1]"),
                                "a number of 5000 digits"),
        "a 400-digit number": (json.dumps({**saved, "max_concentrations": "N"}).replace('"N"', f"[{'9' * 400}, 1]"),
                               "a number of 400 digits"),
        "unknown field": ({**saved, "code": "import os"}, "unknown field"),
        "unknown method": ({**saved, "method": "vahadane"}, "unknown stain normalisation 'vahadane'"),
    }
    saved_reinhard = json.loads((tmp_path / "reinhard.json").read_text())
    cases |= {
        "lightness above 100": ({**saved_reinhard, "lab_mean": [140, 0, 0]}, "means must lie in"),
        "no spread": ({**saved_reinhard, "lab_std": [10, 0, 5]}, r"spreads must lie in \(0, 100\]"),
    }
    for case, (data, message) in cases.items():
        (tmp_path / "bad.json").write_text(data if isinstance(data, str) else json.dumps(data))
        with pytest.raises(InputError, match=message):
            stain.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="needs an RGB brightfield image"):
        stain.fit(np.zeros((64, 64), np.uint16))
    with pytest.raises(InputError, match="almost no stained pixels"):
        stain.fit(np.full((64, 64, 3), 250, np.uint8))


def test_preprocess_normalises_stains_from_the_command_line(test_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["preprocess", str(test_data / "ihc.png"), str(out / "ihc_he.tif"), "--stain-normalization", "macenko",
                 "--stain-reference", str(test_data / "he.jpg"), "--stain-reference-out", str(out / "ref.json")]) == 0
    normalised = tifffile.imread(out / "ihc_he.tif")
    assert normalised.dtype == np.uint8 and normalised.shape == (256, 256, 3)
    with tifffile.TiffFile(out / "ihc_he.tif") as tif:
        assert tif.pages[0].is_tiled
    reference = stain.load(out / "ref.json")
    assert reference == stain.fit(test_data / "he.jpg", "macenko")
    # the saved reference is reused, and combined with other steps (float32 after them)
    assert main(["preprocess", str(test_data / "he_right.png"), str(out / "smooth.tif"), "--stain-normalization",
                 "macenko", "--stain-reference", str(out / "ref.json"), "--sigma", "1"]) == 0
    assert tifffile.imread(out / "smooth.tif").dtype == np.float32
    before = sorted(p.name for p in out.iterdir())
    assert main(["preprocess", str(test_data / "he_right.png"), str(out / "x.tif"), "--stain-normalization", "reinhard",
                 "--stain-reference", str(out / "ref.json"), "--stain-reference-out", str(out / "y.json")]) == 2
    assert capsys.readouterr().err == ("dlhisto preprocess: error: the stain reference is for macenko normalisation, "
                                       "not reinhard\n")
    assert main(["preprocess", str(test_data / "nuclei.tif"), str(out / "x.tif"), "--stain-normalization", "macenko",
                 "--stain-reference", str(out / "ref.json")]) == 2
    assert "needs an RGB brightfield image; 'nuclei.tif' has shape (512, 512)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written by the refused runs


def test_predict_normalises_the_slide_as_it_reads_it(test_data, tmp_path, capsys):
    """An RGB U-Net (1 epoch: its weights do not matter here) predicts the IHC image with its stains
    mapped onto the H&E reference exactly as it predicts the copy preprocess normalised first."""
    from dlhisto_core import DataOptions, PredictOptions, TrainOptions, predict, train
    from dlhisto_core.io.writers import write_labels

    he = read_image(test_data / "he.jpg").data
    write_labels(tmp_path / "dark.tif", (he.mean(axis=2) < 150).astype(np.uint8))
    train([test_data / "he.jpg"], labels=[tmp_path / "dark.tif"], data=DataOptions(task="semantic", patch_size=64,
          patches_per_image=4), options=TrainOptions(epochs=1, batch_size=4, device="cpu"), encoder="mobilenet_v2",
          log=None).save(tmp_path / "rgb.zip")
    reference = stain.fit(test_data / "he.jpg", "macenko")
    stain.normalize_slide(test_data / "ihc.png", tmp_path / "normalised.tif", reference)
    options = PredictOptions(tile_size=128, device="cpu")
    predict(tmp_path / "rgb.zip", test_data / "ihc.png", options, probabilities=tmp_path / "read.tif",
            stain_reference=reference)
    predict(tmp_path / "rgb.zip", tmp_path / "normalised.tif", options, probabilities=tmp_path / "copy.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "read.tif"), tifffile.imread(tmp_path / "copy.tif"))
    # the command line: a reference fitted on an image, or saved; a reference without a method is refused
    assert main(["predict", str(test_data / "ihc.png"), "--model", str(tmp_path / "rgb.zip"), "--tile-size", "128",
                 "--probabilities", str(tmp_path / "cli.tif"), "--stain-normalization", "macenko",
                 "--stain-reference", str(test_data / "he.jpg"), "--device", "cpu"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "cli.tif"), tifffile.imread(tmp_path / "copy.tif"))
    assert main(["predict", str(test_data / "ihc.png"), "--model", str(tmp_path / "rgb.zip"),
                 "--classes", str(tmp_path / "x.tif"), "--stain-reference", str(test_data / "he.jpg")]) == 2
    assert "a stain reference is used only with --stain-normalization" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_a_model_trained_on_normalised_stains_records_its_reference_and_predict_uses_it(test_data, tmp_path):
    import yaml
    import zipfile

    from dlhisto_core import DataOptions, PredictOptions, TrainOptions, predict, train
    from dlhisto_core.dl.prediction import predict_slide
    from dlhisto_core.io.writers import write_labels
    from dlhisto_core.models.packages import load_package

    reference = stain.fit(test_data / "he.jpg", "macenko")
    ihc = read_image(test_data / "ihc.png").data
    write_labels(tmp_path / "dark.tif", (ihc.mean(axis=2) < 150).astype(np.uint8))
    trained = train([test_data / "ihc.png"], labels=[tmp_path / "dark.tif"],
                    data=DataOptions(task="semantic", patch_size=64, patches_per_image=4),
                    options=TrainOptions(epochs=1, batch_size=4, device="cpu"), encoder="mobilenet_v2",
                    stain_reference=reference, log=None)
    trained.save(tmp_path / "normalised.zip")
    with zipfile.ZipFile(tmp_path / "normalised.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
        card = package.read("README.md").decode()
    assert stain.from_dict(rdf["config"]["dlhisto"]["stain_reference"], "rdf") == reference
    assert "mapped onto a macenko stain reference" in card
    options = PredictOptions(tile_size=128, device="cpu")
    predict(tmp_path / "normalised.zip", test_data / "ihc.png", options, probabilities=tmp_path / "default.tif")
    predict(tmp_path / "normalised.zip", test_data / "ihc.png", options, probabilities=tmp_path / "explicit.tif",
            stain_reference=reference)
    default = tifffile.imread(tmp_path / "default.tif")
    assert np.array_equal(default, tifffile.imread(tmp_path / "explicit.tif"))
    model, spec, _ = load_package(tmp_path / "normalised.zip")
    predict_slide(model, spec, test_data / "ihc.png", options, probabilities_path=tmp_path / "raw.tif")
    assert not np.array_equal(default, tifffile.imread(tmp_path / "raw.tif"))  # the raw IHC stains differ
