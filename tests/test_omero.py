"""OMERO: omero-py's real client over a real Ice connection on 127.0.0.1, against the test
server of tests/omero_test_server.py (scope in tests/README.md); and against a real OMERO when
OMERO_HOST, OMERO_USER, OMERO_PASSWORD and OMERO_IMAGE_ID are set."""

import csv
import json
import os
import socket

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

if not os.environ.get("DLHISTO_OMERO_REQUIRED"):  # the test command installs the extra and sets it
    pytest.importorskip("omero", reason="OMERO extra not installed (pip install 'dlhisto[omero]')")

from dlhisto_core.share import omero as dlhisto_omero  # noqa: E402
from dlhisto_core.cli import main  # noqa: E402
from dlhisto_core.base.errors import InputError  # noqa: E402
from dlhisto_core.io.pixel_size import onto_grid  # noqa: E402
from dlhisto_core.io.images import read_image, read_labels  # noqa: E402

from omero_test_server import OmeroTestServer  # noqa: E402

PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(test_data):
    with OmeroTestServer(users={"alice": PASSWORD}) as running:
        yield running


@pytest.fixture
def nuclei_on_server(server, test_data):
    """The nuclei image on the server with four ROIs (two human-annotated nuclei as a mask and
    a polygon, a rectangle and an ellipse), a tag and a key-value map."""
    from omero.model import (EllipseI, ImageAnnotationLinkI, ImageI, MapAnnotationI, NamedValue, RectangleI, RoiI,
                             TagAnnotationI)
    from omero.rtypes import rdouble, rlong, rstring
    from skimage.measure import regionprops

    image = read_image(test_data / "nuclei.tif").data
    image_id = server.store.add_image(image, "nuclei.tif", pixel_size_um=0.65, dataset_id=7)
    truth = read_labels(test_data / "nuclei_groundtruth.tif").data
    regions = regionprops(truth)[10:12]  # two nuclei of the human annotation
    rois = []
    for name, shapes in (("mask_shape", [dlhisto_omero.mask_shape(regions[0])]),
                         ("polygon_shapes", dlhisto_omero.polygon_shapes(regions[1]))):
        roi = RoiI(rlong(server.store.new_id()), True)
        roi.setImage(ImageI(image_id, False))
        roi.setName(rstring(name))
        for shape in shapes:
            roi.addShape(shape)
        rois.append(roi)
    rectangle = RectangleI()
    for field, value in (("x", 5), ("y", 8), ("width", 20), ("height", 10)):
        getattr(rectangle, f"set{field.title()}")(rdouble(value))
    rectangle.setTextValue(rstring("tumour"))
    ellipse = EllipseI()
    for field, value in (("x", 400), ("y", 300), ("radiusX", 12), ("radiusY", 6)):
        getattr(ellipse, f"set{field[0].upper()}{field[1:]}")(rdouble(value))
    for shape in (rectangle, ellipse):
        roi = RoiI(rlong(server.store.new_id()), True)
        roi.setImage(ImageI(image_id, False))
        roi.addShape(shape)
        rois.append(roi)
    server.store.rois[image_id] = rois
    tag, pairs = TagAnnotationI(rlong(server.store.new_id()), True), MapAnnotationI(rlong(server.store.new_id()), True)
    tag.setTextValue(rstring("annotated by Dr. A"))
    pairs.setMapValue([NamedValue("stain", "DAPI")])
    for annotation in (tag, pairs):
        link = ImageAnnotationLinkI(rlong(server.store.new_id()), True)
        link.setParent(ImageI(image_id, False))
        link.setChild(annotation)
        server.store.links.append(link)
    return image_id, truth, [r.label for r in regions]


def credentials_file(tmp_path, server, **changes):
    values = {"host": "tcp://127.0.0.1", "port": server.port, "user": "alice", "password": PASSWORD, **changes}
    path = tmp_path / f"omero{len(list(tmp_path.glob('omero*.json')))}.json"
    path.write_text(json.dumps(values))
    return path


