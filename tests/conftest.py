from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"


@pytest.fixture
def test_data() -> Path:
    """The folder of small real images shared with the Galaxy tool tests."""
    return TEST_DATA
