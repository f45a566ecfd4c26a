"""dlhisto evaluate: per-image and pooled tables from real segmentations."""

import csv

import pytest

from dlhisto_core.cli import main
from dlhisto_core.evaluate import evaluate_classes, evaluate_instances
from dlhisto_core.errors import InputError


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
    from dlhisto_core.image_io import read_labels, write_labels
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
