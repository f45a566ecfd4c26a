"""Precision and the pipelined predictor: float32 inference on the fused channels-last network
gives the plain network's numbers; float16 (CUDA's default) holds the bar of issue 22 on the
test U-Net; background windows skip blending with exactly the result of blending them; the
stages of the pipeline stop and hand errors on."""

import threading

import numpy as np
import pytest
import tifffile
import torch

from dlhisto_core.base import pipeline
from dlhisto_core.cli import main
from dlhisto_core.imaging.intensity import scale_channels
from dlhisto_core.models.spec import ModelSpec
from dlhisto_core.dl.options import PredictOptions
from dlhisto_core.dl.engine import blend_weights, slide_range, tissue_map
from dlhisto_core.dl.prediction import probabilities_in_memory
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.images import read_image, read_labels
from dlhisto_core.dl.instances import objects_f1
from dlhisto_core.models.packages import instance_thresholds, load_package
from dlhisto_core.dl.precision import Precision, inference_network, network_precision


def probabilities(model, spec, path, **options):
    """(H, W, K) probabilities of ``path`` on this CPU."""
    return probabilities_in_memory(model, spec, path, PredictOptions(device="cpu", **options))


def test_the_inference_network_computes_what_the_model_does(nuclei_model):
    model, spec, _ = load_package(nuclei_model)
    model.eval()
    x = torch.rand(2, 1, 128, 128)
    network = inference_network(model, torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # folded
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model is untouched
    with torch.inference_mode():
        np.testing.assert_allclose(network(x).numpy(), model(x).numpy(), atol=2e-4)


def test_cpus_predict_in_float32_unless_asked(nuclei_model):
    cpu = torch.device("cpu")
    assert network_precision("auto", cpu).name == "fp32"
    assert network_precision("bf16", cpu).name == "bf16"
    assert network_precision("auto", torch.device("cuda")).name == "fp16"
    assert network_precision("fp32", torch.device("cuda")).name == "fp32"
    with pytest.raises(InputError, match="precision"):
        PredictOptions(precision="fp16")


def test_float16_holds_on_the_test_unet(nuclei_model, test_data, monkeypatch):
    """What --precision auto does on CUDA, computed on this CPU: >= 99.9 % of the class map and
    an F1 change below 0.005 (benchmarks/precision.py: 99.98 %, no change)."""
    from dlhisto_core.dl import engine
    model, spec, rdf = load_package(nuclei_model)
    image, truth = test_data / "nuclei.tif", read_labels(test_data / "nuclei_groundtruth.tif").data
    single = probabilities(model, spec, image)
    monkeypatch.setattr(engine, "network_precision", lambda choice, device: Precision(device, torch.float16))
    half = probabilities(model, spec, image)
    assert not np.array_equal(single, half)  # float16 did run
    assert (single.argmax(-1) == half.argmax(-1)).mean() >= 0.999
    thresholds = instance_thresholds(rdf, nuclei_model.name)
    f1 = [objects_f1([(p, truth)], thresholds).f1 for p in (single, half)]
    assert f1[0] > 0.8 and abs(f1[1] - f1[0]) < 0.005


def test_the_precision_option_reaches_the_summary(nuclei_model, test_data, tmp_path, capsys):
    assert main(["predict", str(test_data / "nuclei_q4.tif"), "--model", str(nuclei_model),
                 "--classes", str(tmp_path / "c.tif"), "--precision", "bf16"]) == 0
    assert "(cpu, bf16)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(test_data / "nuclei_q4.tif"), "--model", str(nuclei_model),
              "--classes", str(tmp_path / "c16.tif"), "--precision", "fp16"])
    assert exit_.value.code == 2 and not (tmp_path / "c16.tif").exists()


