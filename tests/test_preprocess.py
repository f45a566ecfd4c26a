import numpy as np
import pytest
from skimage import color, draw

from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import Image, read_image
from dlhisto_core.imaging.preprocessing import PreprocessOptions, deconvolve_stains, enhance_ridges, gaussian_smooth, normalize_percentiles, preprocess, rescale_to_pixel_size


def test_gaussian_smoothing_keeps_the_mean_and_lowers_the_noise():
    noise = np.random.default_rng(0).normal(100, 10, (128, 128)).astype(np.float32)
    smoothed = gaussian_smooth(noise, 2)
    assert smoothed.mean() == pytest.approx(noise.mean(), rel=1e-3)
    assert smoothed.std() < noise.std() / 5  # white noise std falls by ~2*sqrt(pi)*sigma = 7.1


def test_gaussian_smoothing_is_per_channel_and_zero_sigma_is_identity():
    rgb = np.zeros((32, 32, 3), np.float32)
    rgb[16, 16, 1] = 1
    smoothed = gaussian_smooth(rgb, 1.5)
    assert smoothed[..., 0].max() == 0 and smoothed[..., 2].max() == 0
    assert smoothed[..., 1].sum() == pytest.approx(1, rel=1e-4)
    np.testing.assert_array_equal(gaussian_smooth(rgb, 0), rgb)


@pytest.mark.parametrize("sigma", [-1, np.nan])
def test_gaussian_smoothing_refuses_bad_sigma(sigma):
    with pytest.raises(InputError, match="sigma must be zero or positive"):
        gaussian_smooth(np.zeros((4, 4)), sigma)


def test_percentile_normalisation_maps_percentiles_to_0_and_1():
    data = np.stack([np.arange(1000, dtype=float).reshape(25, 40),
                     10 * np.arange(1000, dtype=float).reshape(25, 40)], axis=-1)
    norm = normalize_percentiles(data, 10, 90)
    for c in range(2):
        assert np.percentile(norm[..., c], 10) == pytest.approx(0, abs=1e-6)
        assert np.percentile(norm[..., c], 90) == pytest.approx(1, abs=1e-6)
    with pytest.raises(InputError, match="percentiles"):
        normalize_percentiles(data, 90, 10)


def test_colour_deconvolution_recovers_known_stain_concentrations():
    rng = np.random.default_rng(5)
    hed = rng.uniform(0, 0.2, (16, 16, 3))  # stronger stains saturate 16-bit RGB
    rgb = (color.hed2rgb(hed) * 65535).round().astype(np.uint16)
    recovered = deconvolve_stains(rgb, "hed")
    np.testing.assert_allclose(recovered, hed, atol=2e-3)
    np.testing.assert_allclose(deconvolve_stains(rgb, "eosin"), hed[..., 1], atol=2e-3)


def test_colour_deconvolution_on_ihc_puts_hematoxylin_in_blue_nuclei(test_data):
    ihc = read_image(test_data / "ihc.png").data
    hematoxylin = deconvolve_stains(ihc, "hematoxylin")
    dab = deconvolve_stains(ihc, "dab")
    bluish = ihc[..., 2].astype(int) - ihc[..., 0] > 20   # counterstained nuclei
    brownish = ihc[..., 0].astype(int) - ihc[..., 2] > 60  # DAB-positive epithelium
    assert hematoxylin[bluish].mean() > 1.5 * hematoxylin[brownish].mean()
    assert dab[brownish].mean() > 2 * dab[bluish].mean()


def test_colour_deconvolution_needs_rgb():
    with pytest.raises(InputError, match="needs an RGB image, got 1 channel"):
        deconvolve_stains(np.zeros((8, 8), np.uint8), "hematoxylin")


def test_rescale_to_pixel_size_changes_shape_and_reports_the_actual_size():
    data = np.random.default_rng(6).random((101, 200), dtype=np.float32)
    resized, size = rescale_to_pixel_size(data, (0.5, 0.5), 1.0)
    assert resized.shape == (50, 100)  # 50.5 rounds to 50
    assert size == pytest.approx((101 * 0.5 / 50, 1.0))
    assert resized.mean() == pytest.approx(data.mean(), abs=0.01)


def test_preprocess_runs_the_steps_in_order_and_keeps_the_pixel_size(test_data):
    ihc = read_image(test_data / "ihc.png")
    out = preprocess(ihc, PreprocessOptions(deconvolve="hematoxylin", input_pixel_size=0.5,
                                            target_pixel_size=1.0, sigma=1, normalize=(1, 99)))
    assert out.data.shape == (128, 128) and out.data.dtype == np.float32
    assert out.pixel_size == pytest.approx((1.0, 1.0))
    assert np.percentile(out.data, 1) == pytest.approx(0, abs=1e-5)
    assert np.percentile(out.data, 99) == pytest.approx(1, abs=1e-5)


def test_preprocess_refuses_to_rescale_without_a_pixel_size():
    with pytest.raises(InputError, match="records no pixel size"):
        preprocess(Image(np.zeros((8, 8), np.uint8)), PreprocessOptions(target_pixel_size=1.0))


@pytest.mark.parametrize("method", ["sato", "frangi", "meijering"])
def test_ridge_filters_light_up_a_dark_line_only(method):
    image = np.full((64, 64), 200, np.float32)
    image[draw.line(5, 5, 58, 50)] = 50  # a dark one-pixel vessel
    response = enhance_ridges(image, method, sigmas=(1.0,), dark_ridges=True)
    on_line = response[draw.line(10, 9, 50, 43)].mean()
    assert on_line > 10 * response[50:, :10].mean() + 1e-6
    assert enhance_ridges(image, method, sigmas=(1.0,), dark_ridges=False)[draw.line(10, 9, 50, 43)].mean() < on_line


def test_ridge_enhancement_of_retina_vessels(test_data):
    green = read_image(test_data / "retina.png").data[..., 1]
    response = preprocess(read_image(test_data / "retina.png"),
                          PreprocessOptions(channel=1, ridge="sato", dark_ridges=True)).data
    vessels = green < np.percentile(green, 10)  # the darkest tenth of the green channel is mostly vessel
    assert response.shape == (256, 256)
    assert response[vessels].mean() > 2 * response[~vessels].mean()


def test_channel_and_deconvolution_exclude_each_other(test_data):
    with pytest.raises(InputError, match="either one channel or colour deconvolution"):
        preprocess(read_image(test_data / "ihc.png"), PreprocessOptions(channel=0, deconvolve="dab"))
    with pytest.raises(InputError, match="ridge scales must be positive"):
        enhance_ridges(np.zeros((8, 8)), "sato", sigmas=())
