"""bioimage.io models made elsewhere (dlhisto_core.models.zoo, run by dlhisto_core.dl.foreign), on packages built the zoo's way
with bioimageio.spec's own classes (scripts/make_zoo_packages.py): each passes bioimageio.core's
test_model, and dlhisto's tiled prediction equals bioimageio.core's own on the same image."""

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from dlhisto_core import predict
from dlhisto_core.dl.options import PredictOptions
from dlhisto_core.base.errors import InputError
from dlhisto_core.dl.foreign import predict_zoo
from dlhisto_core.models.zoo import is_foreign, load_zoo_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_zoo_packages  # noqa: E402 - the test packages and their references

TOLERANCE = 1e-5
"""Largest difference allowed between dlhisto's tiled prediction and bioimageio.core's (float32 arithmetic)."""


def _image(shape, channels, seed=5):
    from scipy import ndimage as ndi
    noise = np.random.default_rng(seed).random(tuple(shape) + (channels,)).astype(np.float32)
    return ndi.gaussian_filter(noise, (2, 2, 0)) * (255 if channels == 3 else 1000)


def _core_prediction(package, image):
    """bioimageio.core's prediction on a (Y, X, C) image, as (Y, X, C)."""
    output = make_zoo_packages.core_prediction(package, image[..., 0] if image.shape[-1] == 1 else image)
    return output[..., None] if output.ndim == 2 else output


@pytest.mark.parametrize("package", ["ts05_zmuv_halo", "onnx04_range_pointwise", "onnx05_fixed_zmuv",
                                     "ts04_linear_fixed"])
def test_a_zoo_package_predicts_as_bioimageio_core_does(zoo, package, tmp_path):
    """Tiles of 64 px (several windows, each with the package's halo) against bioimageio.core's
    prediction of the whole image, which it extends by the halo as the package says."""
    from bioimageio.core import test_model

    assert test_model(zoo[package]).status == "passed"  # the reference accepts the package
    with load_zoo_model(zoo[package]) as model:  # and dlhisto reproduces its test output on load
        shape = (96, 96) if package == "ts04_linear_fixed" else (224, 320)  # fixed windows: one image's worth
        image = _image(shape, model.n_channels)
        tifffile.imwrite(tmp_path / "image.tif", image if model.n_channels == 3 else image[..., 0])
        summary = predict_zoo(model, tmp_path / "image.tif", tmp_path / "out.tif", tile_size=64)
        assert summary.windows > 1
    ours = tifffile.imread(tmp_path / "out.tif")
    ours = ours[..., None] if ours.ndim == 2 else ours
    assert np.abs(ours - _core_prediction(zoo[package], image)).max() < TOLERANCE


def test_a_fixed_window_model_tiles_a_larger_image_as_the_reference_blocks_it(zoo, tmp_path):
    """The 96 px model with a halo of 12 on a 200 x 300 image: dlhisto's windows against
    bioimageio.core's blocked prediction (blocks of the model's size, the halo cut away)."""
    image = _image((200, 300), 1)
    tifffile.imwrite(tmp_path / "image.tif", image[..., 0])
    with load_zoo_model(zoo["ts04_linear_fixed"]) as model:
        predict_zoo(model, tmp_path / "image.tif", tmp_path / "out.tif")
    reference = _core_prediction(zoo["ts04_linear_fixed"], image)[..., 0]
    assert np.abs(tifffile.imread(tmp_path / "out.tif") - reference).max() < TOLERANCE


def test_postprocessing_with_statistics_of_the_whole_output_follows_the_spec(zoo, tmp_path):
    """scale_range of each output channel, then scale_mean_variance to the pre-processed input:
    statistics of the whole output, which dlhisto writes once, measures, then processes tile by
    tile. bioimageio.core 0.11.0 cannot run such a package (KeyError on the output), so the
    reference is the spec's formulas in numpy on the network's whole output."""
    from bioimageio.core import test_model

    assert test_model(zoo["ts05_output_stats"]).status != "passed"  # when core learns it, compare with core instead
    image = _image((224, 320), 1)[..., 0]
    tifffile.imwrite(tmp_path / "image.tif", image)
    with load_zoo_model(zoo["ts05_output_stats"]) as model:  # its test output is reproduced on load
        summary = predict_zoo(model, tmp_path / "image.tif", tmp_path / "out.tif", tile_size=64)
        assert summary.windows == 20
    expected = make_zoo_packages.output_stats_formulas(image, zoo["ts05_output_stats"].parent)
    assert np.abs(tifffile.imread(tmp_path / "out.tif") - expected).max() < TOLERANCE


