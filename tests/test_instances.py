"""Objects from an instance model's probabilities: tuned thresholds split touching nuclei that
the defaults merge, a package's thresholds are checked, and training records them."""

import zipfile

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from dlhisto_core import DataOptions, TrainOptions, predict, train
from dlhisto_core.evaluation import metrics
from dlhisto_core.dl.patches import make_target
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import read_labels
from dlhisto_core.models.spec import InstanceThresholds
from dlhisto_core.dl.instances import label_objects, tune_thresholds
from dlhisto_core.models.packages import load_package


def blurred_probabilities(truth: np.ndarray, sigma: float) -> np.ndarray:
    """The one-hot background / interior / boundary target, blurred: a network's soft output,
    where the gaps between touching nuclei fill with interior probability."""
    classes = make_target(truth, "instance")
    one_hot = np.stack([classes == k for k in range(3)], axis=-1).astype(np.float32)
    return ndi.gaussian_filter(one_hot, (sigma, sigma, 0))


def f1(truth: np.ndarray, labels: np.ndarray) -> float:
    return metrics.match_instances(truth, labels, [0.5])[0].f1


def test_tuned_thresholds_split_the_nuclei_the_defaults_merge(test_data):
    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    probabilities = blurred_probabilities(truth, sigma=2.0)
    default = f1(truth, label_objects(probabilities, InstanceThresholds()))
    tuning = tune_thresholds([(probabilities, truth)])
    assert default < 0.9
    assert tuning.f1 > 0.98 and tuning.n_objects == len(np.unique(truth)) - 1
    assert tuning.thresholds.interior > 0.5  # a higher seed threshold is what splits them
    assert f1(truth, label_objects(probabilities, tuning.thresholds)) == tuning.f1


def test_label_objects_drops_small_seeds_and_grows_the_rest_inside_the_foreground():
    probabilities = np.zeros((20, 20, 3), np.float32)
    probabilities[..., 0] = 1
    probabilities[2:12, 2:12] = (0.1, 0.1, 0.8)   # foreground
    probabilities[5:9, 5:9] = (0, 1, 0)           # a 16 px seed
    probabilities[15, 15] = (0, 1, 0)             # a 1 px seed, on its own
    labels = label_objects(probabilities, InstanceThresholds(growth=2), min_area=4)
    assert labels.max() == 1 and labels[15, 15] == 0
    seed = np.zeros((20, 20), bool)
    seed[5:9, 5:9] = True
    within_2_px = ndi.distance_transform_edt(~seed) <= 2
    assert ((labels > 0) == within_2_px).all() and within_2_px.sum() == 8 * 8 - 12  # Euclidean: corners cut
    single = label_objects(probabilities, InstanceThresholds(growth=2)) == 2  # kept without min_area ...
    assert single.sum() == 1 and single[15, 15]  # ... and not grown: only background around it


@pytest.mark.parametrize("recorded", [{"interior": 1.5, "foreground": 0.5, "growth": 2},
                                      {"interior": 0.5, "foreground": 0.5, "growth": 99},
                                      {"interior": "high", "foreground": 0.5, "growth": 2}, {"interior": 0.5}, [0.5]])
def test_a_package_with_bad_thresholds_is_refused_in_one_line(recorded):
    with pytest.raises(InputError, match="config.dlhisto.instances is not a set of thresholds"):
        InstanceThresholds.from_dict(recorded, "model.zip")


def test_training_records_the_tuned_thresholds_and_predict_uses_them(nuclei_model, test_data, tmp_path):
    """The test U-Net's package records thresholds tuned on its training image, with their F1
    there; predicting that image through the package gives that F1 again (the tiled labelling
    uses them and matches the in-memory one), and the model card says so."""
    _, _, rdf = load_package(nuclei_model)
    recorded = rdf["config"]["dlhisto"]["instances"]
    assert recorded["tuned_on"] == "training images (1)" and recorded["objects"] == 125
    predict(nuclei_model, test_data / "nuclei.tif", objects=tmp_path / "objects.tif")
    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    assert f1(truth, tifffile.imread(tmp_path / "objects.tif")) == pytest.approx(recorded["f1"], abs=1e-12)
    assert recorded["f1"] > 0.75
    with zipfile.ZipFile(nuclei_model) as package:
        card = package.read("README.md").decode()
    assert f"seeds of interior probability > {recorded['interior']:g}" in card


def test_five_annotated_images_hold_one_out_whole_to_score_objects_and_tune(test_data):
    """With 5 images and no validation images given, training keeps one image out whole (the
    default fraction, 0.2), scores each epoch by the F1 of its objects and tunes on it."""
    names = ["nuclei", "nuclei_q1", "nuclei_q2", "nuclei_q3", "nuclei_q4"]
    lines = []
    trained = train([test_data / f"{n}.tif" for n in names], [test_data / f"{n}_groundtruth.tif" for n in names],
                    data=DataOptions(patch_size=64, patches_per_image=4),
                    options=TrainOptions(epochs=1, batch_size=4, device="cpu", encoder_weights="none"), log=lines.append)
    held_out = [line for line in lines if line.startswith("validation: ")]
    assert len(held_out) == 1 and held_out[0].startswith("validation: 1 of 5 images held out whole (")
    assert trained.state.metric == "f1" and 0 <= trained.state.best_score <= 1
    assert trained.tuning.images == "validation images (1)"
    assert trained.state.history[0]["learning_rate"] == pytest.approx(1e-3)  # the cosine starts at the given rate
