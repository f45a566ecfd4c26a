"""QuPath GeoJSON: label images out as FeatureCollections and back, QuPath's own export read in,
bad GeoJSON refused. Outlines are checked with shapely (validity, areas) and by rasterising them
again: the round trip must give every object back (IoU > 0.95 asked; it is exact)."""

import json

import numpy as np
import pytest
import shapely
import tifffile
from shapely.geometry import shape

from dlhisto_core.base.errors import InputError
from dlhisto_core.io.geojson import ExportOptions, ImportOptions, features_of_labels, geojson_to_labels, labels_to_geojson, mask_polygons, read_annotations
from dlhisto_core.io.readers import ArrayReader
from dlhisto_core.io.images import read_labels
from dlhisto_core.classic.measure import measure_objects


def _round_trip(labels: np.ndarray, tmp_path, **export) -> np.ndarray:
    """labels -> GeoJSON -> labels, renumbered back with each feature's 'label' measurement."""
    path = tmp_path / "objects.geojson"
    labels_to_geojson(labels, path, ExportOptions(**export))
    numbers = [int(f["properties"]["measurements"]["label"]) for f in json.loads(path.read_text())["features"]]
    geojson_to_labels(path, np.zeros(labels.shape, np.uint8), tmp_path / "back.tif")
    drawn = tifffile.imread(tmp_path / "back.tif")
    return np.concatenate([[0], numbers]).astype(labels.dtype)[drawn]