def test_fetch_image_rois_and_annotations(server, nuclei_on_server, tmp_path, test_data, capsys):
    image_id, truth, (mask_label, polygon_label) = nuclei_on_server
    out = tmp_path / "fetched"
    assert main(["omero_fetch", "--credentials", str(credentials_file(tmp_path, server)), "--dataset-id", "7",
                 "--output-dir", str(out), "--rois", str(tmp_path / "rois.tsv"),
                 "--annotations", str(tmp_path / "annotations.tsv")]) == 0
    name = f"{image_id}_nuclei.ome.tif"
    fetched = read_image(out / "images" / name)
    np.testing.assert_array_equal(fetched.data, read_image(test_data / "nuclei.tif").data)  # every pixel
    assert fetched.pixel_size == pytest.approx((0.65, 0.65))
    labels = read_labels(out / "labels" / name).data
    assert np.array_equal(labels == 1, truth == mask_label)  # the mask, exactly
    assert np.array_equal(labels == 2, truth == polygon_label)  # the outline along the pixel edges, rasterised again
    assert (labels == 3).sum() == 200 and (labels[8:18, 5:25] == 3).all()
    ellipse = labels == 4  # centre (400, 300), radii 12 and 6: about pi * 72 pixels
    assert abs(ellipse.sum() - np.pi * 72) < 12 and ellipse[300, 389:412].all() and not ellipse[307, 400]
    rois = list(csv.DictReader((tmp_path / "rois.tsv").open(), delimiter="\t"))
    assert [(r["label"], r["shapes"], r["text"]) for r in rois] == [("1", "mask", ""), ("2", "polygon", ""),
                                                                  ("3", "rectangle", "tumour"), ("4", "ellipse", "")]
    annotations = (tmp_path / "annotations.tsv").read_text()
    assert "tag\t\t\tannotated by Dr. A" in annotations and "map\t\tstain\tDAPI" in annotations
    assert PASSWORD not in capsys.readouterr().out


def test_round_trip_segment_push_fetch_gives_the_same_objects(server, nuclei_on_server, tmp_path):
    image_id, truth, _ = nuclei_on_server
    credentials = credentials_file(tmp_path, server)
    assert main(["omero_fetch", "--credentials", str(credentials), "--image-id", str(image_id),
                 "--output-dir", str(tmp_path / "in")]) == 0
    image = tmp_path / "in" / "images" / f"{image_id}_nuclei.ome.tif"
    assert main(["segment_classic", str(image), "--labels", str(tmp_path / "objects.tif"),
                 "--measurements", str(tmp_path / "m.tsv"), "--summary", str(tmp_path / "s.tsv")]) == 0
    objects = read_labels(tmp_path / "objects.tif").data
    server.store.rois[image_id] = []  # only the pushed ROIs from here on
    (tmp_path / "report.html").write_text("<html>evaluation</html>")
    # the image id read from the name omero_fetch gave (as a workflow mapping over a dataset does)
    assert main(["omero_push", "--credentials", str(credentials), "--image-id-from-name",
                 "--labels", str(tmp_path / "objects.tif"), "--labels-name", f"{image_id}_nuclei",
                 "--attach", str(tmp_path / "report.html"),
                 "--key-value", "tool=dlhisto_segment_classic", "--key-value", "sigma=3",
                 "--table", str(tmp_path / "pushed.tsv")]) == 0
    pushed = list(csv.DictReader((tmp_path / "pushed.tsv").open(), delimiter="\t"))
    assert sum(r["kind"] == "roi" for r in pushed) == objects.max() == 112
    assert main(["omero_fetch", "--credentials", str(credentials), "--image-id", str(image_id),
                 "--output-dir", str(tmp_path / "back")]) == 0
    back = read_labels(tmp_path / "back" / "labels" / f"{image_id}_nuclei.ome.tif").data
    assert np.array_equal(back, objects)  # the same objects, pixel for pixel, in the same order
    files = list(server.store.files.values())
    assert [f["content"] for f in files] == [b"<html>evaluation</html>"]
    maps = [a for a in server.store.annotations.values() if type(a).__name__ == "MapAnnotationI"]
    recorded = {pair.name: pair.value for pair in maps[-1].getMapValue()}
    assert recorded["tool"] == "dlhisto_segment_classic" and recorded["dlhisto.rois"] == "112"


