import numpy as np
import pytest

from dlhisto_core.classic.measure import measure_objects, measurement_columns, summarize_objects
from dlhisto_core.io.tables import write_table


def test_measurements_of_a_rectangle():
    labels = np.zeros((20, 30), np.uint16)
    labels[2:5, 10:14] = 3
    intensity = np.zeros((20, 30), np.float32)
    intensity[2:5, 10:14] = np.arange(12).reshape(3, 4)
    [row] = measure_objects(labels, intensity, pixel_size=(0.5, 0.5))
    assert row["label"] == 3 and row["area"] == 12
    assert (row["centroid_y"], row["centroid_x"]) == pytest.approx((3.0, 11.5))
    assert row["mean_intensity"] == pytest.approx(5.5)
    assert (row["min_intensity"], row["max_intensity"]) == (0, 11)
    assert row["area_um2"] == pytest.approx(3.0)
    assert list(row) == measurement_columns((0.5, 0.5))


def test_summary_and_table_file(tmp_path):
    labels = np.zeros((10, 10), np.uint16)
    labels[0:2, 0:2], labels[5:9, 5:9] = 1, 2
    rows = measure_objects(labels, labels.astype(float))
    summary = summarize_objects(rows, "img.tif", labels.size, threshold=0.5)
    assert summary == {"image": "img.tif", "n_objects": 2, "mean_area": 10.0, "median_area": 10.0,
                       "area_fraction": 0.2, "threshold": 0.5}
    write_table(tmp_path / "t.tsv", rows, measurement_columns(None))
    lines = (tmp_path / "t.tsv").read_text().splitlines()
    assert lines[0].split("\t") == measurement_columns(None)
    assert lines[2].startswith("2\t16\t6.5\t6.5\t2\t2\t2\t")


def test_empty_table_still_has_its_header(tmp_path):
    write_table(tmp_path / "empty.tsv", [], measurement_columns((1.0, 1.0)))
    assert (tmp_path / "empty.tsv").read_text() == "\t".join(measurement_columns((1.0, 1.0))) + "\n"
