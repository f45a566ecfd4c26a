"""dlhisto crossval: folds, roles and scores on the four annotated quadrants of the nuclei image."""

import csv

import numpy as np
import pytest

from dlhisto_core.dl.options import DataOptions, TrainOptions
from dlhisto_core.study import crossval
from dlhisto_core.cli import main
from dlhisto_core.base.errors import InputError
from dlhisto_core.evaluation.scoring import evaluate_instances
from dlhisto_core.io.images import read_image, read_labels, single_channel
from dlhisto_core.io.writers import write_labels
from dlhisto_core.classic.segmentation import ClassicOptions, segment_classic


@pytest.fixture
def quadrants(test_data):
    return [crossval.AnnotatedImage(str(test_data / f"nuclei_q{k}.tif"),
                                    str(test_data / f"nuclei_q{k}_groundtruth.tif"), f"q{k}") for k in range(1, 5)]


def test_folds_partition_the_images_evenly_and_reproducibly():
    folds = crossval.make_folds(10, 3, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(10))
    assert sorted(len(fold) for fold in folds) == [3, 3, 4]
    assert folds == crossval.make_folds(10, 3, seed=0) != crossval.make_folds(10, 3, seed=1)


def test_summary_is_the_mean_and_sample_sd_over_folds():
    rows = [{"fold": k, "role": "validation", "f1": f} for k, f in enumerate([0.5, 0.7, 0.9], 1)]
    mean, sd = crossval.mean_and_sd(rows, ["f1"])
    assert (mean["fold"], mean["f1"]) == ("mean", pytest.approx(0.7))
    assert (sd["fold"], sd["f1"]) == ("sd", pytest.approx(0.2))


def test_classic_crossval_scores_each_fold_as_evaluate_would(quadrants, tmp_path):
    options = crossval.CrossValOptions(method="classic", folds=3, sigmas=(1.0, 3.0))
    rows = crossval.cross_validate(quadrants[:3], quadrants[3:], options, log=lambda line: None)
    per_fold = [r for r in rows if isinstance(r["fold"], int)]
    assert [(r["fold"], r["role"]) for r in per_fold] == [(k, role) for k in (1, 2, 3) for role in ("validation", "test")]
    validated = [r["images"] for r in per_fold if r["role"] == "validation"]
    assert sorted(validated) == ["q1", "q2", "q3"]  # each pool image validated once
    assert all(r["images"] == "q4" and r["trained_on"] == 2 for r in per_fold if r["role"] == "test")
    for row in per_fold:  # the same counts as segmenting with the chosen sigma and running evaluate
        item = next(q for q in quadrants if q.name == row["images"])
        plane = single_channel(read_image(item.image).data, None)
        labels = segment_classic(plane, ClassicOptions(sigma=row["sigma"])).labels
        expected = _evaluate(item, labels, tmp_path)
        assert (row["tp"], row["fp"], row["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
        assert row["aji"] == pytest.approx(expected["aji"])
    mean = next(r for r in rows if r["fold"] == "mean" and r["role"] == "validation")
    assert mean["f1"] == pytest.approx(np.mean([r["f1"] for r in per_fold if r["role"] == "validation"]))


def _evaluate(item, labels, tmp_path):
    write_labels(tmp_path / "prediction.tif", labels)
    return evaluate_instances([(item.labels, tmp_path / "prediction.tif", "truth", "prediction")], [0.5])[0]


def test_pixel_classifier_crossval_on_classes(quadrants, tmp_path):
    semantic = []
    for item in quadrants:  # the annotation as classes: 0 background, 1 nucleus
        path = tmp_path / f"{item.name}_classes.tif"
        write_labels(path, (read_labels(item.labels).data > 0).astype(np.uint8))
        semantic.append(item._replace(labels=str(path)))
    options = crossval.CrossValOptions(method="pixel_classifier", task="semantic", folds=3, trees=20,
                                       pixels_per_class=500)
    rows = crossval.cross_validate(semantic[:3], semantic[3:], options, log=lambda line: None)
    mean = {r["role"]: r for r in rows if r["fold"] == "mean"}
    assert 0.6 < mean["validation"]["mean_iou"] < mean["validation"]["mean_dice"] < 1
    assert 0.9 < mean["test"]["pixel_accuracy"] < 1


def test_unet_crossval_trains_one_network_per_fold_and_tunes_it_on_its_training_folds(quadrants):
    options = crossval.CrossValOptions(method="unet", folds=2, train=TrainOptions(epochs=1, batch_size=8, device="cpu"),
                                       data=DataOptions(patch_size=64, patches_per_image=8))
    lines = []
    rows = crossval.cross_validate(quadrants[:2], [], options, log=lines.append)
    assert [(r["fold"], r["role"], r["best_epoch"]) for r in rows[:2]] == [(1, "validation", 1), (2, "validation", 1)]
    assert [r["fold"] for r in rows[2:]] == ["mean", "sd"] and len(lines) == 4
    # the object thresholds come from the training fold: the validation fold's score is held out
    assert [r["tuned_on"] for r in rows[:2]] == ["training images (1)"] * 2


def test_crossval_command_writes_the_table_and_refuses_bad_roles(test_data, tmp_path, capsys):
    pool = [arg for k in (1, 2, 3) for arg in ("--image", str(test_data / f"nuclei_q{k}.tif"),
                                                "--labels", str(test_data / f"nuclei_q{k}_groundtruth.tif"))]
    test = ["--test-image", str(test_data / "nuclei_q4.tif"), "--test-labels", str(test_data / "nuclei_q4_groundtruth.tif")]
    table = tmp_path / "crossval.tsv"
    assert main(["crossval", "--folds", "3", "--sigmas", "1,3", *pool, *test, "--table", str(table)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(table.open(), delimiter="\t"))
    mean = next(r for r in rows if r["fold"] == "mean" and r["role"] == "test")
    sd = next(r for r in rows if r["fold"] == "sd" and r["role"] == "test")
    assert f"test: f1 {float(mean['f1']):.3f} +- {float(sd['f1']):.3f} over 3 folds" in out
    assert main(["crossval", "--folds", "4", *pool, "--table", str(tmp_path / "bad.tsv")]) == 2
    assert "4 folds need at least 4 annotated images, got 3" in capsys.readouterr().err
    same = ["--test-image", str(test_data / "nuclei_q1.tif"), "--test-labels", str(test_data / "nuclei_q1_groundtruth.tif")]
    assert main(["crossval", "--folds", "3", *pool, *same, "--table", str(tmp_path / "bad.tsv")]) == 2
    assert "both in the cross-validation pool and in the test set" in capsys.readouterr().err
    assert main(["crossval", "--folds", "2", *pool[:4], "--image", pool[5], "--table", str(tmp_path / "bad.tsv")]) == 2
    assert "2 images but 1 label images for --labels" in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()
    with pytest.raises(InputError, match="at least 2 folds"):
        crossval.CrossValOptions(folds=1)
