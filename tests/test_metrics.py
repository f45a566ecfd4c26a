"""Metrics on hand-made cases with known answers, and instance matching against StarDist's own
implementation (stardist.matching, installed for the tests) on real segmentations."""

import numpy as np
import pytest
import tifffile

from dlhisto_core.base.errors import InputError
from dlhisto_core.evaluation.metrics import aggregated_jaccard_index, classification_scores, confusion_matrix, match_instances, per_class_scores


def test_pixel_scores_of_a_hand_made_case():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    confusion = confusion_matrix(truth, predicted, 2)
    np.testing.assert_array_equal(confusion, [[3, 1], [1, 3]])
    scores = per_class_scores(confusion)[1]
    assert scores["iou"] == pytest.approx(3 / 5) and scores["dice"] == pytest.approx(6 / 8)
    assert scores["precision"] == pytest.approx(3 / 4) and scores["recall"] == pytest.approx(3 / 4)
    absent = per_class_scores(confusion_matrix(truth, predicted, 3))[2]
    assert absent["iou"] is None and absent["true_pixels"] == 0
    with pytest.raises(InputError, match="holds class 1; expected classes 0 to 0"):
        confusion_matrix(truth, predicted, 1)


def test_classification_scores_of_a_hand_made_case():
    confusion = confusion_matrix([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0], 2)
    scores = classification_scores(confusion)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert scores["f1"] == pytest.approx([2 * 3 / (2 * 3 + 1 + 1), 2 * 1 / (2 * 1 + 1 + 1)])


def test_instance_matching_of_a_hand_made_case():
    truth = np.zeros((10, 10), int)
    truth[0:4, 0:4] = 1          # found exactly
    truth[0:4, 6:10] = 2         # found with IoU 12/16 = 0.75
    truth[6:10, 0:4] = 7         # missed
    predicted = np.zeros_like(truth)
    predicted[0:4, 0:4] = 5
    predicted[0:4, 7:10] = 3
    predicted[6:9, 6:9] = 9      # nothing there
    at_half, at_080 = match_instances(truth, predicted, thresholds=(0.5, 0.8))
    assert (at_half.tp, at_half.fp, at_half.fn) == (2, 1, 1)
    assert at_half.precision == pytest.approx(2 / 3) and at_half.recall == pytest.approx(2 / 3)
    assert at_half.average_precision == pytest.approx(2 / 4)
    assert at_half.mean_matched_iou == pytest.approx((1 + 0.75) / 2)
    assert at_half.panoptic_quality == pytest.approx((1 + 0.75) / (2 + 0.5 + 0.5))
    assert (at_080.tp, at_080.fp, at_080.fn) == (1, 2, 2)
    # AJI: (16 + 12) / (16 + 16 + 16 [missed] + 9 [unmatched prediction])
    assert aggregated_jaccard_index(truth, predicted) == pytest.approx(28 / 57)


def test_perfect_and_empty_predictions():
    truth = np.zeros((8, 8), int)
    truth[1:4, 1:4], truth[5:7, 5:8] = 1, 2
    perfect = match_instances(truth, truth * 3)
    assert all(m.f1 == 1 and m.panoptic_quality == 1 for m in perfect)
    assert aggregated_jaccard_index(truth, truth) == 1
    empty = match_instances(truth, np.zeros_like(truth))[0]
    assert (empty.tp, empty.fp, empty.fn, empty.f1) == (0, 0, 2, 0)


@pytest.mark.parametrize("prediction", ["nuclei_labels.tif", "nuclei_groundtruth_shifted"])
def test_instance_matching_agrees_with_stardist(test_data, prediction):
    from stardist.matching import matching as stardist_matching
    truth = tifffile.imread(test_data / "nuclei_groundtruth.tif")
    if prediction == "nuclei_groundtruth_shifted":
        predicted = np.roll(truth, (3, -2), axis=(0, 1))  # every object a little off: IoUs spread over 0.5-0.9
    else:
        predicted = tifffile.imread(test_data / prediction)  # dlhisto's classic segmentation, 112 objects
    ours = match_instances(truth, predicted)
    for mine in ours:
        theirs = stardist_matching(truth, predicted, thresh=mine.threshold)
        assert (mine.tp, mine.fp, mine.fn) == (theirs.tp, theirs.fp, theirs.fn)
        for name, reference in [("precision", theirs.precision), ("recall", theirs.recall), ("f1", theirs.f1),
                                ("average_precision", theirs.accuracy)]:
            assert getattr(mine, name) == pytest.approx(reference, abs=1e-12), name
        # StarDist computes IoUs in float32, dlhisto in float64
        assert mine.panoptic_quality == pytest.approx(theirs.panoptic_quality, abs=1e-6)
        if mine.tp:
            assert mine.mean_matched_iou == pytest.approx(theirs.mean_matched_score, abs=1e-6)
    if prediction == "nuclei_labels.tif":
        assert (ours[0].tp, ours[0].fp, ours[0].fn) == (74, 38, 51)  # the figures quoted in test-data/README.md
