"""Crafted inputs a hostile (or careless) user could upload, for the tests of tests/test_hostile_input.py
and the Galaxy expect_failure tests: run it to remake the two kept in test-data/.

    test-data/ome_external_reference.ome.tif  an OME-TIFF whose one image plane lies in '../nuclei.tif'
    test-data/package_bad_config.zip          a model package whose rdf.yaml gives n_classes as text
    test-data/zoo_reads_files.zip             a bioimage.io package whose TorchScript behaves on its test
                                              input and, on larger windows, copies /etc/hostname into its
                                              output and overwrites it (torch.from_file)
    test-data/zoo_control_description.zip     a bioimage.io package whose description holds terminal escapes
                                              (control characters that must not reach the model base's table)
    test-data/svs_huge_tile.svs               an Aperio SVS (2 KB) whose level 0 declares one tile of
                                              2^20 x 2^20 px (OpenSlide aborts on its allocation)
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


def file_touching_torchscript(inner_package: Path, target: str, on_load: bool = False) -> bytes:
    """TorchScript that runs the package's own network and, on windows larger than its 128 px test
    input (or, ``on_load``, in a ``__setstate__`` that torch.jit.load runs), maps the file
    ``target`` shared: its first 16 bytes go into the output, then 'X' over them into the file."""
    import torch

    with zipfile.ZipFile(inner_package) as archive:
        inner = torch.jit.load(io.BytesIO(archive.read("weights.torchscript")))

    class ReadsAndWrites(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.target = target

        def forward(self, x):
            y = self.inner(x)
            if x.shape[-1] > 128:
                stolen = torch.from_file(self.target, True, 16, dtype=torch.uint8)
                y[0, 0, 0, :16] = stolen.float()
                y = y + stolen.fill_(88).float().sum() * 0.0  # used, so that the JIT keeps the write
            return y

    class WritesOnLoad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.target = target
            self.scale = 1.0

        def forward(self, x):
            return x * self.scale

        @torch.jit.export
        def __getstate__(self):
            return (self.target, self.scale, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, float, bool]):
            self.target = state[0]
            self.training = state[2]
            written = torch.from_file(self.target, True, 16, dtype=torch.uint8).fill_(88)
            self.scale = state[1] + float(written.sum()) * 0.0

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(WritesOnLoad() if on_load else ReadsAndWrites()), buffer)
    return buffer.getvalue()


def with_weights(package_path: Path, source: Path, torchscript: bytes) -> None:
    """A copy of the package ``source`` with other TorchScript weights (its rdf unchanged)."""
    package(package_path, rdf_of(source), {**members_of(source), "weights.torchscript": torchscript})


def svs_huge_tile(path: Path, source: Path) -> None:
    """An Aperio SVS whose level 0 is one JPEG tile declared 2^20 x 2^20 px."""
    description = tifffile.TiffFile(source).pages[0].description
    tile = np.zeros((16, 16, 3), np.uint8)
    with tifffile.TiffWriter(path, bigtiff=False) as writer:
        writer.write(tile, tile=(16, 16), compression="jpeg", description=description, photometric="rgb")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        for code, value in ((256, 2**20), (257, 2**20), (322, 2**20), (323, 2**20)):
            offset = tags[code].offset + 8  # the value field of the 12-byte entry
            data[offset:offset + 4] = value.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def main() -> None:
    ome_external_reference(ROOT / "test-data" / "ome_external_reference.ome.tif", "../nuclei.tif")
    rdf = rdf_of(ROOT / "test-data" / "nuclei_unet.zip")
    rdf["config"]["dlhisto"]["model"]["n_classes"] = "three"
    package(ROOT / "test-data" / "package_bad_config.zip", rdf)
    zoo = ROOT / "test-data" / "zoo" / "ts05_zmuv_halo.zip"
    with_weights(ROOT / "test-data" / "zoo_reads_files.zip", zoo, file_touching_torchscript(zoo, "/etc/hostname"))
    svs_huge_tile(ROOT / "test-data" / "svs_huge_tile.svs", ROOT / "test-data" / "cmu_small_region.svs")
    rdf = rdf_of(zoo)
    rdf["description"] = "three convolutions\x1b[2J and a forged row"
    package(ROOT / "test-data" / "zoo_control_description.zip", rdf, members_of(zoo))


if __name__ == "__main__":
    main()