def test_polygons_round_trip_to_the_same_pixels(server, nuclei_on_server, tmp_path, test_data):
    """Pushed as polygons (the outlines of the GeoJSON export) and fetched again, every object
    has its pixels back, except where a nucleus has a hole: OMERO polygons have none."""
    image_id, truth, _ = nuclei_on_server
    server.store.rois[image_id] = []
    with dlhisto_omero.connect(dlhisto_omero.read_credentials(credentials_file(tmp_path, server))) as session:
        session.push_labels(image_id, truth, shape="polygon")
        labels, _ = dlhisto_omero.rois_to_labels(session.rois(image_id), truth.shape)
    expected = np.zeros(truth.shape, np.uint32)
    for k, label in enumerate(np.unique(truth[truth > 0]), 1):  # ROI k is the k-th object, drawn in that order
        expected[ndi.binary_fill_holes(truth == label)] = k
    assert np.array_equal(labels, expected)


def test_labels_made_at_a_models_pixel_size_go_back_onto_the_images_pixels(server, nuclei_on_server, tmp_path):
    """A model working at another pixel size writes its objects at that size (predict): pushed,
    they are resampled onto the OMERO image's pixels; labels that cover another area are refused."""
    image_id, truth, _ = nuclei_on_server  # the image records 0.65 µm
    server.store.rois[image_id] = []
    finer = np.repeat(np.repeat(truth, 2, axis=0), 2, axis=1)  # the same objects at 0.325 µm
    with dlhisto_omero.connect(dlhisto_omero.read_credentials(credentials_file(tmp_path, server))) as session:
        session.push_labels(image_id, finer, labels_pixel_size=(0.325, 0.325))
        labels, _ = dlhisto_omero.rois_to_labels(session.rois(image_id), truth.shape)
        assert np.array_equal(labels > 0, truth > 0) and labels.max() == len(np.unique(truth)) - 1
        with pytest.raises(InputError, match=r"the labels \(1024x1024\) do not match the size of OMERO image \d+ "
                                             r"\(512x512\) nor cover it at another pixel size"):
            session.push_labels(image_id, finer)  # no pixel size: nothing says how they relate
    coarser = onto_grid(truth, (0.65, 0.65), (665, 665), (0.5, 0.5))
    assert coarser.shape == (665, 665) and set(np.unique(coarser)) == set(np.unique(truth))
    assert onto_grid(truth, (0.65, 0.65), (600, 600), (0.5, 0.5)) is None  # another area


def test_every_call_dlhisto_makes_is_served(server, nuclei_on_server, tmp_path):
    """The operations of tests/README.md, all of them exercised (and nothing else called)."""
    image_id, truth, _ = nuclei_on_server
    credentials = dlhisto_omero.read_credentials(credentials_file(tmp_path, server))
    (tmp_path / "model.zip").write_bytes(b"x" * 3_000_000)
    with dlhisto_omero.connect(credentials) as session:
        session.dataset_image_ids(7)
        session.fetch_image(image_id)
        session.rois(image_id)
        session.annotations(image_id)
        session.push_labels(image_id, truth)
        session.attach_file(image_id, tmp_path / "model.zip", "model.zip", "application/zip")
        session.add_key_values(image_id, [("a", "b")])
    assert set(server.store.calls) == {
        "Glacier2.Router.createSession", "Glacier2.Router.destroySession", "IQuery.findByQuery",
        "IQuery.findAllByQuery", "RawPixelsStore.setPixelsId", "RawPixelsStore.getTile", "RawPixelsStore.close",
        "IRoi.findByImage", "IUpdate.saveAndReturnArray", "IUpdate.saveAndReturnObject", "RawFileStore.setFileId",
        "RawFileStore.write", "RawFileStore.save", "RawFileStore.close"}
    assert server.store.calls.count("RawFileStore.write") == 3  # 1 MiB chunks
    key = server.session_key("alice")
    with dlhisto_omero.connect(dlhisto_omero.Credentials("tcp://127.0.0.1", server.port, session_key=key)) as session:
        assert session.image(image_id).name.val == "nuclei.tif"


