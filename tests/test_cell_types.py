"""Cell types: object features, the object classifier, counts per type and region, and typed
evaluation, on histolytics' typed nuclei (test-data/hgsc_types_*, a segmentation model's
nuclei and types, not an expert's), against reference implementations where one exists
(scikit-image's regionprops and colour deconvolution, StarDist's matching, numpy counts)."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile

from dlhisto_core import object_classifier
from dlhisto_core.classic.cell_counts import CountOptions, count_cells
from dlhisto_core.classic.object_classes import ObjectClasses, read_object_classes
from dlhisto_core.classic.object_features import ObjectFeatureOptions, object_features
from dlhisto_core.evaluation.scoring import evaluate
from dlhisto_core.ml.pixel_classifier import ForestOptions

TYPES = ["connective", "inflammatory", "neoplastic"]
HELD_OUT_TYPE_ACCURACY = 0.80
"""Measured 0.821 (100 trees) on the 599 held-out nuclei: the object classifier's types of the
matched nuclei against histolytics' type map."""


def dlhisto(*args):
    return subprocess.run([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def typed(test_data):
    """The train and held-out parts: (image, labels, type map) paths."""
    return {use: tuple(test_data / f"hgsc_types_{use}{suffix}.ome.tif" for suffix in ("", "_labels", "_types"))
            for use in ("train", "held_out")}


@pytest.fixture(scope="module")
def classifier(typed):
    image, labels, types = typed["train"]
    return object_classifier.train([(image, labels, read_object_classes(types, labels, class_names=TYPES))])


def test_features_match_scikit_image_and_do_not_depend_on_the_strips(typed):
    from skimage.color import rgb2hed
    from skimage.measure import regionprops

    image, labels, _ = typed["held_out"]
    whole = object_features(labels, image)
    strips = object_features(labels, image, ObjectFeatureOptions(strip_height=40))
    np.testing.assert_array_equal(whole.labels, strips.labels)
    np.testing.assert_allclose(whole.values, strips.values, rtol=1e-5)
    label_image, rgb = tifffile.imread(labels), tifffile.imread(image)
    hed = rgb2hed(rgb)
    column = {name: k for k, name in enumerate(whole.names)}
    for region in regionprops(label_image)[::50]:
        row = whole.values[np.searchsorted(whole.labels, region.label)]
        assert row[column["area_um2"]] == pytest.approx(region.area * 0.44 ** 2, rel=1e-5)
        assert row[column["perimeter_um"]] == pytest.approx(region.perimeter * 0.44, rel=1e-5)
        assert row[column["solidity"]] == pytest.approx(region.solidity, rel=1e-5)
        inside = hed[label_image == region.label]
        assert row[column["hematoxylin_mean"]] == pytest.approx(inside[:, 0].mean(), rel=1e-4)
        assert row[column["eosin_max"]] == pytest.approx(inside[:, 1].max(), rel=1e-4)
        assert row[column["dab_std"]] == pytest.approx(inside[:, 2].std(), rel=1e-3)
    assert whole.pixel_size == pytest.approx(0.44)


def test_classes_from_a_type_map_a_table_and_geojson_agree(typed, tmp_path):
    _, labels, types = typed["held_out"]
    voted = read_object_classes(types, labels, class_names=TYPES)
    assert len(voted.labels) == 599 and np.bincount(voted.classes).tolist() == [0, 199, 268, 132]
    table = tmp_path / "classes.tsv"
    table.write_text("label\tclass\n" + "".join(f"{label}\t{TYPES[k - 1]}\n"
                                                 for label, k in zip(voted.labels, voted.classes)))
    from_table = read_object_classes(table, labels, class_names=TYPES)
    np.testing.assert_array_equal(from_table.classes, voted.classes)
    points = tmp_path / "points.geojson"  # one classified QuPath point on the centre pixel of three nuclei
    label_image = tifffile.imread(labels)
    features = []
    for label in voted.labels[:3]:
        rows, cols = np.nonzero(label_image == label)
        k = len(rows) // 2
        features.append(f'{{"type":"Feature","geometry":{{"type":"Point","coordinates":[{cols[k] + 0.5},'
                        f'{rows[k] + 0.5}]}},"properties":{{"classification":{{"name":"inflammatory"}}}}}}')
    points.write_text('{"type":"FeatureCollection","features":[' + ",".join(features) + "]}")
    from_points = read_object_classes(points, labels, class_names=TYPES)
    assert from_points.labels.tolist() == voted.labels[:3].tolist() and set(from_points.classes) == {2}


def test_the_classifier_types_held_out_nuclei_and_survives_saving(typed, classifier, tmp_path):
    image, labels, types = typed["held_out"]
    result = object_classifier.classify_objects(classifier, image, labels)
    scores = evaluate([labels], [labels], "typed", class_names=TYPES, truth_classes=[types],
                      prediction_classes=[result.as_object_classes()])
    pooled = next(r for r in scores.rows if r["image"] == "all" and r["class"] == "all")
    assert pooled["type_accuracy"] > HELD_OUT_TYPE_ACCURACY
    path = tmp_path / "classifier.zip"
    object_classifier.save(classifier, path)
    again = object_classifier.classify_objects(object_classifier.load(path), image, labels)
    np.testing.assert_array_equal(again.probabilities, result.probabilities)


def test_a_pixel_classifier_or_a_pickle_is_not_an_object_classifier(test_data, tmp_path):
    with pytest.raises(Exception, match="is not a dlhisto object classifier \\(format 'dlhisto-pixel-classifier'\\)"):
        object_classifier.load(test_data / "nuclei_classifier.zip")
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(test_data / "cell_types_classifier.zip") as source, zipfile.ZipFile(forged, "w") as target:
        target.writestr("classifier.json", source.read("classifier.json"))
        target.writestr("forest.skops", (test_data / "code_in_pickle.pt").read_bytes())
    with pytest.raises(Exception, match="holds no readable forest|not allowed"):
        object_classifier.load(forged)


def test_typed_scores_agree_with_stardist_class_by_class(typed, tmp_path):
    from stardist.matching import matching

    _, labels, types = typed["held_out"]
    truth = tifffile.imread(labels)
    true_classes = read_object_classes(types, labels, class_names=TYPES)
    rng = np.random.default_rng(0)  # a prediction: the truth shifted, a fifth of the types changed, some dropped
    predicted = np.roll(truth, (2, -1), axis=(0, 1)) * (rng.random(truth.max() + 1) > 0.1)[np.roll(truth, (2, -1),
                                                                                                    axis=(0, 1))]
    changed = np.where(rng.random(len(true_classes.labels)) < 0.2, rng.integers(1, 4, len(true_classes.labels)),
                       true_classes.classes)
    predicted_classes = ObjectClasses(true_classes.labels, changed, TYPES)
    tifffile.imwrite(tmp_path / "predicted.tif", predicted.astype(np.uint16))
    scores = evaluate([tmp_path / "predicted.tif"], [labels], "typed", class_names=TYPES, truth_classes=[true_classes],
                      prediction_classes=[predicted_classes])
    pooled = {r["class"]: r for r in scores.rows if r["image"] == "all"}
    qualities = []
    for k, name in enumerate(TYPES, 1):
        theirs = matching(np.where(np.isin(truth, true_classes.labels[true_classes.classes == k]), truth, 0),
                          np.where(np.isin(predicted, true_classes.labels[changed == k]), predicted, 0), thresh=0.5)
        assert (pooled[name]["tp"], pooled[name]["fp"], pooled[name]["fn"]) == (theirs.tp, theirs.fp, theirs.fn)
        assert pooled[name]["f1"] == pytest.approx(theirs.f1)
        assert pooled[name]["panoptic_quality"] == pytest.approx(theirs.panoptic_quality, abs=1e-6)
        qualities.append(theirs.panoptic_quality)
    assert pooled["mean"]["panoptic_quality"] == pytest.approx(np.mean(qualities), abs=1e-6)
    assert scores.confusion.sum() == pooled["all"]["tp"]  # every matched object has a class on both sides
    assert np.trace(scores.confusion) < scores.confusion.sum()  # the changed types show
    scores.write(tmp_path / "scores.tsv", tmp_path / "confusion.tsv", tmp_path / "report.html")
    report = (tmp_path / "report.html").read_text()
    assert f"mPQ {pooled['mean']['panoptic_quality']:.6g}" in report and "<svg" in report


def test_counts_per_type_and_region_match_numpy(typed, test_data):
    _, labels, types = typed["held_out"]
    classes = read_object_classes(types, labels, class_names=TYPES)
    regions = np.zeros((183, 375), np.uint8)  # a region map four times coarser than the labels
    regions[:, :100] = 1
    regions[:, 100:] = 2
    rows = count_cells(labels, classes, regions, "class_map", CountOptions(region_names=("tumour", "stroma")))
    label_image = tifffile.imread(labels)
    ys, xs = np.nonzero(label_image)
    ids = label_image[ys, xs]
    centre_x = np.bincount(ids, xs) / np.maximum(np.bincount(ids), 1)
    left = centre_x[classes.labels] < 400
    got = {(r["region"], r["cell_type"]): r for r in rows}
    for k, name in enumerate(TYPES, 1):
        assert got["tumour", name]["count"] == int(((classes.classes == k) & left).sum())
        assert got["stroma", name]["count"] == int(((classes.classes == k) & ~left).sum())
    area_mm2 = 732 * 400 * 0.44 ** 2 * 1e-6  # 100 of 375 map columns: 400 of 1500 label columns
    assert got["tumour", "all"]["region_area_mm2"] == pytest.approx(area_mm2, rel=0.01)
    assert got["tumour", "inflammatory"]["density_per_mm2"] == pytest.approx(
        got["tumour", "inflammatory"]["count"] / got["tumour", "all"]["region_area_mm2"])
    geojson = count_cells(labels, classes, test_data / "held_out_regions.geojson")
    halves = {(r["region"], r["cell_type"]): r["count"] for r in geojson}
    assert halves["Left half", "all"] + halves["Right half", "all"] == halves["whole image", "all"] == 599


def test_the_command_line_gives_the_api_numbers(typed, tmp_path):
    image, labels, types = typed["train"]
    held_image, held_labels, held_types = typed["held_out"]
    classifier_path, table, counts = tmp_path / "c.zip", tmp_path / "types.tsv", tmp_path / "counts.tsv"
    assert dlhisto("object_classifier_train", "--image", image, "--labels", labels, "--classes", types,
                   "--class-names", ",".join(TYPES), "--trees", 20, "--classifier", classifier_path).returncode == 0
    assert dlhisto("object_classifier_apply", held_image, "--labels", held_labels, "--classifier", classifier_path,
                   "--table", table).returncode == 0
    assert dlhisto("count_cells", "--labels", held_labels, "--classes", table, "--table", counts).returncode == 0
    api = object_classifier.classify_objects(object_classifier.load(classifier_path), held_image, held_labels)
    expected = count_cells(held_labels, api.as_object_classes())
    lines = counts.read_text().splitlines()[1:]
    assert [int(line.split("\t")[3]) for line in lines] == [r["count"] for r in expected]
    trained = object_classifier.train([(image, labels, read_object_classes(types, labels, class_names=TYPES))],
                                      forest=ForestOptions(trees=20))
    assert trained.training["out_of_bag_accuracy"] == pytest.approx(
        object_classifier.load(classifier_path).training["out_of_bag_accuracy"])


@pytest.mark.parametrize("case, message", [
    ("table", "'classes.tsv' names 1 object(s) not in the label image, e.g. label 99999"),
    ("size", "the class map 'nuclei_classes.tif' is 512 x 512 pixels, the labels"),
    ("unknown", "has class(es) tumour unknown to the classifier (it knows connective, inflammatory, neoplastic)"),
    ("regions", "the regions of 'cmu_regions.geojson' do not overlap the label image (1500 x 732 pixels)"),
])
def test_bad_inputs_are_one_line_and_leave_nothing(typed, test_data, tmp_path, case, message):
    image, labels, types = typed["held_out"]
    table = tmp_path / "classes.tsv"
    table.write_text("label\tclass\n99999\tneoplastic\n" if case == "table" else "label\tclass\n72\ttumour\n")
    out = tmp_path / "out.tsv"
    if case == "regions":
        result = dlhisto("count_cells", "--labels", labels, "--regions", test_data / "cmu_regions.geojson",
                         "--table", out)
    else:
        classes = test_data / "nuclei_classes.tif" if case == "size" else table
        result = dlhisto("object_classifier_train", "--image", image, "--labels", labels, "--classes", classes,
                         "--class-names", ",".join(TYPES), "--classifier", out)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not out.exists()


def test_a_type_map_types_each_object_by_the_vote_of_its_pixels():
    labels = np.zeros((6, 9), np.uint16)
    labels[1:5, 1:4], labels[1:5, 5:8], labels[0, 8] = 3, 7, 9
    type_map = np.zeros((6, 9), np.uint8)
    type_map[1:5, 1:3], type_map[1:5, 3] = 2, 1  # object 3: 8 pixels of type 2, 4 of type 1
    type_map[1:3, 5:8], type_map[3:5, 5:8] = 1, 3  # object 7: a tie, the lower type wins
    typed = object_classifier.type_objects(labels, type_map, ["a", "b", "c"])  # object 9: no typed pixel
    assert typed.labels.tolist() == [3, 7, 9] and typed.classes.tolist() == [2, 1, 0]
    np.testing.assert_allclose(typed.probabilities, [[1 / 3, 2 / 3, 0], [0.5, 0, 0.5], [0, 0, 0]])
    assert [row["class"] for row in typed.rows()] == ["b", "a", ""]
    untyped = read_object_classes(np.zeros_like(type_map), labels, class_names=["a"])  # a map with no class
    assert untyped.labels.size == untyped.classes.size == 0
    counts = {r["cell_type"]: r["count"] for r in count_cells(labels, typed.as_object_classes())}
    assert counts == {"all": 3, "a": 1, "b": 1, "c": 0, "unclassified": 1}
