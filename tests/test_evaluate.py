"""dlhisto evaluate: per-image and pooled tables from real segmentations."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from dlhisto_core.cli import main
from dlhisto_core.evaluation.scoring import evaluate_classes, evaluate_instances
from dlhisto_core.base.errors import InputError


def test_instance_evaluation_pools_counts_over_images(test_data):
    pair = (test_data / "nuclei_groundtruth.tif", test_data / "nuclei_labels.tif", "truth", "classic")
    rows = evaluate_instances([pair, pair], thresholds=(0.5, 0.7))
    single = {r["threshold"]: r for r in rows if r["image"] == "classic"}
    pooled = {r["threshold"]: r for r in rows if r["image"] == "all"}
    assert len(rows) == 2 * 2 + 2
    assert (pooled[0.5]["tp"], pooled[0.5]["fp"], pooled[0.5]["fn"]) == (148, 76, 102)
    for key in ("f1", "precision", "panoptic_quality", "aji"):
        assert pooled[0.5][key] == pytest.approx(single[0.5][key])
    assert pooled[0.7]["tp"] < pooled[0.5]["tp"]


def test_semantic_evaluation_of_the_pixel_classifier(test_data, tmp_path):
    from dlhisto_core.io.images import read_labels
    from dlhisto_core.io.writers import write_labels
    classes = read_labels(test_data / "nuclei_classes.tif").data  # 1 nucleus, 2 background
    write_labels(tmp_path / "foreground.tif", (classes == 1).astype("uint8"))
    rows, confusion = evaluate_classes([(test_data / "nuclei_foreground.tif", tmp_path / "foreground.tif",
                                         "truth", "pixel classifier")], ["background", "nucleus"])
    nucleus = next(r for r in rows if r["image"] == "all" and r["class"] == "nucleus")
    assert confusion.sum() == 512 * 512 and nucleus["true_pixels"] == 52226
    assert 0.75 < nucleus["iou"] < nucleus["dice"] < 0.95


def test_evaluate_command_writes_tables_and_refuses_mismatched_sizes(test_data, tmp_path, capsys):
    table = tmp_path / "table.tsv"
    assert main(["evaluate", "--truth", str(test_data / "nuclei_groundtruth.tif"),
                 "--prediction", str(test_data / "nuclei_labels.tif"), "--thresholds", "0.5", "--table", str(table)]) == 0
    assert "74 matched, 38 false positives, 51 missed" in capsys.readouterr().out
    rows = list(csv.DictReader(table.open(), delimiter="\t"))
    assert [r["image"] for r in rows] == ["nuclei_labels.tif", "all"] and rows[0]["f1"] == "0.624473"
    assert main(["evaluate", "--truth", str(test_data / "nuclei_on_empty_slide.tif"),
                 "--prediction", str(test_data / "nuclei_labels.tif"), "--table", str(tmp_path / "bad.tsv")]) == 2
    assert "differ in size" in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()
    with pytest.raises(InputError, match="nothing to evaluate"):
        evaluate_instances([])


def test_restoration_scores_of_a_denoised_real_image(test_data, tmp_path):
    """PSNR / SSIM / NRMSE of evaluate --mode restoration, checked against their definitions, and
    the gain of a simple denoiser on a noisy real image."""
    from skimage.filters import gaussian

    from dlhisto_core.io.images import read_image

    clean = read_image(test_data / "nuclei.tif").data.astype(np.float32)
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape).astype(np.float32)
    denoised = gaussian(noisy, sigma=1, preserve_range=True).astype(np.float32)
    for name, data in (("clean", clean), ("noisy", noisy), ("denoised", denoised)):
        tifffile.imwrite(tmp_path / f"{name}.tif", data)
    table = tmp_path / "scores.tsv"
    done = subprocess.run([sys.executable, "-m", "dlhisto_core.cli", "evaluate", "--mode", "restoration",
                           "--prediction", str(tmp_path / "noisy.tif"), "--truth", str(tmp_path / "clean.tif"),
                           "--prediction", str(tmp_path / "denoised.tif"), "--truth", str(tmp_path / "clean.tif"),
                           "--table", str(table)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {r["image"]: {k: float(v) for k, v in r.items() if k != "image"}
            for r in csv.DictReader(table.open(), delimiter="\t")}
    value_range = clean.max() - clean.min()
    mse = np.mean((noisy.astype(np.float64) - clean) ** 2)
    assert rows["noisy.tif"]["psnr"] == pytest.approx(10 * np.log10(value_range ** 2 / mse), rel=1e-6)
    assert rows["noisy.tif"]["nrmse"] == pytest.approx(np.sqrt(mse) / value_range, rel=1e-6)
    assert rows["denoised.tif"]["psnr"] - rows["noisy.tif"]["psnr"] > 3  # the denoiser's gain, in dB
    assert rows["denoised.tif"]["ssim"] > rows["noisy.tif"]["ssim"]
    assert rows["all"]["psnr"] == pytest.approx((rows["noisy.tif"]["psnr"] + rows["denoised.tif"]["psnr"]) / 2)


def test_objects_made_at_a_models_pixel_size_are_scored_on_the_truths_pixels(test_data, tmp_path):
    """predict writes a model's objects at the model's pixel size: scored against a truth that
    records another one and covers the same area, they are resampled onto the truth's pixels;
    without pixel sizes, other sizes are still refused."""
    from dlhisto_core.io.images import read_labels
    from dlhisto_core.io.writers import write_labels

    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    finer = np.repeat(np.repeat(truth, 2, axis=0), 2, axis=1)  # the same objects at half the pixel size
    write_labels(tmp_path / "truth.tif", truth, (0.65, 0.65))
    write_labels(tmp_path / "finer.tif", finer, (0.325, 0.325))
    write_labels(tmp_path / "unrecorded.tif", finer)
    pooled = evaluate_instances([(tmp_path / "truth.tif", tmp_path / "finer.tif")], [0.5])[-1]
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["f1"]) == (125, 0, 0, 1.0)
    with pytest.raises(InputError, match=r"\(1024x1024\) and ground truth 'truth.tif' \(512x512\) differ in size"):
        evaluate_instances([(tmp_path / "truth.tif", tmp_path / "unrecorded.tif")], [0.5])