def test_failures_are_one_clear_line(server, nuclei_on_server, tmp_path, capsys, test_data):
    image_id = nuclei_on_server[0]
    cases = [
        (credentials_file(tmp_path, server, password="not-the-password"), str(image_id),
         f"OMERO at tcp://127.0.0.1:{server.port} refused the login of user 'alice': wrong user name, password or "
         "session key"),
        (credentials_file(tmp_path, server), "999",
         f"no image with id 999 on OMERO at tcp://127.0.0.1:{server.port} (or user 'alice' may not see it)"),
        (credentials_file(tmp_path, server, port=free_port()), str(image_id), "connection refused"),
    ]
    for credentials, image, message in cases:
        assert main(["omero_fetch", "--credentials", str(credentials), "--image-id", image,
                     "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
        assert "not-the-password" not in err and PASSWORD not in err
        assert not list((tmp_path / "out").rglob("*.tif"))
    assert main(["omero_push", "--credentials", str(credentials_file(tmp_path, server)), "--image-id", "999",
                 "--key-value", "a=b"]) == 2
    assert "no image with id 999" in capsys.readouterr().err
    assert not server.store.annotations  # nothing written for an unknown image
    assert main(["omero_push", "--credentials", str(credentials_file(tmp_path, server)), "--image-id-from-name",
                 "--labels", str(test_data / "nuclei_labels.tif"), "--labels-name", "nuclei_labels"]) == 2
    assert capsys.readouterr().err == ("dlhisto omero_push: error: 'nuclei_labels' does not start with an OMERO image "
                                       "id and '_' (as the images of omero_fetch are named); give the image id instead\n")
    assert not server.store.annotations


def test_credentials_file_is_checked_and_never_printed(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"host": "omero.example.org", "user": "bob"}))
    with pytest.raises(InputError, match="need a user name and password, or a session key"):
        dlhisto_omero.read_credentials(path)
    path.write_text(json.dumps({"host": "omero.example.org", "user": "bob", "password": "hunter2", "token": 1}))
    with pytest.raises(InputError, match="unknown field.*token"):
        dlhisto_omero.read_credentials(path)
    path.write_text(json.dumps({"host": "omero.example.org", "user": "bob", "password": "hunter2"}))
    credentials = dlhisto_omero.read_credentials(path)
    assert credentials.port == 4064 and "hunter2" not in repr(credentials) and "hunter2" not in str(credentials)


def test_credentials_from_the_environment(server, nuclei_on_server, tmp_path, monkeypatch, capsys):
    for name, value in (("OMERO_HOST", "tcp://127.0.0.1"), ("OMERO_PORT", str(server.port)), ("OMERO_USER", "alice"),
                        ("OMERO_PASSWORD", PASSWORD)):
        monkeypatch.setenv(name, value)
    assert main(["omero_fetch", "--image-id", str(nuclei_on_server[0]), "--output-dir", str(tmp_path)]) == 0
    assert len(list((tmp_path / "images").iterdir())) == 1
    monkeypatch.delenv("OMERO_PASSWORD")
    assert main(["omero_fetch", "--image-id", "1", "--output-dir", str(tmp_path)]) == 2
    assert "need a user name and password, or a session key" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("OMERO_HOST"), reason="set OMERO_HOST, OMERO_USER, OMERO_PASSWORD, "
                    "OMERO_IMAGE_ID (and OMERO_PORT) to test against a real OMERO")
