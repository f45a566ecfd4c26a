"""Whole-slide prediction: exact blending, objects merged across tiles, real predictions with
the test U-Net, background skipping, pyramidal outputs, and errors."""

import dataclasses

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from dlhisto_core.cli import main
from dlhisto_core.imaging.intensity import channel_range, scale_channels
from dlhisto_core.dl.patches import make_target
from dlhisto_core.models.spec import ModelSpec
from dlhisto_core.dl.options import PredictOptions
from dlhisto_core.dl.engine import Engine, NetworkWindows, WindowCount, blend_weights
from dlhisto_core.dl.prediction import _ObjectLabeller, predict_slide, probabilities_in_memory
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.images import read_image, read_labels
from dlhisto_core.io.writers import write_tiled_image
from dlhisto_core.models.spec import InstanceThresholds
from dlhisto_core.dl.instances import label_objects
from dlhisto_core.models.packages import load_package
from dlhisto_core.io.tiling import tile_grid

torch.set_num_threads(2)


def test_blend_weights_add_up_to_one_along_an_axis():
    size, overlap, count = 64, 32, 4
    total = np.zeros(size * count + overlap)
    for k in range(count):
        total[k * size:k * size + size + overlap] += blend_weights(k, count, size, overlap)
    np.testing.assert_allclose(total[:size * count], 1, atol=1e-6)