def _iou_per_object(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    ious = []
    for label in np.unique(reference[reference > 0]):
        a, b = reference == label, candidate == label
        ious.append((a & b).sum() / (a | b).sum())
    return ious


def test_real_nuclei_survive_the_round_trip_and_every_polygon_is_valid(tmp_path, test_data):
    labels = read_labels(test_data / "nuclei_labels.tif").data
    path = tmp_path / "nuclei.geojson"
    assert labels_to_geojson(labels, path) == 112
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    geometries = [shape(f["geometry"]) for f in collection["features"]]
    assert all(g.is_valid for g in geometries)
    # each outline encloses exactly its object's pixels, and the table's area is the polygon's
    table = {row["label"]: row for row in measure_objects(labels, labels, None)}
    for feature, geometry in zip(collection["features"], geometries):
        measurements = feature["properties"]["measurements"]
        assert geometry.area == measurements["area"] == table[measurements["label"]]["area"]
    ious = _iou_per_object(labels, _round_trip(labels, tmp_path))
    assert len(ious) == 112 and min(ious) > 0.95
    assert min(ious) == 1.0  # pixel-edge outlines: the round trip is exact


def test_holes_touching_corners_and_image_borders_round_trip_exactly(tmp_path):
    labels = np.zeros((40, 50), np.uint16)
    labels[0:12, 0:12] = 1
    labels[4:8, 4:8] = 0  # a hole
    labels[5, 5] = 2  # an object inside the hole
    labels[12:16, 12:16] = 3  # touches object 1 at a corner only
    labels[20:30, 20:30] = 4
    labels[22, 22] = labels[23, 23] = 0  # two holes touching at a corner
    labels[30, 30] = labels[31, 31] = 5  # one object of two pixels joined by a corner
    labels[30:40, 40:50] = 6  # bottom-right corner of the image
    ring = np.zeros((9, 9), bool); ring[1:8, 1:8] = True; ring[2:7, 2:7] = False; ring[7, 4] = False
    ring[6, 4] = False; ring[7, 3] = True  # a C whose ends touch at a corner
    labels[0:9, 30:39][ring] = 7
    back = _round_trip(labels, tmp_path)
    assert np.array_equal(back, labels)
    features = list(features_of_labels(labels))
    geometries = [shape(f["geometry"]) for f in features]
    assert all(g.is_valid for g in geometries)
    polygons = [p for g in geometries for p in getattr(g, "geoms", [g])]
    # GeoJSON's right-hand rule (RFC 7946): shells counter-clockwise, holes clockwise
    assert all(p.exterior.is_ccw and not any(h.is_ccw for h in p.interiors) for p in polygons)
    kinds = {int(f["properties"]["measurements"]["label"]): f["geometry"]["type"] for f in features}
    assert kinds[5] == "MultiPolygon" and kinds[1] == "Polygon"
    assert len(shape(features[0]["geometry"]).interiors) == 1


def test_strips_give_the_features_of_the_whole_image_and_read_only_strips(tmp_path, test_data):
    labels = read_labels(test_data / "nuclei_labels.tif").data

    class CountingReader(ArrayReader):
        tallest = 0

        def read_region(self, y, x, height, width):
            CountingReader.tallest = max(CountingReader.tallest, height)
            return super().read_region(y, x, height, width)

    whole = list(features_of_labels(labels))
    by_strips = list(features_of_labels(CountingReader(labels), ExportOptions(strip_height=16)))
    key = lambda f: f["properties"]["measurements"]["label"]  # noqa: E731
    assert sorted(whole, key=key) == sorted(by_strips, key=key)
    assert 16 <= CountingReader.tallest <= 64  # the tallest nucleus needs more than one strip, never the image


def test_downsampled_labels_are_written_in_slide_coordinates(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[2:4, 3:6] = 1
    feature = next(features_of_labels(labels, ExportOptions(downsample=4, object_type="annotation",
                                                           class_name="Tumor", class_index=0)))
    assert feature["geometry"]["coordinates"][0][0] == [12, 8]
    assert shape(feature["geometry"]).area == 6 * 16
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}


def test_a_qupath_export_is_read_with_its_classes_holes_and_strokes(tmp_path, test_data):
    """test-data/qupath_annotations.geojson has the layout QuPath 0.5 writes (File > Export objects
    as GeoJSON, pretty, FeatureCollection): UUIDs, objectType, classification name and colour,
    isLocked, measurements as a map, a Polygon with a hole, a MultiPolygon, a LineString."""
    annotations = read_annotations(test_data / "qupath_annotations.geojson")
    assert [(a.geometry.geom_type, a.class_name) for a in annotations] == [
        ("Polygon", "Background"), ("MultiPolygon", "Nucleus"), ("LineString", "Background"),
        ("Polygon", None), ("Polygon", "Nucleus")]
    assert annotations[3].name == "feature 4 ('Region 1')"
    result = geojson_to_labels(test_data / "qupath_annotations.geojson", test_data / "nuclei.tif",
                               tmp_path / "classes.tif", ImportOptions(mode="classes", classes=("Nucleus", "Background")))
    assert result.classes == ["Nucleus", "Background"] and (result.drawn, result.skipped) == (4, 1)
    classes = tifffile.imread(tmp_path / "classes.tif")
    assert classes.shape == (512, 512)
    # the nuclei drawn with the wand tool are the real nuclei of the label image
    nuclei = read_labels(test_data / "nuclei_labels.tif").data
    assert (nuclei[classes == 1] > 0).mean() > 0.98
    # the background region with its hole: as many pixels as shapely's area (to the boundary pixels)
    region = annotations[0].geometry.intersection(shapely.box(0, 0, 512, 512))
    background_area = (classes == 2).sum() - 200  # the line stroke: about 200 pixels
    assert abs(background_area - region.area) / region.area < 0.05
    hole_centre = annotations[0].geometry.interiors[0].centroid
    assert classes[int(hole_centre.y), int(hole_centre.x)] == 0
    labels = geojson_to_labels(test_data / "qupath_annotations.geojson", test_data / "nuclei.tif",
                               tmp_path / "labels.tif")
    assert (labels.drawn, labels.skipped) == (4, 1)  # the stroke is no area


def test_import_at_a_working_pixel_size_scales_the_slide_coordinates(tmp_path):
    slide = ArrayReader(np.zeros((400, 600), np.uint8), pixel_size=(0.25, 0.25))
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[40, 80], [120, 80], [120, 160],
                                                                            [40, 160], [40, 80]]]},
        "properties": {"objectType": "annotation"}}]}))
    geojson_to_labels(path, slide, tmp_path / "half.tif", pixel_size=1.0)
    with tifffile.TiffFile(tmp_path / "half.tif") as tif:
        drawn = tif.asarray()
        assert tif.pages[0].tags["XResolution"].value[0] / tif.pages[0].tags["XResolution"].value[1] == 1e4
    assert drawn.shape == (100, 150)
    assert np.argwhere(drawn).min(axis=0).tolist() == [20, 10] and drawn.sum() == 20 * 20


