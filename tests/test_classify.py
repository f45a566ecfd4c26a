"""Tile classification: tables of tile classes, training from tiles, classifying held-out tiles."""

import pytest

from dlhisto_core.cli import main
from dlhisto_core.dl.classification import classify_tiles
from dlhisto_core.dl.options import ClassifyOptions
from dlhisto_core.dl.patches import PatchDataset, sample_tiles
from dlhisto_core.io.tables import read_class_regions, read_tile_classes
from dlhisto_core.base.errors import InputError
from dlhisto_core.models.packages import load_package


@pytest.fixture(scope="module")
def stain_classifier(nuclei_model):
    return nuclei_model.with_name("stain_classifier.zip")  # made with it by scripts/make_test_model.py


def test_tile_class_table_skips_its_header_and_refuses_contradictions(tmp_path):
    table = tmp_path / "classes.tsv"
    table.write_text("image\tclass\n# a comment\na.png\ttumour\nb.png\tstroma\textra column\n")
    assert read_tile_classes(table) == {"a.png": "tumour", "b.png": "stroma"}
    table.write_text("a.png\ttumour\na.png\tstroma\n")
    with pytest.raises(InputError, match="gives image 'a.png' two classes: tumour and stroma"):
        read_tile_classes(table)
    table.write_text("a.png tumour\n")
    with pytest.raises(InputError, match="line 1 of 'classes.tsv' needs an image name and a class"):
        read_tile_classes(table)


def test_tiles_become_patches_with_one_class_each(test_data, tmp_path):
    tiles = [(test_data / "tile_he_1.png", 0, "he"), (test_data / "tile_ihc_1.png", 1, "ihc")]
    patches = sample_tiles(tiles, tmp_path / "tiles.h5", patch_size=32, patches_per_image=3)
    dataset = PatchDataset(patches.path, range(6), augment=True)
    assert (patches.n_channels, patches.out_channels) == (3, 2)
    assert dataset.targets.tolist() == [0, 0, 0, 1, 1, 1]
    image, target = dataset[4]
    assert tuple(image.shape) == (3, 32, 32) and target.item() == 1


def test_a_table_of_classed_tiles_trains_on_those_tiles_only(test_data, tmp_path):
    """Tiles annotated on a larger image (the columns classify writes): each patch is cut from its
    tile, normalised on its own, as classify normalises each tile."""
    import numpy as np

    from dlhisto_core.imaging.intensity import normalize_for_network
    from dlhisto_core.io.images import read_image

    table = tmp_path / "tiles.tsv"
    table.write_text("image\tx\ty\twidth\theight\tclass\nhe.jpg\t0\t0\t64\t64\ttumour\n"
                     "he.jpg\t128\t64\t64\t64\tstroma\nplain.png\t0\t0\t1\t1\tstroma\n")
    regions = read_class_regions(table)
    assert regions == [("he.jpg", "tumour", (0, 0, 64, 64)), ("he.jpg", "stroma", (64, 128, 64, 64)),
                       ("plain.png", "stroma", (0, 0, 1, 1))]
    he = test_data / "he.jpg"
    patches = sample_tiles([(he, 1, "he.jpg", regions[0][2]), (he, 0, "he.jpg", regions[1][2])],
                           tmp_path / "tiles.h5", patch_size=64, patches_per_image=2)
    dataset = PatchDataset(patches.path, range(4))
    expected = normalize_for_network(read_image(he).data[64:128, 128:192], joint=True)
    assert dataset.targets.tolist() == [1, 1, 0, 0]
    assert np.allclose(dataset[2][0].numpy(), expected)
    with pytest.raises(InputError, match="the tile at x=128, y=64 \\(64 x 64\\) lies outside 'small.png' \\(100 x 100\\)"):
        sample_tiles([(_small_image(tmp_path), 0, "small.png", (64, 128, 64, 64))], tmp_path / "bad.h5",
                     patch_size=64, patches_per_image=1)
    table.write_text("image\tx\ty\twidth\theight\tclass\nhe.jpg\tten\t0\t64\t64\ttumour\n")
    with pytest.raises(InputError, match="line 2 of 'tiles.tsv' needs whole numbers in x, y, width and height"):
        read_class_regions(table)


