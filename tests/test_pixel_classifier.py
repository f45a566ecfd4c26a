import json
import zipfile

import numpy as np
import pytest
import skops.io
import tifffile

from dlhisto_core.ml import pixel_classifier
from dlhisto_core.base.errors import InputError
from dlhisto_core.imaging.features import FeatureSettings
from dlhisto_core.io.images import read_labels


@pytest.fixture(scope="module")
def trained(test_data):
    return pixel_classifier.train(
        [(test_data / "nuclei.tif", test_data / "nuclei_scribbles.tif")], FeatureSettings(),
        ["nucleus", "background"], validation_pairs=[(test_data / "nuclei.tif", test_data / "nuclei_heldout.tif")])


@pytest.fixture(scope="module")
def test_data():
    from conftest import TEST_DATA
    return TEST_DATA


def test_scribbles_classify_the_held_out_annotated_pixels(trained, test_data, tmp_path):
    """861 scribbled pixels; accuracy measured on the 261283 other annotated pixels."""
    training = trained.training
    assert training["annotated_pixels"] == 861 and training["validation_pixels"] == 261283
    assert training["validation_accuracy"] > 0.95  # measured 0.9547
    nucleus = training["classes"][0]
    assert nucleus["class"] == "nucleus" and nucleus["validation_accuracy"] > 0.9  # measured 0.9155
    # the same figure, recomputed independently from the written class map
    pixel_classifier.classify_pixels(trained, test_data / "nuclei.tif", tmp_path / "p.tif", tmp_path / "c.tif",
                                     pixel_classifier.ClassifyPixelsOptions(256))
    classes = tifffile.imread(tmp_path / "c.tif")
    heldout = read_labels(test_data / "nuclei_heldout.tif").data
    annotated = heldout > 0
    assert (classes[annotated] == heldout[annotated]).mean() == pytest.approx(training["validation_accuracy"])


def test_a_classifier_records_its_pixel_size_and_works_at_it(test_data, tmp_path):
    """Trained on nuclei.tif recorded at 0.5 µm, a classifier works at 0.5 µm on the same section
    scanned at 0.25 µm (twice the pixels): its filters, sized in pixels, see nuclei at the size
    they learned; asked for 0.25 µm, it works at that."""
    from dlhisto_core.io.readers import TiledImageReader
    from dlhisto_core.io.images import read_image
    from dlhisto_core.io.writers import write_image

    nuclei = read_image(test_data / "nuclei.tif").data
    write_image(tmp_path / "half_micron.ome.tif", nuclei, (0.5, 0.5))
    write_image(tmp_path / "quarter_micron.ome.tif", np.repeat(np.repeat(nuclei, 2, 0), 2, 1), (0.25, 0.25))
    classifier = pixel_classifier.train([(tmp_path / "half_micron.ome.tif", test_data / "nuclei_scribbles.tif")],
                                        FeatureSettings(), ["nucleus", "background"],
                                        forest=pixel_classifier.ForestOptions(trees=20))
    pixel_classifier.save(classifier, tmp_path / "c.zip")
    classifier = pixel_classifier.load(tmp_path / "c.zip")
    assert classifier.pixel_size == 0.5
    outputs = {}
    for image, options in (("half_micron", None), ("quarter_micron", None),
                           ("quarter_micron", pixel_classifier.ClassifyPixelsOptions(pixel_size=0.25))):
        out = (tmp_path / f"{image}_p.tif", tmp_path / f"{image}_{len(outputs)}_c.tif")
        pixel_classifier.classify_pixels(classifier, tmp_path / f"{image}.ome.tif", *out, options)
        with TiledImageReader(out[1]) as classes:
            outputs[len(outputs)] = (classes.pixel_size, classes.read_region(0, 0, *classes.shape[:2]))
    (size_a, direct), (size_b, resampled), (size_c, at_quarter) = outputs.values()
    assert size_a == size_b == (0.5, 0.5) and direct.shape == resampled.shape == (512, 512)
    assert (direct == resampled).mean() > 0.97
    assert size_c == (0.25, 0.25) and at_quarter.shape == (1024, 1024)
    untrained = pixel_classifier.load(test_data / "nuclei_classifier.zip")  # made before pixel sizes were recorded
    assert untrained.pixel_size is None