def test_reference_statistics_that_do_not_fit_the_output_are_refused():
    """scale_mean_variance to an input of 3 channels, on an output without a channel axis: there
    is no one value to take (it used to take the first channel's)."""
    from dlhisto_core.models.zoo import _like

    per_channel = np.arange(3.0).reshape(1, 3, 1, 1)
    assert _like(per_channel, ["batch", "channel", "y", "x"], ["batch", "y", "x", "channel"]).shape == (1, 1, 1, 3)
    assert float(_like(per_channel[:, :1], ["batch", "channel", "y", "x"], ["batch", "y", "x"])) == 0.0
    with pytest.raises(InputError, match=r"statistics \(shape \(1, 3, 1, 1\), axes batch, channel, y, x\) do not "
                       r"fit the output's axes \(batch, y, x\)"):
        _like(per_channel, ["batch", "channel", "y", "x"], ["batch", "y", "x"])


def test_predict_runs_a_foreign_package_at_its_pixel_size_with_a_class_map(zoo, test_data, tmp_path):
    """Through dlhisto's predict (API of the CLI and the Galaxy tool): the package states 0.5 µm;
    an image recorded at 0.25 µm is read at 0.5 µm; the class map thresholds the one probability."""
    from dlhisto_core.io.readers import TiledImageReader
    from dlhisto_core.io.images import read_image
    from dlhisto_core.io.writers import write_image

    nuclei = read_image(test_data / "nuclei.tif").data
    write_image(tmp_path / "quarter.ome.tif", np.repeat(np.repeat(nuclei, 2, 0), 2, 1), (0.25, 0.25))
    summary = predict(zoo["ts05_zmuv_halo"], tmp_path / "quarter.ome.tif", PredictOptions(tile_size=256),
                      probabilities=tmp_path / "p.tif", classes=tmp_path / "c.tif", summary=tmp_path / "s.tsv")
    assert summary.shape == (512, 512) and summary.windows == 4
    with TiledImageReader(tmp_path / "p.tif") as probabilities, TiledImageReader(tmp_path / "c.tif") as classes:
        assert probabilities.pixel_size == classes.pixel_size == (0.5, 0.5)
        p, c = probabilities.read_region(0, 0, 512, 512), classes.read_region(0, 0, 512, 512)
    assert np.array_equal(c, (p >= 0.5).astype(np.uint8))
    assert "mean_foreground" in (tmp_path / "s.tsv").read_text().splitlines()[0]


def test_foreign_models_run_on_the_engine_with_every_prediction_option(zoo, test_data, tmp_path):
    """predict's options reach a model made elsewhere as they reach dlhisto's own: batches give
    the same output as single windows, bfloat16 and flips change it a little, and what such a
    model cannot do (background skipping, ONNX off the CPU or in bfloat16) is refused in one line."""
    image = test_data / "nuclei.tif"

    def run(name, **options):
        output = tmp_path / f"{name}_{'_'.join(f'{k}-{v}' for k, v in options.items())}.tif"
        summary = predict(zoo[name], image, PredictOptions(tile_size=128, overlap=0, **options), probabilities=output)
        return summary, tifffile.imread(output)

    single, one = run("ts05_zmuv_halo", batch_size=1)
    batched, four = run("ts05_zmuv_halo", batch_size=4)
    assert single.windows == batched.windows == 16 and np.array_equal(one, four)
    bf16, half = run("ts05_zmuv_halo", precision="bf16")
    assert bf16.device == "cpu, bf16" and single.device == "cpu, fp32"
    assert 0 < np.abs(half - one).max() < 0.01
    _, flipped = run("ts05_zmuv_halo", flips=True)
    assert 0 < np.abs(flipped - one).max() < 0.2
    with pytest.raises(InputError, match="background skipping needs to know which output is background"):
        run("ts05_zmuv_halo", skip_background=True)
    with pytest.raises(InputError, match="ONNX weights only, which dlhisto runs on the CPU in float32"):
        run("onnx05_fixed_zmuv", precision="bf16")


def _repacked(source, target, change_rdf=None, drop=()):
    with zipfile.ZipFile(source) as archive:
        files = {n: archive.read(n) for n in archive.namelist() if n not in drop}
    if change_rdf:
        rdf = yaml.safe_load(files["rdf.yaml"])
        change_rdf(rdf)
        files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for n, data in files.items():
            archive.writestr(n, data)
    return target


