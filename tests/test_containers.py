"""The container recipes (containers/) install what CI installs and tests: the same lock files,
the same Python, nothing pinned elsewhere; the tools name the image of this version."""

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import dlhisto_core

REPO = Path(__file__).resolve().parent.parent
RECIPES = {"Dockerfile": REPO / "containers" / "Dockerfile", "Apptainer": REPO / "containers" / "dlhisto.def"}
LOCKS = ["requirements.lock", "requirements-omero.lock",
         "requirements-bia-validator.lock", "requirements-bia-validator-nodeps.lock"]
CI_LOCKS = ["requirements.lock", "requirements-omero.lock"]  # pytest's environment


def pins(lock: str) -> dict[str, str]:
    """name -> version of a lock file (names normalised as pip does)."""
    found = {}
    for line in (REPO / lock).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{lock}: '{line}' is not pinned with =="
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def pip_installs(recipe: str) -> list[list[str]]:
    """The arguments of every 'pip install' of a recipe (continuation lines joined)."""
    text = recipe.replace("\\\n", " ")
    return [re.split(r"\s+", m.strip()) for m in re.findall(r"pip install([^&\n]*)", text)]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_install_only_the_lock_files(recipe):
    text = RECIPES[recipe].read_text()
    installed = set()
    for arguments in pip_installs(text):
        for flag, value in zip(arguments, arguments[1:] + [""]):
            if flag == "-r":
                installed.add(Path(value).name)
        loose = [a for i, a in enumerate(arguments) if a and not a.startswith("-")
                 and arguments[i - 1] not in ("-r", "--find-links", "--extra-index-url")]
        assert loose in ([], ["/src"]), f"{recipe} installs {loose} outside the lock files"
    assert {name for name in installed if "cpu" not in name} == set(LOCKS)
    for lock in LOCKS:  # the recipe copies the lock it installs from the checkout
        assert re.search(rf"(^|\s){re.escape(lock)}\s", text, re.M), f"{recipe} does not copy {lock}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_use_the_python_ci_tests(recipe):
    images = re.findall(r"python:(\d+)\.(\d+)\.\d+-slim-bookworm", RECIPES[recipe].read_text())
    minors = {(int(major), int(minor)) for major, minor in images}
    assert minors == {sys.version_info[:2], (3, 13)}  # dlhisto's, and the validator's (it needs 3.13)
    assert "DLHISTO_BIA_VALIDATOR_PYTHON=/opt/bia-validator/bin/python" in RECIPES[recipe].read_text()


def test_ci_environment_is_the_lock():
    """What pytest runs with is exactly what the containers install."""
    for lock in CI_LOCKS:
        for name, version in pins(lock).items():
            assert metadata.version(name).split("+")[0] == version, f"{name}: {metadata.version(name)} vs {lock}"


def test_cpu_image_drops_only_what_torch_alone_needs():
    """The CPU image leaves out the lock lines of containers/cuda-only.txt: only packages that no
    other package of the lock requires besides torch (the CUDA runtime of PyPI's torch)."""
    patterns = [re.compile(line) for line in (REPO / "containers" / "cuda-only.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    lock_lines = [line for line in (REPO / "requirements.lock").read_text().splitlines()
                  if line and not line.startswith("#")]
    dropped = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
               for line in lock_lines if any(p.search(line) for p in patterns)}
    assert dropped and {"torch", "torchvision"}.isdisjoint(dropped)
    assert all(name.startswith(("nvidia-", "cuda-")) or name == "triton" for name in dropped)
    kept = set(pins("requirements.lock")) - dropped
    for name in kept - {"torch"}:
        for requirement in metadata.requires(name) or []:
            required = re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[(]", requirement)[0]).lower()
            if "extra ==" not in requirement:
                assert required not in dropped, f"{name} requires {required}, which the CPU image leaves out"


def test_tools_name_the_image_of_this_version():
    macros = (REPO / "tools" / "macros.xml").read_text()
    version = re.search(r'<token name="@TOOL_VERSION@">([^<]+)</token>', macros).group(1)
    assert version == dlhisto_core.__version__
    assert '<container type="docker">ghcr.io/dlhisto/dlhisto:@TOOL_VERSION@</container>' in macros
    assert f"ghcr.io/dlhisto/dlhisto:{version}" in RECIPES["Dockerfile"].read_text()
