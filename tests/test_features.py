import numpy as np
import pytest
import tifffile

from dlhisto_core.base.errors import InputError
from dlhisto_core.imaging.features import FEATURES, FeatureSettings, compute_features, features_of_tile, symmetric_eigenvalues
from dlhisto_core.io.readers import TiledImageReader
from dlhisto_core.io.tiling import Tile, tile_grid


def test_feature_count_and_names_follow_the_settings():
    settings = FeatureSettings(scales=(1.0, 2.0))
    image = np.random.default_rng(0).random((40, 50, 2), dtype=np.float32)
    stack = compute_features(image, settings)
    per_scale = 8  # gaussian, log, dog, gradient, 2 structure tensor, 2 hessian
    assert stack.shape == (40, 50, 2 * (1 + 2 * per_scale)) and stack.dtype == np.float32
    names = settings.names(2)
    assert len(names) == stack.shape[-1] and names[0] == "c1 raw" and names[-1] == "c2 hessian e2 s=2"


def test_eigenvalues_of_2x2_symmetric_matrices():
    a, b, c = np.array([2.0, 1.0]), np.array([1.0, 0.0]), np.array([2.0, -3.0])
    large, small = symmetric_eigenvalues(a, b, c)
    for i in range(2):
        expected = np.linalg.eigvalsh([[a[i], b[i]], [b[i], c[i]]])
        np.testing.assert_allclose([small[i], large[i]], expected)


def test_hessian_eigenvalues_respond_to_a_bright_line():
    image = np.zeros((64, 64), np.float32)
    image[:, 30:33] = 1.0  # vertical bright ridge, 3 px wide
    stack = compute_features(image, FeatureSettings(features=("hessian",), scales=(1.5,), include_raw=False))
    large, small = stack[..., 0], stack[..., 1]
    # across a bright ridge the curvature is strongly negative; along it, zero
    assert small[32, 31] < -0.1 and abs(large[32, 31]) < 1e-3
    assert abs(small[32, 5]) < 1e-4


def test_structure_tensor_sees_oriented_texture():
    stripes = np.sin(np.arange(64) / 2.0)[None, :].repeat(64, axis=0).astype(np.float32)
    stack = compute_features(stripes, FeatureSettings(features=("structure_tensor",), scales=(1.0,), include_raw=False))
    large, small = stack[20:44, 20:44, 0], stack[20:44, 20:44, 1]
    assert large.mean() > 100 * max(small.mean(), 1e-9)  # one dominant orientation


@pytest.mark.parametrize("shape", [(300, 420), (300, 420, 3)])
def test_tiled_features_equal_whole_image_features(tmp_path, shape):
    image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="rgb" if len(shape) == 3 else "minisblack")
    settings = FeatureSettings(scales=(0.7, 3.5))
    whole = compute_features(image, settings)
    with TiledImageReader(tmp_path / "img.tif") as reader:
        for tile in tile_grid(shape[0], shape[1], 128):
            part = features_of_tile(reader, tile, settings)
            expected = whole[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
            np.testing.assert_allclose(part, expected, rtol=1e-5, atol=1e-4)


def test_halo_covers_the_widest_filter():
    assert FeatureSettings(features=("gaussian",), scales=(5.0,)).halo == 20
    assert FeatureSettings(features=("dog",), scales=(5.0,)).halo == 32
    assert FeatureSettings(features=("structure_tensor",), scales=(5.0,)).halo == 60


@pytest.mark.parametrize("kwargs, message", [
    ({"features": ("sobel",)}, "unknown feature"),
    ({"scales": (0.0,)}, "scales must be positive"),
    ({"scales": ()}, "at least one scale"),
    ({"features": (), "include_raw": False}, "at least one feature"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        FeatureSettings(**kwargs)


def test_settings_round_trip_through_a_dict():
    settings = FeatureSettings(features=("log", "hessian"), scales=(1.0, 2.5), include_raw=False)
    assert FeatureSettings.from_dict(settings.to_dict()) == settings
    assert set(FEATURES) == set(FeatureSettings().features)


def test_tile_grid_covers_the_image_once():
    tiles = list(tile_grid(300, 200, 128))
    cover = np.zeros((300, 200), int)
    for t in tiles:
        cover[t.y:t.y + t.height, t.x:t.x + t.width] += 1
    assert (cover == 1).all() and tiles[0] == Tile(0, 0, 128, 128) and tiles[-1] == Tile(256, 128, 44, 72)
    with pytest.raises(InputError, match="multiple of 16"):
        list(tile_grid(10, 10, 100))