def _small_image(folder):
    from PIL import Image
    path = folder / "small.png"
    Image.new("RGB", (100, 100), "white").save(path)
    return path


def test_the_stain_classifier_recognises_tiles_it_never_saw(stain_classifier, test_data):
    model, spec, rdf = load_package(stain_classifier)
    names = rdf["outputs"][0]["axes"][1]["channel_names"]
    assert spec.task == "classification" and names == ["H&E", "IHC"]
    rows = list(classify_tiles(model, spec, names, [(test_data / "he_right.png", "he"),
                                                    (test_data / "ihc_right.png", "ihc")],
                               ClassifyOptions(tile_size=64, device="cpu")))
    assert len(rows) == 15 + 8
    correct = sum(row["class"] == {"he": "H&E", "ihc": "IHC"}[row["image"]] for row in rows)
    assert correct >= 21  # 22 of 23 when made: the exception is a 52-pixel-wide edge tile
    whole = list(classify_tiles(model, spec, names, [(test_data / "he.jpg", "he.jpg"), (test_data / "ihc.png", "ihc.png")]))
    assert [(r["image"], r["width"], r["class"]) for r in whole] == [("he.jpg", 500, "H&E"), ("ihc.png", 256, "IHC")]
    assert abs(whole[0]["p_H&E"] + whole[0]["p_IHC"] - 1) < 1e-6


def test_classify_refuses_segmentation_models_and_wrong_channels(nuclei_model, stain_classifier, test_data, tmp_path,
                                                                 capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["classify", "--image", str(test_data / "nuclei.tif"), "--model", str(nuclei_model),
                 "--table", str(out / "t.tsv")]) == 2
    assert "this model does instance segmentation" in capsys.readouterr().err
    assert main(["classify", "--image", str(test_data / "nuclei.tif"), "--model", str(stain_classifier),
                 "--table", str(out / "t.tsv")]) == 2
    assert "the model expects 3-channel images; 'nuclei.tif' has 1" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_training_a_classifier_needs_a_class_for_every_tile(test_data, tmp_path, capsys):
    code = main(["train", "--task", "classification", "--image", str(test_data / "tile_he_1.png"),
                 "--image", str(test_data / "he.jpg"), "--tile-classes", str(test_data / "tile_classes.tsv"),
                 "--model", str(tmp_path / "m.zip")])
    assert code == 2 and "no class for image 'he.jpg' in the table" in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()


def test_the_classifier_package_passes_bioimageio_core_test_model(stain_classifier):
    from bioimageio.core import test_model
    summary = test_model(stain_classifier)
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details
                                        if d.status == "failed"]


def test_tiles_without_tissue_are_background_and_the_others_unchanged(stain_classifier, test_data, tmp_path):
    """On the real Aperio slide, tiles of glass are left out (class 'background', not in the
    tissue map); the tissue tiles get the classes and probabilities they get without skipping."""
    import json

    import numpy as np

    from dlhisto_core import classify
    from dlhisto_core.dl.engine import tissue_signal
    from dlhisto_core.io.slides import image_reader

    slide = test_data / "cmu_small_region.svs"
    every = classify(stain_classifier, [slide], ClassifyOptions(tile_size=256))
    kept = classify(stain_classifier, [slide], ClassifyOptions(tile_size=256, skip_background=True),
                    geojson=tmp_path / "tissue.geojson")
    background = [row for row in kept if row["class"] == "background"]
    assert 0 < len(background) < len(kept) == len(every)
    for mine, full in zip(kept, every):
        assert (mine["x"], mine["y"]) == (full["x"], full["y"])
        if mine["class"] != "background":  # batched with other tiles: float rounding differs
            assert mine["class"] == full["class"] and mine["p_IHC"] == pytest.approx(full["p_IHC"], abs=1e-5)
    with image_reader(slide) as reader:
        def saturation(row):
            return float(tissue_signal(reader.read_region(row["y"], row["x"], row["height"], row["width"])).mean())
        glass = max(saturation(row) for row in background)
        tissue = np.median([saturation(row) for row in kept if row["class"] != "background"])
    assert glass < tissue
    features = json.loads((tmp_path / "tissue.geojson").read_text())["features"]
    assert len(features) == len(kept) - len(background)