@pytest.mark.parametrize("content, message", [
    ({"type": "Feature", "geometry": None, "properties": {}}, "is not a GeoJSON FeatureCollection"),
    ([1, 2], "is not a GeoJSON FeatureCollection"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}}]},
     "feature 1 is not a valid Polygon: Self-intersection"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [10], [0, 0]]]}}]}, "feature 1 has malformed coordinates"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
        "type": "GeometryCollection", "geometries": []}}]}, "geometry of type 'GeometryCollection'"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "x"}, "geometry": {
        "type": "Point", "coordinates": [1e400, 0]}}]}, "feature 1 ('x') has coordinates that are not finite"),
])
def test_bad_geojson_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(content).replace("Infinity", "1e400"))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        geojson_to_labels(path, np.zeros((20, 20), np.uint8), tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_unknown_classes_and_labels_that_are_not_labels_are_refused(tmp_path, test_data):
    with pytest.raises(InputError, match="classes Background, Nucleus that are not among Tumor"):
        geojson_to_labels(test_data / "qupath_annotations.geojson", test_data / "nuclei.tif", tmp_path / "o.tif",
                          ImportOptions(mode="classes", classes=("Tumor",)))
    with pytest.raises(InputError, match="not a label image"):
        list(features_of_labels(np.zeros((8, 8), np.float32)))
    with pytest.raises(InputError, match="object type"):
        ExportOptions(object_type="cell")


def test_mask_polygons_of_a_ring_has_its_hole():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    (shell, hole), = mask_polygons(mask)
    assert shapely.Polygon(shell, [hole]).area == 24
    assert shapely.Polygon(shell).exterior.is_ccw != shapely.Polygon(hole).exterior.is_ccw


def test_predict_at_a_working_pixel_size_writes_geojson_in_slide_coordinates(nuclei_model, test_data, tmp_path):
    from dlhisto_core import PredictOptions, predict

    nuclei = tifffile.imread(test_data / "nuclei.tif")
    slide = ArrayReader(np.repeat(np.repeat(nuclei, 2, axis=0), 2, axis=1), pixel_size=(0.25, 0.25), name="slide")
    summary = predict(nuclei_model, slide, PredictOptions(pixel_size=0.5),
                      objects=tmp_path / "objects.tif", geojson=tmp_path / "objects.geojson")
    objects = tifffile.imread(tmp_path / "objects.tif")  # 512 x 512: half the slide's 1024
    features = json.loads((tmp_path / "objects.geojson").read_text())["features"]
    assert objects.shape == (512, 512) and len(features) == summary.objects > 50
    for feature in features[:50]:
        label = feature["properties"]["measurements"]["label"]
        rows, cols = np.nonzero(objects == label)
        min_x, min_y, max_x, max_y = shape(feature["geometry"]).bounds
        assert (min_x, min_y, max_x, max_y) == (2 * cols.min(), 2 * rows.min(), 2 * cols.max() + 2, 2 * rows.max() + 2)
        assert feature["properties"]["measurements"]["area_um2"] == pytest.approx(len(rows) * 0.5 ** 2)
    # imported back at the same working pixel size, the outlines give the objects again
    geojson_to_labels(tmp_path / "objects.geojson", slide, tmp_path / "back.tif", pixel_size=0.5)
    back = tifffile.imread(tmp_path / "back.tif")
    numbers = np.array([0] + [f["properties"]["measurements"]["label"] for f in features])
    assert np.array_equal(numbers[back], objects)


def test_real_he_nuclei_round_trip_and_their_classed_polygons_import_like_their_type_mask(histolytics_data, tmp_path):
    """histolytics' HGSC tumour nest (H&E, 1500 x 1500): 1294 nuclei as an instance mask, a type
    mask and the same nuclei as classed polygons (GeoParquet). They are a model's output, used here
    as reference shapes, not as truth about the tissue."""
    import pyarrow.parquet as pq

    nuclei = np.load(histolytics_data["hgsc_nest_inst_mask.npz"], allow_pickle=False)["nuc_raster"]
    ious = _iou_per_object(nuclei, _round_trip(nuclei.astype(np.uint16), tmp_path))
    assert len(ious) == 1294 and min(ious) > 0.95
    # the polygons, written as QuPath detections classed by their type, drawn as a class map
    table = pq.read_table(histolytics_data["hgsc_nest.parquet"])
    polygons = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    names = table.column("class_name").to_pylist()
    features = [{"type": "Feature", "geometry": shapely.geometry.mapping(polygon),
                 "properties": {"objectType": "detection", "classification": {"name": name}}}
                for polygon, name in zip(polygons, names)]
    (tmp_path / "types.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    classes = ("connective", "inflammatory", "neoplastic")
    geojson_to_labels(tmp_path / "types.geojson", np.zeros(nuclei.shape, np.uint8), tmp_path / "types.tif",
                      ImportOptions(mode="classes", classes=classes))
    drawn = tifffile.imread(tmp_path / "types.tif")
    types = np.load(histolytics_data["hgsc_nest_type_mask.npz"], allow_pickle=False)["nuc_raster"]
    nucleus = (drawn > 0) | (types > 0)
    # the type mask numbers connective, inflammatory, neoplastic 1, 2, 3; the polygons are smoothed
    # outlines of it: 92 % of the nuclear pixels get the same class (measured 0.924)
    assert (drawn == types)[nucleus].mean() > 0.9


def test_labels_beyond_the_exported_range_are_refused_not_dropped(tmp_path):
    labels = np.zeros((8, 8), np.uint32)
    labels[2:4, 2:4] = 3_000_000_000  # would wrap to a negative int32 and vanish
    with pytest.raises(InputError, match="holds label 3000000000; at most 67108864 are exported"):
        labels_to_geojson(labels, tmp_path / "big.geojson")
    assert not (tmp_path / "big.geojson").exists()


def test_annotations_keep_their_qupath_colour_and_numeric_measurements(tmp_path):
    """QuPath 0.4+ ({"color": [r, g, b]}, measurements as an object) and 0.2-0.3 (packed
    colorRGB, measurements as a name/value list); values that are not finite numbers are dropped."""
    from dlhisto_core.io.geojson import read_annotations

    square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": square, "properties": {
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
            "measurements": {"Area": 16, "Nucleus: Hematoxylin OD mean": 0.52, "note": "text", "flag": True}}},
        {"type": "Feature", "geometry": square, "properties": {
            "classification": {"name": "Stroma", "colorRGB": -16744320},
            "measurements": [{"name": "Area", "value": 16.0}, {"name": "Perimeter", "value": "NaN"}]}}]}))
    tumour, stroma = read_annotations(path)
    assert (tumour.colour, tumour.measurements) == ((200, 0, 0), {"Area": 16.0, "Nucleus: Hematoxylin OD mean": 0.52})
    assert (stroma.colour, stroma.measurements) == ((0, 128, 128), {"Area": 16.0})