def test_what_dlhisto_cannot_honour_is_refused_in_one_line(zoo, nuclei_model, test_data, tmp_path):
    """Each refusal names the package and what is unsupported, before any output is written."""
    ts05 = zoo["ts05_zmuv_halo"]
    assert is_foreign(ts05) and not is_foreign(nuclei_model)
    cases = {
        "a state dict of a network dlhisto does not build": (_repacked(nuclei_model, tmp_path / "a.zip", lambda rdf: (
            rdf.pop("config"), rdf["weights"].pop("torchscript"), rdf["weights"].pop("onnx"),
            rdf["weights"]["pytorch_state_dict"]["architecture"].update(import_from="my_networks"))),
            "'a.zip': its PyTorch state dict is for my_networks.Unet, which would mean running code the package "
            "names"),
        "a state dict of an smp network with pretrained weights to download": (
            _repacked(nuclei_model, tmp_path / "f.zip", lambda rdf: (
                rdf.pop("config"), rdf["weights"].pop("torchscript"), rdf["weights"].pop("onnx"),
                rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"].update(encoder_weights="imagenet"))),
            "'f.zip': its architecture Unet asks for pretrained encoder weights to download or an activation"),
        "an unsupported step": (_repacked(ts05, tmp_path / "b.zip", lambda rdf: rdf["inputs"][0].update(
            preprocessing=[{"id": "scale_mean_variance", "kwargs": {"reference_tensor": "raw"}}])),
            "'b.zip' is not a valid bioimage.io model description"),
        "a 3D axis": (_repacked(ts05, tmp_path / "c.zip", lambda rdf: rdf["inputs"][0]["axes"].append(
            {"type": "space", "id": "z", "size": 16})),
            "'c.zip': its input axis 'z' (space) cannot come from a 2D image"),
        "a test output that does not reproduce": (_repacked(ts05, tmp_path / "d.zip", lambda rdf: (
            rdf["weights"]["torchscript"].update(sha256=None) or rdf["outputs"][0]["test_tensor"].update(
                source="test_input.npy", sha256=None))),
            "'d.zip': its test output is not reproduced"),
        "a file outside the package": (_repacked(ts05, tmp_path / "e.zip", lambda rdf: rdf["weights"]["torchscript"]
                                                 .update(source="../../etc/passwd", sha256=None)),
                                       "'e.zip' names a file it does not hold: '../../etc/passwd'"),
    }
    for case, (package, message) in cases.items():
        with pytest.raises(InputError, match=message.replace("(", "\\(").replace(")", "\\)")):
            load_zoo_model(package)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="'ts05_zmuv_halo.zip' takes 1-channel images; 'he.jpg' has 3"):
        predict(ts05, test_data / "he.jpg", probabilities=out / "p.tif")
    with pytest.raises(InputError, match="a bioimage.io model from elsewhere: dlhisto writes its output"):
        predict(ts05, test_data / "he.jpg", objects=out / "o.tif")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("weights", ["torchscript", "onnx", "pytorch_state_dict"])
def test_a_dlhisto_package_read_as_any_zoo_package_gives_the_same_classes(nuclei_model, test_data, tmp_path, weights):
    """Without its config.dlhisto and with one weights format left, the nuclei U-Net is run as
    other consumers run it (its declared scale_range and softmax): its TorchScript, its ONNX
    (onnxruntime) or its state dict (the smp U-Net the rdf names, which dlhisto builds itself).
    Each reproduces the package's test output on load; on one 256 px window it equals
    bioimageio.core's prediction with the same weights, and on the whole image > 99 % of its
    pixels get the class dlhisto's own predictor gives them (which blends overlapping windows
    and takes the percentiles from a sample of the pixels)."""
    dropped = {"torchscript", "onnx", "pytorch_state_dict"} - {weights}

    def keep_one(rdf):
        rdf.pop("config")
        for name in dropped - {"pytorch_state_dict"}:  # a parent entry stays: the others name it
            rdf["weights"].pop(name)
        if weights != "pytorch_state_dict":
            rdf["weights"][weights].pop("parent")
            rdf["weights"].pop("pytorch_state_dict")
    stripped = _repacked(nuclei_model, tmp_path / "stripped.zip", keep_one)
    assert is_foreign(stripped)
    window = np.asarray(tifffile.imread(test_data / "nuclei.tif")[:256, :256], np.float32)
    tifffile.imwrite(tmp_path / "window.tif", window)
    with load_zoo_model(stripped) as model:
        assert model.weights_format == weights
        predict_zoo(model, tmp_path / "window.tif", tmp_path / "window_out.tif", tile_size=256)
    reference = _core_prediction(stripped, window[..., None])
    assert np.abs(tifffile.imread(tmp_path / "window_out.tif") - reference).max() < TOLERANCE
    predict(stripped, test_data / "nuclei.tif", classes=tmp_path / "foreign.tif")
    predict(nuclei_model, test_data / "nuclei.tif", classes=tmp_path / "own.tif")
    assert (tifffile.imread(tmp_path / "foreign.tif") == tifffile.imread(tmp_path / "own.tif")).mean() > 0.99