@pytest.mark.parametrize("tile_size, overlap", [(64, 32), (128, 64), (96, 0)])
def test_tiled_prediction_equals_whole_image_prediction_for_a_pointwise_model(test_data, tile_size, overlap):
    """With a network that looks at one pixel at a time, any seam would show: there is none."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 3, kernel_size=1)
    spec = ModelSpec("semantic", 3, 1)
    image = read_image(test_data / "nuclei.tif").data
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(scale_channels(image, *channel_range(image)))[None]), 1)
    expected = np.moveaxis(expected[0].numpy(), 0, -1)
    predicted = np.zeros_like(expected)
    with TiledImageReader(test_data / "nuclei.tif") as reader:
        options = PredictOptions(tile_size=tile_size, overlap=overlap, batch_size=3, device="cpu")
        for tile, probabilities in Engine(NetworkWindows(model, spec), options).tiles(reader, WindowCount()):
            predicted[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width] = probabilities
    np.testing.assert_allclose(predicted, expected, atol=2e-6)


def test_objects_crossing_tile_borders_are_merged_exactly(test_data, tmp_path):
    """Tile-wise labelling with merging gives the same objects as labelling the whole image
    (instances.label_objects), with thresholds and a growth other than the defaults."""
    classes = make_target(read_labels(test_data / "nuclei_groundtruth.tif").data, "instance")
    one_hot = np.stack([classes == k for k in range(3)], axis=-1).astype(np.float32)
    probabilities = ndi.gaussian_filter(one_hot, (1.5, 1.5, 0))  # soft, still summing to 1
    thresholds = InstanceThresholds(interior=0.6, foreground=0.4, growth=4)
    with _ObjectLabeller(tmp_path, classes.shape, 64, thresholds) as labeller:
        for tile in tile_grid(*classes.shape, 64):
            labeller.add(tile, probabilities[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width])
    count = labeller.finish(tmp_path / "objects.tif", min_area=10)
    tiled = tifffile.imread(tmp_path / "objects.tif")

    whole = label_objects(probabilities, thresholds, min_area=10)
    assert count == len(np.unique(whole)) - 1 > 100
    assert ((tiled > 0) == (whole > 0)).all()
    pairs = np.unique(np.stack([tiled[whole > 0], whole[whole > 0]]), axis=1)
    assert pairs.shape[1] == count  # one tiled object for each whole-image object, and back
    assert sorted(np.unique(tiled))[1:] == list(range(1, count + 1))


@pytest.fixture(scope="module")
def nuclei_predictions(nuclei_model, test_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    model, spec, _ = load_package(nuclei_model)
    outputs = {}
    for tile_size in (128, 512):
        paths = {k: folder / f"{k}_{tile_size}.tif" for k in ("probabilities", "classes", "objects")}
        summary = predict_slide(model, spec, test_data / "nuclei.tif", PredictOptions(tile_size=tile_size, overlap=64),
                                paths["probabilities"], paths["classes"], paths["objects"])
        outputs[tile_size] = (summary, paths)
    return outputs


def test_the_test_unet_finds_the_nuclei(nuclei_predictions, test_data):
    summary, paths = nuclei_predictions[128]
    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    objects = tifffile.imread(paths["objects"])
    dice = 2 * ((objects > 0) & (truth > 0)).sum() / ((objects > 0).sum() + (truth > 0).sum())
    assert dice > 0.8
    assert 80 <= summary.objects <= 150  # the annotation has 125 nuclei
    assert summary.windows == 16 and summary.skipped == 0


def test_outputs_are_consistent_pyramidal_ome_tiffs(nuclei_predictions):
    _, paths = nuclei_predictions[128]
    probabilities = tifffile.imread(paths["probabilities"])
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1, atol=1e-5)
    np.testing.assert_array_equal(tifffile.imread(paths["classes"]), probabilities.argmax(axis=-1))
    with tifffile.TiffFile(paths["objects"]) as tif:
        assert tif.is_ome
        assert [level.shape for level in tif.series[0].levels] == [(512, 512), (256, 256), (128, 128)]


def test_tile_size_barely_changes_the_result(nuclei_predictions):
    small = tifffile.imread(nuclei_predictions[128][1]["classes"])
    whole = tifffile.imread(nuclei_predictions[512][1]["classes"])  # one window holds the image
    assert (small == whole).mean() > 0.99


def test_background_windows_are_skipped(nuclei_model, test_data, tmp_path):
    canvas = np.zeros((1024, 1024), np.uint16)
    canvas[:512, :512] = read_image(test_data / "nuclei.tif").data
    tifffile.imwrite(tmp_path / "slide.tif", canvas, tile=(256, 256))
    model, spec, _ = load_package(nuclei_model)
    options = PredictOptions(tile_size=256, overlap=64, skip_background=True)
    summary = predict_slide(model, spec, tmp_path / "slide.tif", options, objects_path=tmp_path / "objects.tif")
    assert (summary.windows, summary.skipped) == (16, 12)
    objects = tifffile.imread(tmp_path / "objects.tif")
    only_skipped = 512 + options.overlap  # beyond the blend zone of the last windows with tissue
    assert objects[only_skipped:].max() == 0 and objects[:, only_skipped:].max() == 0
    assert summary.objects > 80


def test_prediction_errors_are_clear_and_leave_nothing(nuclei_model, test_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["test-data/he.jpg", "--classes", str(out / "c.tif")], "the model expects 1-channel images; 'he.jpg' has 3"),
        (["test-data/nuclei.tif"], "ask for at least one output"),
        (["test-data/nuclei.tif", "--classes", str(out / "c.tif"), "--tile-size", "100"], "multiple of 32"),
        (["test-data/not_an_image.txt", "--classes", str(out / "c.tif")], "not_an_image.txt"),
    ]
    for arguments, message in cases:
        arguments[0] = str(test_data.parent / arguments[0])
        assert main(["predict", *arguments, "--model", str(nuclei_model)]) == 2
        assert message in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_objects_need_an_instance_model(tmp_path, test_data):
    model = torch.nn.Conv2d(1, 2, 1)
    with pytest.raises(InputError, match="objects come from instance models"):
        predict_slide(model, ModelSpec("semantic", 2, 1), test_data / "nuclei.tif", PredictOptions(),
                      objects_path=tmp_path / "o.tif")


def test_a_prediction_killed_mid_slide_leaves_no_output(nuclei_model, test_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    nuclei = read_image(test_data / "nuclei.tif").data
    write_tiled_image(tmp_path / "slide.tif", (nuclei[:t.height, :t.width] for t in tile_grid(2048, 2048, 512)),
                      (2048, 2048), nuclei.dtype, 512)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "dlhisto_core.cli", "predict", str(tmp_path / "slide.tif"),
                                "--model", str(nuclei_model), "--classes", str(out / "classes.tif"),
                                "--tile-size", "128"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmp_path)})  # a killed run cannot clean up
    time.sleep(8)
    assert process.poll() is None, "the prediction ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert [p.name for p in out.iterdir() if not p.name.endswith(".part")] == []


def test_flips_average_the_predictions_of_the_flipped_image(nuclei_model, test_data):
    """Test-time augmentation: on one window that holds the image, the flipped predictions flipped
    back and averaged, as if the flipped images had been predicted one by one."""
    model, spec, _ = load_package(nuclei_model)
    image = read_image(test_data / "nuclei.tif").data
    one_window = PredictOptions(tile_size=512, overlap=0, device="cpu")
    averaged = probabilities_in_memory(model, spec, image, dataclasses.replace(one_window, flips=True))
    by_hand = np.mean([np.flip(probabilities_in_memory(model, spec, np.flip(image, axes).copy(), one_window), axes)
                       for axes in [(), (1,), (0,), (0, 1)]], axis=0)
    np.testing.assert_allclose(averaged, by_hand, atol=1e-5)
    plain = probabilities_in_memory(model, spec, image, one_window)
    assert np.abs(averaged - plain).max() > 0.01  # the flips do change the result
