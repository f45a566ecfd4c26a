"""The built image (scripts/build_image.sh) holds exactly the locked packages and runs the steps.

Runs the image through scripts/podman_docker.sh, as Galaxy's jobs do in scripts/test_containers.
Skips unless DLHISTO_IMAGE names a built image (DLHISTO_IMAGE_REQUIRED makes that an error).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("DLHISTO_IMAGE")
if not IMAGE:
    if os.environ.get("DLHISTO_IMAGE_REQUIRED"):
        raise RuntimeError("DLHISTO_IMAGE_REQUIRED is set but DLHISTO_IMAGE is not")
    pytest.skip("no image to test (scripts/test_containers builds one)", allow_module_level=True)

LOCKS = ("requirements.lock", "requirements-omero.lock")
"""What the image installs (containers/Dockerfile, target cuda), besides dlhisto itself."""
PIP_OWN = {"pip", "setuptools", "wheel"}
"""Installed with the interpreter (ensurepip), not by a lock."""


def in_image(*command: str, volumes: tuple[str, ...] = ()) -> str:
    """What the command prints, run in the image with no network."""
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    result = subprocess.run([str(REPO / "scripts" / "podman_docker.sh"), "run", "--rm", "--net", "none", *mounts,
                             IMAGE, *command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for lock in LOCKS:
        for line in (REPO / lock).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pins[normalized(name)] = version.strip()
    return pins


def test_the_image_holds_exactly_the_locked_versions():
    freeze = in_image("python", "-m", "pip", "freeze", "--all").splitlines()
    installed = {normalized(name): version for name, version in (line.split("==") for line in freeze if "==" in line)}
    assert [line for line in freeze if "==" not in line] == ["dlhisto @ file:///src"]  # from the build context
    for name in PIP_OWN:
        installed.pop(name, None)
    assert installed == locked()
    version = in_image("python", "-c", "import importlib.metadata as m; print(m.version('dlhisto'))").strip()
    assert f"dlhisto {version}" == in_image("dlhisto", "--version").strip()


def test_the_image_runs_a_step_offline(tmp_path):
    """Classic segmentation of the bundled nuclei image, in the image, with no network: the same
    objects as this checkout's dlhisto finds."""
    (tmp_path / "out").mkdir()
    image = REPO / "test-data" / "nuclei.tif"
    outputs = ("labels.tif", "measurements.tsv", "summary.tsv")
    in_image("dlhisto", "segment_classic", f"/in/{image.name}",
             *(arg for name in outputs for arg in (f"--{name.split('.')[0]}", f"/out/{name}")),
             volumes=(f"{image}:/in/{image.name}:ro", f"{tmp_path / 'out'}:/out"))
    (tmp_path / "here").mkdir()
    subprocess.run([str(REPO / ".venv" / "bin" / "dlhisto"), "segment_classic", str(image),
                    *(arg for name in outputs for arg in (f"--{name.split('.')[0]}", str(tmp_path / "here" / name)))],
                   check=True, capture_output=True)
    for table in ("measurements.tsv", "summary.tsv"):
        assert (tmp_path / "out" / table).read_text() == (tmp_path / "here" / table).read_text(), table
    assert len((tmp_path / "here" / "measurements.tsv").read_text().splitlines()) > 100
