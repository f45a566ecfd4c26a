"""Crafted inputs a hostile (or careless) user could upload, for the tests of tests/test_hostile_input.py
and the Galaxy expect_failure tests: run it to remake the two kept in test-data/.

    test-data/ome_external_reference.ome.tif  an OME-TIFF whose one image plane lies in '../nuclei.tif'
    test-data/package_bad_config.zip          a model package whose rdf.yaml gives n_classes as text
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import yaml

ROOT = Path(__file__).resolve().parent.parent
OWN_UUID = "urn:uuid:2a7e0c36-4f6d-4b7e-9d1e-000000000001"
OTHER_UUID = "urn:uuid:2a7e0c36-4f6d-4b7e-9d1e-000000000002"


def ome_xml(size_x: int, size_y: int, tiff_data: str, root_uuid: str | None = OWN_UUID,
            physical_size: str | None = None) -> str:
    """A one-plane uint16 OME-XML with the given TiffData element(s)."""
    uuid = f' UUID="{root_uuid}"' if root_uuid else ""
    physical = f' PhysicalSizeX="{physical_size}" PhysicalSizeY="{physical_size}"' if physical_size else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"{uuid}>'
            '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" '
            f'SizeX="{size_x}" SizeY="{size_y}" SizeC="1" SizeZ="1" SizeT="1"{physical}>'
            '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
            f'{tiff_data}</Pixels></Image></OME>')


def write_ome_tiff(path: Path, data: np.ndarray, xml: str) -> None:
    """A TIFF of ``data`` whose ImageDescription is exactly ``xml``."""
    tifffile.imwrite(path, data, description=xml, metadata=None)


def ome_external_reference(path: Path, referenced: str, shape=(64, 64)) -> None:
    """An OME-TIFF of zeros whose OME-XML says its only plane is the first IFD of ``referenced``."""
    tiff_data = f'<TiffData IFD="0" PlaneCount="1"><UUID FileName="{referenced}">{OTHER_UUID}</UUID></TiffData>'
    write_ome_tiff(path, np.zeros(shape, np.uint16), ome_xml(shape[1], shape[0], tiff_data))


def ome_self_reference(path: Path, data: np.ndarray) -> None:
    """A single-file OME-TIFF as Bio-Formats writes it: its TiffData names itself by UUID."""
    tiff_data = (f'<TiffData IFD="0" PlaneCount="1"><UUID FileName="{path.name}">{OWN_UUID}</UUID></TiffData>')
    write_ome_tiff(path, data, ome_xml(data.shape[1], data.shape[0], tiff_data))


def ome_with_pixel_size(path: Path, data: np.ndarray, physical_size: str) -> None:
    write_ome_tiff(path, data, ome_xml(data.shape[1], data.shape[0], '<TiffData IFD="0" PlaneCount="1"/>',
                                       physical_size=physical_size))


def package(path: Path, rdf: dict | str, members: dict[str, bytes] | None = None) -> None:
    """A zip with ``rdf`` as rdf.yaml (a dict is dumped as YAML) and other members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", rdf if isinstance(rdf, str) else yaml.safe_dump(rdf, sort_keys=False))
        for name, data in (members or {}).items():
            archive.writestr(name, data)


def rdf_of(package_path: Path) -> dict:
    with zipfile.ZipFile(package_path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def members_of(package_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package_path) as archive:
        return {name: archive.read(name) for name in archive.namelist() if name != "rdf.yaml"}


def zip_bomb_member(archive_path: Path, member: str, size: int, others: dict[str, bytes]) -> None:
    """A zip whose ``member`` holds ``size`` zero bytes, deflated to about size / 1000."""
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in others.items():
            archive.writestr(name, data)
        with archive.open(member, "w", force_zip64=True) as fh:
            block = bytes(2**24)
            for _ in range(size // len(block)):
                fh.write(block)


def zip_declaring(archive_path: Path, member: str, size: int, others: dict[str, bytes]) -> None:
    """A small zip whose central directory declares ``size`` bytes for ``member`` (as a bomb
    does), while the member holds a few bytes; ``size`` below 4 GiB."""
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in others.items():
            archive.writestr(name, data)
        archive.writestr(member, b"\0" * 1024)
    data = bytearray(archive_path.read_bytes())
    entry = _central_entry(data, member)
    data[entry + 24:entry + 28] = size.to_bytes(4, "little")
    archive_path.write_bytes(bytes(data))


def _central_entry(data: bytearray, member: str) -> int:
    """Offset of ``member``'s record in the zip's central directory."""
    name = member.encode()
    position = data.index(b"PK\x01\x02")
    while True:
        name_length = int.from_bytes(data[position + 28:position + 30], "little")
        if data[position + 46:position + 46 + name_length] == name:
            return position
        extra = int.from_bytes(data[position + 30:position + 32], "little")
        comment = int.from_bytes(data[position + 32:position + 34], "little")
        position += 46 + name_length + extra + comment


def yaml_alias_bomb(levels: int = 9) -> str:
    """A few kilobytes of YAML whose aliases expand to 10**levels strings ('billion laughs')."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def state_dict_bytes(state: dict) -> bytes:
    import torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def main() -> None:
    ome_external_reference(ROOT / "test-data" / "ome_external_reference.ome.tif", "../nuclei.tif")
    rdf = rdf_of(ROOT / "test-data" / "nuclei_unet.zip")
    rdf["config"]["dlhisto"]["model"]["n_classes"] = "three"
    package(ROOT / "test-data" / "package_bad_config.zip", rdf)


if __name__ == "__main__":
    main()
