import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from dlhisto_core.base.errors import InputError
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.images import read_image, read_labels
from dlhisto_core.io.writers import write_image, write_labels
from dlhisto_core.io.outputs import atomic_output


def test_reads_grey_tiff_and_rgb_png(test_data):
    nuclei = read_image(test_data / "nuclei.tif")
    assert nuclei.data.shape == (512, 512) and nuclei.data.dtype == np.uint16
    assert nuclei.pixel_size is None
    ihc = read_image(test_data / "ihc.png")
    assert ihc.data.shape == (256, 256, 3) and ihc.data.dtype == np.uint8
    assert ihc.n_channels == 3


def test_reads_jpeg_by_content_not_by_name(test_data, tmp_path):
    renamed = tmp_path / "dataset_42.dat"  # what Galaxy hands a tool
    renamed.write_bytes((test_data / "he.jpg").read_bytes())
    assert read_image(renamed).data.shape == (300, 500, 3)


@pytest.mark.parametrize("data", [
    np.arange(30 * 40, dtype=np.uint16).reshape(30, 40),
    np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8),
    np.random.default_rng(1).random((30, 40, 5), dtype=np.float32),
])
def test_write_read_round_trip_keeps_pixels_and_pixel_size(tmp_path, data):
    path = tmp_path / "out.tif"
    write_image(path, data, pixel_size=(0.25, 0.5))
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.pixel_size == pytest.approx((0.25, 0.5))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome


def test_pixel_size_from_ome_units_imagej_and_resolution_tags(tmp_path):
    data = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "nm.ome.tif", data, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 500, "PhysicalSizeYUnit": "nm"})
    assert read_image(tmp_path / "nm.ome.tif").pixel_size == pytest.approx((0.5, 0.25))
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"unit": "micron"})
    assert read_image(tmp_path / "ij.tif").pixel_size == pytest.approx((0.2, 0.2))
    tifffile.imwrite(tmp_path / "cm.tif", data, resolution=(1e4 / 0.3, 1e4 / 0.3), resolutionunit="CENTIMETER")
    assert read_image(tmp_path / "cm.tif").pixel_size == pytest.approx((0.3, 0.3))
    tifffile.imwrite(tmp_path / "screen.tif", data, resolution=(72, 72), resolutionunit="INCH")
    assert read_image(tmp_path / "screen.tif").pixel_size is None


def test_singleton_axes_are_dropped_and_channels_moved_last(tmp_path):
    data = np.random.default_rng(2).integers(0, 100, (1, 3, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "tcyx.ome.tif", data, ome=True, metadata={"axes": "TCYX"})
    image = read_image(tmp_path / "tcyx.ome.tif")
    assert image.data.shape == (20, 30, 3)
    np.testing.assert_array_equal(image.data[..., 1], data[0, 1])


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"This is a text file.\n", "is not a TIFF, PNG or JPEG image"),
])
def test_unreadable_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "absent.tif")


def test_truncated_tiff(test_data, tmp_path):
    path = tmp_path / "truncated.tif"
    path.write_bytes((test_data / "nuclei.tif").read_bytes()[:100_000])
    with pytest.raises(InputError, match="cannot read 'truncated.tif' as TIFF"):
        read_image(path)


def test_z_stack_is_refused_with_its_axes(tmp_path):
    tifffile.imwrite(tmp_path / "stack.ome.tif", np.zeros((5, 16, 16), np.uint8), ome=True,
                     metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match="not a 2-D image: axes ZYX"):
        read_image(tmp_path / "stack.ome.tif")


def test_one_pixel_image_is_refused(test_data):
    with pytest.raises(InputError, match="1x1 pixels"):
        read_image(test_data / "one_pixel.tif")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_float_image_is_refused(tmp_path, value):
    data = np.ones((8, 8), np.float32)
    data[3, 3] = value
    tifffile.imwrite(tmp_path / "nan.tif", data)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(tmp_path / "nan.tif")


def test_unsupported_pixel_type(tmp_path):
    tifffile.imwrite(tmp_path / "complex.tif", np.ones((8, 8), np.complex64))
    with pytest.raises(InputError, match="pixel type complex64"):
        read_image(tmp_path / "complex.tif")


def test_labels_are_read_as_unsigned_integers(test_data, tmp_path):
    labels = read_labels(test_data / "nuclei_groundtruth.tif").data
    assert labels.dtype == np.uint16 and len(np.unique(labels)) == 126
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32))
    np.testing.assert_array_equal(read_labels(tmp_path / "float.tif").data, labels)