def test_skipped_background_windows_give_what_blending_them_would(test_data, tmp_path):
    """Tiles between skipped and predicted windows are blended with class 0 exactly; tiles
    that only skipped windows reach are class 0 without blending."""
    canvas = np.zeros((1024, 1024), np.uint16)
    canvas[:512, :384] = read_image(test_data / "nuclei.tif").data[:, :384]
    tifffile.imwrite(tmp_path / "slide.tif", canvas, tile=(128, 128))
    torch.manual_seed(0)
    model, spec = torch.nn.Conv2d(1, 3, kernel_size=1), ModelSpec("semantic", 3, 1)  # pixel by pixel
    size, overlap = 128, 64
    predicted = probabilities(model, spec, tmp_path / "slide.tif", tile_size=size, overlap=overlap,
                              skip_background=True)
    with TiledImageReader(tmp_path / "slide.tif") as reader:
        (low, high), tissue = slide_range(reader), tissue_map(reader)
    with torch.no_grad():
        pixelwise = torch.softmax(model(torch.from_numpy(scale_channels(canvas, low, high))[None]), 1)
    pixelwise = np.moveaxis(pixelwise[0].numpy(), 0, -1)
    expected, count, skipped = np.zeros((1024 + overlap, 1024 + overlap, 3), np.float32), 1024 // size, 0
    for i in range(count):
        for j in range(count):
            y, x = i * size, j * size
            weights = np.outer(blend_weights(i, count, size, overlap), blend_weights(j, count, size, overlap))
            if tissue.fraction(y, x, size + overlap) < PredictOptions().min_tissue:
                window, skipped = np.eye(3, dtype=np.float32)[0], skipped + 1
            else:
                window = np.pad(pixelwise, ((0, overlap), (0, overlap), (0, 0)), mode="reflect")[
                    y:y + size + overlap, x:x + size + overlap]
            expected[y:y + size + overlap, x:x + size + overlap] += weights[..., None] * window
    assert 20 < skipped < 60
    np.testing.assert_allclose(predicted, expected[:1024, :1024], atol=2e-6)


def test_a_stage_hands_its_error_to_the_consumer():
    def items():
        yield 1
        raise InputError("damaged tile")
    stage = pipeline.in_thread(items())
    assert next(stage) == 1
    with pytest.raises(InputError, match="damaged tile"):
        next(stage)


def test_a_stage_stops_when_its_consumer_does():
    produced = []

    def items():
        for k in range(10_000):
            produced.append(k)
            yield k
    before = threading.active_count()
    stage = pipeline.in_thread(items(), depth=2)
    assert [next(stage) for _ in range(3)] == [0, 1, 2]
    stage.close()
    assert threading.active_count() == before and len(produced) < 10


def test_training_runs_in_mixed_precision_with_a_scaled_loss(test_data, tmp_path, monkeypatch):
    """The CUDA path of training (float16 autocast, gradient scaler), run on this CPU."""
    from dlhisto_core.dl import loop
    from dlhisto_core.dl.options import DataOptions, TrainOptions
    from dlhisto_core.dl.training import train
    half = Precision(torch.device("cpu"), torch.float16)
    monkeypatch.setattr(loop, "network_precision", lambda choice, device: half)
    lines = []
    trained = train([test_data / "nuclei_q1.tif"], labels=[test_data / "nuclei_q1_groundtruth.tif"],
                    data=DataOptions(patch_size=64, patches_per_image=8),
                    options=TrainOptions(epochs=2, batch_size=4, device="cpu", encoder_weights="none"),
                    log=lines.append)
    assert "training on cpu (fp16)" in lines[0] and trained.state.epoch == 2
    assert all(np.isfinite(h["train_loss"]) for h in trained.state.history)


def test_patches_load_in_worker_processes_on_gpus_only(monkeypatch):
    from dlhisto_core.dl.loop import loader_workers
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert loader_workers(torch.device("cpu")) == 0
    assert loader_workers(torch.device("cuda")) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert loader_workers(torch.device("cuda")) == 1


def test_threaded_stages_predict_what_sequential_ones_do(nuclei_model, test_data, monkeypatch):
    """The stages run in threads where there are cores to spare (here: forced) with the same result."""
    from dlhisto_core.dl import engine
    model, spec, _ = load_package(nuclei_model)
    options = dict(tile_size=128, overlap=64, batch_size=3)
    monkeypatch.setattr(engine, "spare_cores", lambda device, threads: False)
    sequential = probabilities(model, spec, test_data / "nuclei.tif", **options)
    monkeypatch.setattr(engine, "spare_cores", lambda device, threads: True)
    threaded = probabilities(model, spec, test_data / "nuclei.tif", **options)
    np.testing.assert_array_equal(threaded, sequential)
    assert pipeline.spare_cores("cuda", 64)