def test_against_a_real_omero(tmp_path):
    path = tmp_path / "omero.json"
    path.write_text(json.dumps({"host": os.environ["OMERO_HOST"], "port": int(os.environ.get("OMERO_PORT", 4064)),
                                "user": os.environ["OMERO_USER"], "password": os.environ["OMERO_PASSWORD"]}))
    image_id = int(os.environ["OMERO_IMAGE_ID"])
    assert main(["omero_fetch", "--credentials", str(path), "--image-id", str(image_id),
                 "--output-dir", str(tmp_path / "in")]) == 0
    image = next((tmp_path / "in" / "images").iterdir())
    assert main(["segment_classic", str(image), "--labels", str(tmp_path / "objects.tif"),
                 "--measurements", str(tmp_path / "m.tsv"), "--summary", str(tmp_path / "s.tsv")]) == 0
    with dlhisto_omero.connect(dlhisto_omero.read_credentials(path)) as session:
        before = len(session.rois(image_id))
        objects = read_labels(tmp_path / "objects.tif").data
        ids = session.push_labels(image_id, objects, name="dlhisto integration test")
        labels, _ = dlhisto_omero.rois_to_labels(session.rois(image_id)[before:], objects.shape)
    assert len(ids) == objects.max() and np.array_equal(labels > 0, objects > 0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_galaxy_tests_server_holds_what_the_tool_tests_expect(server, test_data):
    """seed_nuclei, as scripts/test starts the server for the tool and workflow tests."""
    from omero_test_server import seed_nuclei

    seed_nuclei(server.store, test_data)
    assert len(server.store.rois[1]) == 125 and server.store.rois[2] == server.store.rois[3] == server.store.rois[4] == []
    assert [link.getParent().getId().getValue() for link in server.store.links] == [1]  # the tag
    datasets = {link.getChild().getId().getValue(): link.getParent().getId().getValue()
                for link in server.store.dataset_links}
    assert datasets == {1: 7, 3: 8, 4: 8}


def test_typed_cells_reach_omero_with_their_class_names_and_colours(server, nuclei_on_server, tmp_path):
    """Cells pushed with their types: each ROI's shapes carry the type as text and its colour (the
    GeoJSON exports' colour, as OMERO's signed RGBA), and omero_fetch gives the types back."""
    from dlhisto_core.io.geojson import class_colour

    image_id, truth, _ = nuclei_on_server
    server.store.rois[image_id] = []
    credentials = credentials_file(tmp_path, server)
    ids = np.unique(truth[truth > 0])
    table = tmp_path / "types.tsv"
    table.write_text("label\tclass\n" + "".join(f"{label}\t{'lymphocyte' if k % 3 else 'tumour'}\n"
                                                 for k, label in enumerate(ids)))
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, truth.astype(np.uint16))
    assert main(["omero_push", "--credentials", str(credentials), "--image-id", str(image_id), "--labels", str(labels),
                 "--classes", str(table), "--shape", "polygon"]) == 0
    with dlhisto_omero.connect(dlhisto_omero.read_credentials(credentials)) as session:
        rois = session.rois(image_id)
    shapes = [shape for roi in rois for shape in roi.copyShapes()]
    texts = [shape.getTextValue().val for shape in shapes]
    assert texts.count("tumour") >= (len(ids) + 2) // 3 and set(texts) == {"lymphocyte", "tumour"}
    tumour = next(shape for shape in shapes if shape.getTextValue().val == "tumour")
    r, g, b = class_colour(1)  # classes are numbered in sorted order: lymphocyte 1, tumour 2
    assert tumour.getStrokeColor().val == dlhisto_omero.omero_colour((r, g, b), 255) == \
        ((r << 24 | g << 16 | b << 8 | 255) + 2**31) % 2**32 - 2**31
    assert main(["omero_fetch", "--credentials", str(credentials), "--image-id", str(image_id),
                 "--output-dir", str(tmp_path / "back"), "--rois", str(tmp_path / "rois.tsv")]) == 0
    fetched = list(csv.DictReader((tmp_path / "rois.tsv").open(), delimiter="\t"))
    expected = {str(k): "lymphocyte" if (k - 1) % 3 else "tumour" for k in range(1, len(ids) + 1)}
    assert {r["label"]: set(r["text"].split("; ")) for r in fetched} == {k: {v} for k, v in expected.items()}
    # ROI k is the k-th object with its type (on each of its polygons, if in parts)
