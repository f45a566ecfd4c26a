import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.cluster.vq import kmeans
from skimage import draw, filters

from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import read_image, read_labels, single_channel
from dlhisto_core.imaging.preprocessing import gaussian_smooth
from dlhisto_core.classic.segmentation import ClassicOptions, kmeans_threshold, segment_classic, threshold_value


def two_touching_disks(shape=(80, 120)) -> np.ndarray:
    image = np.zeros(shape, np.float32)
    for centre in [(40, 45), (40, 75)]:  # radius 18, centres 30 apart: they overlap
        image[draw.disk(centre, 18, shape=shape)] = 100
    return image


def matched_at_iou_half(truth: np.ndarray, predicted: np.ndarray) -> int:
    """Objects of ``truth`` that one predicted object overlaps with IoU > 0.5 (a unique match)."""
    n_pred = predicted.max() + 1
    overlap = np.bincount(truth.ravel().astype(np.int64) * n_pred + predicted.ravel(),
                          minlength=(truth.max() + 1) * n_pred).reshape(-1, n_pred)
    inter = overlap[1:, 1:]
    union = overlap.sum(1)[1:, None] + overlap.sum(0)[None, 1:] - inter
    return int(((inter / union) > 0.5).sum())


def test_kmeans_threshold_of_two_clusters_is_the_midpoint_of_their_means():
    values = np.concatenate([np.full(300, 10.0), np.full(100, 50.0), [12, 8, 48, 52]])
    assert kmeans_threshold(values) == pytest.approx(30.0)


def test_kmeans_threshold_agrees_with_scipy_kmeans_on_real_nuclei(test_data):
    smoothed = gaussian_smooth(read_image(test_data / "nuclei.tif").data, 3).astype(float)
    centres, _ = kmeans(smoothed.reshape(-1, 1), np.array([[smoothed.min()], [smoothed.max()]]))
    assert kmeans_threshold(smoothed) == pytest.approx(centres.mean(), abs=1e-3)
    assert kmeans_threshold(smoothed) == pytest.approx(filters.threshold_isodata(smoothed), abs=1.5)


@pytest.mark.parametrize("method", ["kmeans", "otsu", "li", "triangle"])
def test_threshold_methods_separate_a_bimodal_image(method):
    rng = np.random.default_rng(7)
    foreground = rng.random((64, 64)) < 0.3
    image = np.where(foreground, 200.0, 20.0) + rng.normal(0, 5, (64, 64))
    agreement = ((image > threshold_value(image, method)) == foreground).mean()
    assert agreement > 0.999  # Otsu's 256-bin histogram may put one noise pixel on the wrong side


def test_manual_threshold_needs_a_value_and_uniform_images_are_refused():
    with pytest.raises(InputError, match="needs a threshold value"):
        threshold_value(np.zeros((4, 4)), "manual")
    assert threshold_value(np.zeros((4, 4)), "manual", 3.5) == 3.5
    with pytest.raises(InputError, match="uniform"):
        segment_classic(np.full((32, 32), 7.0), ClassicOptions())


def test_watershed_splits_two_touching_disks():
    image = two_touching_disks()
    split = segment_classic(image, ClassicOptions(sigma=1, min_distance=10)).labels
    merged = segment_classic(image, ClassicOptions(sigma=1, watershed=False)).labels
    assert split.max() == 2 and merged.max() == 1
    left, right = (split == split[40, 40]), (split == split[40, 80])
    assert split[40, 40] != split[40, 80] and abs(int(left.sum()) - int(right.sum())) < 40


def test_small_objects_are_removed_and_dark_objects_found():
    image = np.zeros((60, 60), np.float32)
    image[10:20, 10:20] = 100  # 100 px
    image[40:45, 40:45] = 100  # 25 px
    labels = segment_classic(image, ClassicOptions(sigma=0, min_area=60)).labels
    assert labels.max() == 1 and (labels > 0).sum() == 100
    dark = segment_classic(100 - image, ClassicOptions(sigma=0, min_area=10, dark_objects=True)).labels
    assert dark.max() == 2


def test_exclude_border_drops_objects_touching_the_edge():
    image = np.zeros((60, 60), np.float32)
    image[0:12, 20:32] = 100
    image[30:42, 30:42] = 100
    labels = segment_classic(image, ClassicOptions(sigma=0, exclude_border=True)).labels
    assert labels.max() == 1 and labels[35, 35] == 1


def test_labels_are_sequential_from_one(test_data):
    labels = segment_classic(read_image(test_data / "nuclei.tif").data, ClassicOptions()).labels
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    sizes = ndi.sum_labels(np.ones_like(labels), labels, np.arange(1, labels.max() + 1))
    assert sizes.min() >= 60


def test_defaults_on_real_nuclei_match_the_human_annotation(test_data):
    """DSB2018 nuclei: the annotator drew 125 nuclei; the classic pipeline must come close."""
    image = read_image(test_data / "nuclei.tif").data
    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    _, truth = np.unique(truth, return_inverse=True)
    labels = segment_classic(image, ClassicOptions()).labels
    assert labels.max() == 112
    matched = matched_at_iou_half(truth.reshape(image.shape), labels)
    f1 = 2 * matched / (truth.max() + labels.max())
    assert matched >= 70 and f1 >= 0.6, (matched, f1)  # measured: 74 matched, F1 0.624


def test_single_channel_selection():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200
    assert single_channel(rgb, 1).max() == 200
    assert single_channel(rgb).shape == (4, 4)  # RGB luminance
    with pytest.raises(InputError, match="has 5 channels; choose"):
        single_channel(np.zeros((4, 4, 5)))
    with pytest.raises(InputError, match="channel 4 does not exist"):
        single_channel(rgb, 3)