@pytest.mark.parametrize("data, message", [
    (np.full((8, 8), 1.5, np.float32), "fractional values"),
    (np.full((8, 8), -1, np.int16), "negative values"),
    (np.zeros((8, 8, 3), np.uint8), "3 channels"),
])
def test_bad_label_images(tmp_path, data, message):
    tifffile.imwrite(tmp_path / "labels.tif", data)
    with pytest.raises(InputError, match=message):
        read_labels(tmp_path / "labels.tif")


def test_write_labels_picks_the_smallest_type(tmp_path):
    small = np.array([[0, 1], [2, 3]], np.int64)
    write_labels(tmp_path / "small.tif", small)
    assert tifffile.imread(tmp_path / "small.tif").dtype == np.uint16
    large = np.array([[0, 70000], [2, 3]], np.int64)
    write_labels(tmp_path / "large.tif", large)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "large.tif"), large)
    assert tifffile.imread(tmp_path / "large.tif").dtype == np.uint32


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.tif"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A tiled, pyramidal RGB OME-TIFF (2 levels) and its full-resolution pixels."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (1536, 2048, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("pyramid") / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, tile=(256, 256), compression="zlib", subifds=1,
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        tif.write(data[::2, ::2], tile=(256, 256), compression="zlib", subfiletype=1)
    return path, data


def test_tiled_reader_regions_match_the_full_image(pyramid):
    path, data = pyramid
    with TiledImageReader(path) as reader:
        assert reader.shape == data.shape and reader.n_levels == 2
        assert reader.pixel_size == pytest.approx((0.25, 0.25))
        for y, x, h, w in [(0, 0, 256, 256), (300, 1000, 100, 517), (1400, 1900, 500, 500), (-10, -10, 20, 20)]:
            expected = data[max(y, 0):y + h, max(x, 0):x + w]
            np.testing.assert_array_equal(reader.read_region(y, x, h, w), expected)
    with TiledImageReader(path, level=1) as reader:
        assert reader.shape == (768, 1024, 3)
        assert reader.pixel_size == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(reader.read_region(10, 20, 30, 40), data[::2, ::2][10:40, 20:60])


def test_tiled_reader_memory_follows_the_region_not_the_slide(pyramid):
    path, data = pyramid
    with TiledImageReader(path) as reader:
        tracemalloc.start()
        reader.read_region(512, 512, 256, 256)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # one 256x256 RGB tile is 196 kB; the slide is 9.4 MB
    assert peak < data.nbytes / 5, f"peak {peak / 1e6:.1f} MB for a 0.2 MB region"


def test_tiled_reader_on_planar_multichannel_and_png(tmp_path, test_data):
    data = np.random.default_rng(4).random((3, 300, 400), dtype=np.float32)
    tifffile.imwrite(tmp_path / "cyx.ome.tif", data, ome=True, tile=(128, 128), metadata={"axes": "CYX"})
    with TiledImageReader(tmp_path / "cyx.ome.tif") as reader:
        assert reader.shape == (300, 400, 3)
        np.testing.assert_array_equal(reader.read_region(100, 150, 50, 60),
                                      np.moveaxis(data, 0, -1)[100:150, 150:210])
    with TiledImageReader(test_data / "ihc.png") as reader:
        expected = np.asarray(PILImage.open(test_data / "ihc.png"))[5:25, 7:37]
        np.testing.assert_array_equal(reader.read_region(5, 7, 20, 30), expected)


def test_tiled_reader_refuses_missing_level(pyramid):
    with pytest.raises(InputError, match="has 2 resolution levels; level 5 does not exist"):
        TiledImageReader(pyramid[0], level=5)


def test_tiled_images_that_could_pass_4_gb_are_bigtiff(tmp_path, monkeypatch):
    """tifffile cannot size an image given as tiles: write_tiled_image makes it BigTIFF when its
    pixels could pass 4 GB (here the limit lowered to 0), and it reads back the same."""
    import numpy as np
    import tifffile

    from dlhisto_core.io import writers
    from dlhisto_core.io.readers import TiledImageReader

    tiles = [np.full((64, 64), k, np.uint16) for k in range(4)]
    writers.write_tiled_image(tmp_path / "classic.tif", iter(tiles), (128, 128), np.uint16, 64)
    monkeypatch.setattr(writers, "BIGTIFF_FROM", 0)
    writers.write_tiled_image(tmp_path / "big.tif", iter(tiles), (128, 128), np.uint16, 64)
    with tifffile.TiffFile(tmp_path / "classic.tif") as classic, tifffile.TiffFile(tmp_path / "big.tif") as big:
        assert not classic.is_bigtiff and big.is_bigtiff
    with TiledImageReader(tmp_path / "big.tif") as reader:
        assert reader.read_region(64, 0, 64, 128).tolist() == np.hstack(tiles[2:]).tolist()
