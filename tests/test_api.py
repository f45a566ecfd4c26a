"""The Python API: what the package exports, and the slide steps taking files, readers or arrays."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

import dlhisto_core
from dlhisto_core import PredictOptions, TiledImageReader, load_package, predict_slide, read_image
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.readers import ArrayReader
from dlhisto_core.io.slides import image_reader
from dlhisto_core.io.inputs import pair_by_name


def test_every_exported_name_resolves_and_the_package_imports_without_torch():
    assert all(getattr(dlhisto_core, name) is not None for name in dlhisto_core.__all__)
    loaded = subprocess.run([sys.executable, "-c", "import sys, dlhisto_core; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_prediction_of_an_array_equals_that_of_its_file(nuclei_model, test_data, tmp_path):
    model, spec, _ = load_package(nuclei_model)
    options = PredictOptions(tile_size=256, overlap=64, device="cpu")
    image = read_image(test_data / "nuclei.tif")
    from_file = predict_slide(model, spec, test_data / "nuclei.tif", options, classes_path=tmp_path / "file.tif")
    from_array = predict_slide(model, spec, image.data, options, classes_path=tmp_path / "array.tif")
    with TiledImageReader(test_data / "nuclei.tif") as reader:
        from_reader = predict_slide(model, spec, reader, options, classes_path=tmp_path / "reader.tif")
        assert reader.read_region(0, 0, 4, 4).shape == (4, 4)  # a reader given is left open
    file_classes = tifffile.imread(tmp_path / "file.tif")
    assert file_classes.max() == 2
    assert np.array_equal(file_classes, tifffile.imread(tmp_path / "array.tif"))
    assert np.array_equal(file_classes, tifffile.imread(tmp_path / "reader.tif"))
    assert from_file.class_pixels.tolist() == from_array.class_pixels.tolist() == from_reader.class_pixels.tolist()


def test_array_reader_clips_regions_and_refuses_what_no_step_reads():
    reader = ArrayReader(np.arange(100, dtype=np.uint8).reshape(10, 10), (0.5, 0.5), "ramp")
    assert reader.read_region(8, -2, 5, 5).tolist() == [[80, 81, 82], [90, 91, 92]]
    with image_reader(reader) as same:
        assert same is reader
    with pytest.raises(InputError, match="'cube' must be a"):
        ArrayReader(np.zeros((4, 4, 4, 4)), name="cube")
    with pytest.raises(InputError, match="'nan'"):
        ArrayReader(np.full((8, 8), np.nan, np.float32), name="nan")


def test_inputs_pair_by_name_whatever_their_order_and_refuse_strays():
    assert pair_by_name(["q1", "q2", "q3"], ["q3", "q1", "q2"], "image", "label image") == [1, 2, 0]
    assert pair_by_name(["q1", "q2"], ["q2"], "image", "label image", complete=False) == [None, 0]
    with pytest.raises(InputError, match="image 'q2' has no label image of the same name"):
        pair_by_name(["q1", "q2"], ["q1"], "image", "label image")
    with pytest.raises(InputError, match="two label images are named 'q1'"):
        pair_by_name(["q1", "q2"], ["q1", "q1"], "image", "label image")


def test_the_command_pairs_repeated_inputs_by_name_when_asked(test_data, tmp_path, capsys):
    from dlhisto_core.cli import main
    from dlhisto_core.io.tables import read_table

    labels, truth = str(test_data / "nuclei_labels.tif"), str(test_data / "nuclei_groundtruth.tif")
    common = ["evaluate", "--thresholds", "0.5", "--pair-by-name",
              "--prediction", labels, "--prediction-name", "classic", "--prediction", truth, "--prediction-name", "same"]
    assert main([*common, "--truth", truth, "--truth-name", "same", "--truth", truth, "--truth-name", "classic",
                 "--table", str(tmp_path / "t.tsv")]) == 0
    rows = {r["image"]: r for r in read_table(tmp_path / "t.tsv", "t.tsv", ["image", "f1"])}
    assert rows["classic"]["f1"] == "0.624473" and rows["same"]["f1"] == "1"
    assert main([*common, "--truth", truth, "--truth-name", "same", "--truth", truth, "--truth-name", "other",
                 "--table", str(tmp_path / "u.tsv")]) == 2
    assert "ground truth 'other' has no prediction of the same name" in capsys.readouterr().err
    assert not (tmp_path / "u.tsv").exists()
