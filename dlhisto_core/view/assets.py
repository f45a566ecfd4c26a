"""The browser libraries the viewer's page uses: pinned npm packages, vendored by the install step.

Nothing is fetched when a page is made or shown (no CDN): ``scripts/vendor_assets.py`` (run by
the install step and the container build) downloads each package's tarball from the npm
registry, checks it against the registry's SHA-512 integrity and copies the files named here into
``static/vendor/``, with the package's licence. A page copies them beside its tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base.errors import InputError

VENDOR_FOLDER = Path(__file__).parent / "static" / "vendor"
"""Where the install step puts the vendored files (not in git)."""
GLUE_FOLDER = Path(__file__).parent / "static"
"""dlhisto's own page code: viewer.js and viewer.css."""


@dataclass(frozen=True)
class NpmPackage:
    """One pinned package of the npm registry and the files the page takes from it."""

    name: str
    version: str
    integrity: str
    """The registry's ``dist.integrity`` of the tarball (SHA-512, base64)."""
    licence: str
    files: dict[str, str]
    """Member of the tarball -> file name in the vendor folder."""

    @property
    def tarball(self) -> str:
        return f"https://registry.npmjs.org/{self.name}/-/{self.name}-{self.version}.tgz"


VENDORED = (
    NpmPackage("openseadragon", "6.1.1",
               "sha512-g4iKe2q8B642SaBT3+x4ZF3/8b1TxPPydyjmtrOLgDrlYWMKd9ZXM+1Cb/xa9DVySkvs/7l6HR1nHKfD5F3Tsw==",
               "BSD-3-Clause",
               {"package/build/openseadragon/openseadragon.min.js": "openseadragon.min.js",
                "package/LICENSE.txt": "openseadragon.LICENSE.txt"}),
)
"""The page's libraries: OpenSeadragon (pan, zoom, Deep Zoom tiles, layers); the rest is dlhisto's glue."""


def vendored_files() -> list[Path]:
    """The vendored files a page needs; refuses in one line when the install step has not run."""
    paths = [VENDOR_FOLDER / name for package in VENDORED for name in package.files.values()]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise InputError(f"the viewer's browser libraries are not installed ({', '.join(missing)} missing): run "
                         "'python scripts/vendor_assets.py' from dlhisto's source (the install step does)")
    return paths