def test_prediction_does_not_depend_on_the_tile_size(trained, test_data, tmp_path):
    pixel_classifier.classify_pixels(trained, test_data / "nuclei.tif", tmp_path / "p1.tif", tmp_path / "c1.tif",
                                     pixel_classifier.ClassifyPixelsOptions(128))
    pixel_classifier.classify_pixels(trained, test_data / "nuclei.tif", tmp_path / "p2.tif", tmp_path / "c2.tif",
                                     pixel_classifier.ClassifyPixelsOptions(512))
    p1, p2 = tifffile.imread(tmp_path / "p1.tif"), tifffile.imread(tmp_path / "p2.tif")
    assert p1.shape == (512, 512, 2)
    np.testing.assert_allclose(p1.sum(axis=-1), 1, atol=1e-5)
    np.testing.assert_array_equal(p1, p2)


def test_same_seed_same_classifier(test_data):
    pairs = [(test_data / "nuclei.tif", test_data / "nuclei_scribbles.tif")]
    settings = FeatureSettings(scales=(1.0, 3.0))
    first = pixel_classifier.train(pairs, settings, forest=pixel_classifier.ForestOptions(trees=10, seed=3))
    second = pixel_classifier.train(pairs, settings, forest=pixel_classifier.ForestOptions(trees=10, seed=3))
    x = np.random.default_rng(0).random((100, len(settings.names(1))), dtype=np.float32)
    np.testing.assert_array_equal(first.forest.predict_proba(x), second.forest.predict_proba(x))


def test_save_and_load_round_trip(trained, tmp_path):
    pixel_classifier.save(trained, tmp_path / "c.zip")
    loaded = pixel_classifier.load(tmp_path / "c.zip")
    assert loaded.class_names == ["nucleus", "background"] and loaded.settings == trained.settings
    x = np.random.default_rng(1).random((50, len(trained.settings.names(1))), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forest.predict_proba(x), trained.forest.predict_proba(x))
    metadata = json.loads(zipfile.ZipFile(tmp_path / "c.zip").read("classifier.json"))
    assert metadata["training"]["validation_accuracy"] == trained.training["validation_accuracy"]


def _classifier_zip(path, forest_bytes, metadata=None):
    metadata = metadata or {"format": "dlhisto-pixel-classifier", "format_version": 1,
                            "features": FeatureSettings().to_dict(), "class_names": ["a", "b"], "n_channels": 1}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("classifier.json", json.dumps(metadata))
        archive.writestr("forest.skops", forest_bytes)


def test_a_classifier_carrying_code_is_refused_without_running_it(tmp_path):
    import os
    _classifier_zip(tmp_path / "evil.zip", skops.io.dumps({"payload": os.system}))
    with pytest.raises(InputError, match="types that are not allowed in a classifier: .*system"):
        pixel_classifier.load(tmp_path / "evil.zip")


def test_a_pickle_instead_of_a_forest_is_refused(tmp_path):
    import pickle
    _classifier_zip(tmp_path / "pickle.zip", pickle.dumps({"not": "a forest"}))
    with pytest.raises(InputError, match="holds no readable forest"):
        pixel_classifier.load(tmp_path / "pickle.zip")


def test_other_files_are_not_classifiers(tmp_path, test_data):
    with pytest.raises(InputError, match="is not a dlhisto pixel classifier"):
        pixel_classifier.load(test_data / "he.jpg")
    _classifier_zip(tmp_path / "other.zip", b"", {"format": "something-else"})
    with pytest.raises(InputError, match="format 'something-else'"):
        pixel_classifier.load(tmp_path / "other.zip")


def test_training_needs_two_classes_and_matching_sizes(test_data, tmp_path):
    one_class = (read_labels(test_data / "nuclei_scribbles.tif").data == 1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "one.tif", one_class)
    with pytest.raises(InputError, match="at least two classes .found only class 1"):
        pixel_classifier.train([(test_data / "nuclei.tif", tmp_path / "one.tif")], FeatureSettings())
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((512, 512), np.uint8))
    with pytest.raises(InputError, match="at least two classes .found none"):
        pixel_classifier.train([(test_data / "nuclei.tif", tmp_path / "empty.tif")], FeatureSettings())
    with pytest.raises(InputError, match="they must match"):
        pixel_classifier.train([(test_data / "ihc.png", test_data / "nuclei_scribbles.tif")], FeatureSettings())
    with pytest.raises(InputError, match="3 class names given for annotations using classes 1 to 2"):
        pixel_classifier.train([(test_data / "nuclei.tif", test_data / "nuclei_scribbles.tif")],
                               FeatureSettings(), ["a", "b", "c"])
