"""OMERO: fetch images and their annotations, push segmentations and results back.

Built on omero-py's ``omero.client`` and the OMERO services it calls directly (Glacier2
session, IQuery, RawPixelsStore, IRoi, IUpdate, RawFileStore), so that every call dlhisto makes
is explicit and known (``tests/README.md`` lists them). Install with ``pip install
dlhisto[omero]``; omero-py needs zeroc-ice 3.6.5 (``scripts/build_zeroc_ice.sh``).

Credentials come from the environment (OMERO_HOST, OMERO_USER, OMERO_PASSWORD, ...: what
Galaxy's tool credentials inject) or a small JSON file, never from the command line.

ROIs become label images: every ROI is one object (label = its position in the list, 1..N),
drawn from its shapes (masks, polygons, rectangles, ellipses) on the first plane; objects go
back as one ROI each, with a mask shape (exact) or a polygon (outline).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from skimage import draw, measure

from ..io import untrusted
from ..base.errors import InputError
from ..classic.object_classes import ObjectClasses
from ..io.geojson import class_colour, mask_polygons
from ..io.rings import ring_pixels
from ..io.pixel_size import check_pixel_size, onto_grid

NAMESPACE = "dlhisto"
"""Namespace of the key-value maps and files dlhisto attaches."""
TILE = 1024
"""Pixels are fetched in tiles of at most this size (bounded message size)."""
DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
          "uint32": np.uint32, "float": np.float32, "double": np.float64, "bit": np.uint8}


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int = 4064
    user: str | None = None
    password: str | None = None
    session_key: str | None = None
    group: int | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credentials(host={self.host!r}, port={self.port}, user={self.user!r}, group={self.group})"


ENVIRONMENT = {"host": "OMERO_HOST", "port": "OMERO_PORT", "user": "OMERO_USER", "password": "OMERO_PASSWORD",
               "session_key": "OMERO_SESSION_KEY", "group": "OMERO_GROUP"}
"""Environment variables holding the credentials (Galaxy's tool credentials inject these)."""


def read_credentials(path: str | os.PathLike | None = None) -> Credentials:
    """Credentials from a JSON file (host, port, user, password, session_key, group), or from
    the OMERO_* environment variables when no file is given."""
    if path is None:
        values = {field: os.environ[name] for field, name in ENVIRONMENT.items() if os.environ.get(name)}
        source = "the environment (" + ", ".join(ENVIRONMENT.values()) + ")"
    else:
        source = "the OMERO credentials file"
        try:  # never quote the file: it holds a password
            values = json.loads(untrusted.read_small_file(path, "credentials", source).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"cannot read {source}: {type(exc).__name__}") from None
        if not isinstance(values, dict):
            raise InputError(f"{source} must hold a JSON object")
        unknown = sorted(set(values) - set(ENVIRONMENT))
        if unknown:
            raise InputError(f"unknown field(s) in {source}: {', '.join(unknown)[:200]}")
    for field in ("host", "user", "password", "session_key"):
        value = values.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > 1000 or "\n" in value):
            raise InputError(f"the OMERO {field.replace('_', ' ')} in {source} must be text of one line")
    if not (values.get("host") or "").strip():
        raise InputError(f"no OMERO host in {source}")
    if not values.get("session_key") and not (values.get("user") and values.get("password")):
        raise InputError(f"the OMERO credentials in {source} need a user name and password, or a session key")
    port = _whole_number(values.get("port") or 4064, "port", source, 1, 65535)
    group = None if values.get("group") in (None, "") else _whole_number(values["group"], "group", source, -1, 2**63 - 1)
    return Credentials(values["host"].strip(), port, values.get("user") or None, values.get("password") or None,
                       values.get("session_key") or None, group)


def _whole_number(value, what: str, source: str, low: int, high: int) -> int:
    """An integer given as a number or as digits (environment variables are text), in [low, high]."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"the OMERO {what} in {source} must be a whole number from {low} to {high}")
    return value


@dataclass
class FetchedImage:
    id: int
    name: str
    pixels: np.ndarray
    """(Y, X) or (Y, X, C): the first Z plane and time point."""
    pixel_size: tuple[float, float] | None
    """(y, x) in micrometres, when OMERO knows it."""


@dataclass
class FetchedRoi:
    id: int
    name: str
    shapes: list[str]
    """Kinds of its shapes (mask, polygon, rectangle, ellipse, ...)."""
    text: str


class Session:
    """An open OMERO session: ``with connect(credentials) as omero_session: ...``."""

    def __init__(self, client, credentials: Credentials):
        self.client, self.credentials = client, credentials
        self.services = client.getSession()

    # -- reading -------------------------------------------------------------------------------
    def image(self, image_id: int):
        """The omero.model Image with its pixels description, or a clear error."""
        import omero.sys
        from omero.rtypes import rlong

        params = omero.sys.ParametersI()
        params.add("id", rlong(image_id))
        image = self.services.getQueryService().findByQuery(
            "select i from Image i join fetch i.pixels p join fetch p.pixelsType where i.id = :id", params,
            self._context())
        if image is None:
            raise InputError(f"no image with id {image_id} on OMERO at {self.credentials.where} "
                             f"(or user '{self.credentials.user or 'of the session'}' may not see it)")
        return image

    def dataset_image_ids(self, dataset_id: int) -> list[int]:
        import omero.sys
        from omero.rtypes import rlong

        params = omero.sys.ParametersI()
        params.add("id", rlong(dataset_id))
        links = self.services.getQueryService().findAllByQuery(
            "select l from DatasetImageLink l where l.parent.id = :id order by l.child.id", params, self._context())
        if not links:
            raise InputError(f"no dataset with id {dataset_id} holding images on OMERO at {self.credentials.where}")
        return [link.child.id.val for link in links]

    def fetch_image(self, image_id: int) -> FetchedImage:
        """The first Z plane and time point of an image, all channels, tile by tile."""
        image = self.image(image_id)
        pixels = image.getPrimaryPixels()
        width, height, channels = pixels.sizeX.val, pixels.sizeY.val, pixels.sizeC.val
        kind = pixels.pixelsType.value.val
        if kind not in DTYPES:
            raise InputError(f"image {image_id} has pixels of type '{kind}', which dlhisto does not read")
        dtype = np.dtype(DTYPES[kind]).newbyteorder(">")
        data = np.zeros((height, width, channels), DTYPES[kind])
        store = self.services.createRawPixelsStore()
        try:
            store.setPixelsId(pixels.id.val, True, self._context())
            for c in range(channels):
                for y in range(0, height, TILE):
                    for x in range(0, width, TILE):
                        h, w = min(TILE, height - y), min(TILE, width - x)
                        raw = store.getTile(0, c, 0, x, y, w, h, self._context())
                        data[y:y + h, x:x + w, c] = np.frombuffer(raw, dtype).reshape(h, w)
        finally:
            store.close()
        pixel_size = _pixel_size(pixels)
        if pixel_size is not None:
            check_pixel_size(pixel_size, f"OMERO image {image_id} has a pixel size of")
        return FetchedImage(image_id, image.name.val if image.name else f"image {image_id}",
                            data[..., 0] if channels == 1 else data, pixel_size)

    def rois(self, image_id: int) -> list:
        return list(self.services.getRoiService().findByImage(image_id, None, self._context()).rois)

    def annotations(self, image_id: int) -> list[dict]:
        """Tags and key-value pairs linked to the image: rows (kind, namespace, key, value)."""
        import omero.sys
        from omero.model import MapAnnotationI, TagAnnotationI
        from omero.rtypes import rlong

        params = omero.sys.ParametersI()
        params.add("id", rlong(image_id))
        links = self.services.getQueryService().findAllByQuery(
            "select l from ImageAnnotationLink l join fetch l.child where l.parent.id = :id", params, self._context())
        rows = []
        for link in links:
            annotation = link.child
            namespace = annotation.ns.val if annotation.ns else ""
            if isinstance(annotation, TagAnnotationI):
                rows.append({"kind": "tag", "namespace": namespace, "key": "", "value": annotation.textValue.val})
            elif isinstance(annotation, MapAnnotationI):
                rows += [{"kind": "map", "namespace": namespace, "key": pair.name, "value": pair.value}
                         for pair in annotation.getMapValue()]
        return rows

    # -- writing -------------------------------------------------------------------------------
    def push_labels(self, image_id: int, labels: np.ndarray, shape: str = "mask", name: str = "dlhisto",
                    labels_pixel_size: tuple[float, float] | None = None,
                    object_classes: ObjectClasses | None = None) -> list[int]:
        """One ROI per object of a label image, linked to the image; their ids. Labels made at
        another pixel size (``labels_pixel_size``, e.g. a model's) are first resampled onto the
        image's pixels (:func:`~dlhisto_core.io.pixel_size.onto_grid`). An object with a class
        (``object_classes``) has it as its shapes' text and its colour as their stroke and fill
        (the fill a quarter opaque), the colours of dlhisto's QuPath exports."""
        from omero.model import ImageI, RoiI
        from omero.rtypes import rint, rstring

        image = self.image(image_id)
        pixels = image.getPrimaryPixels()
        shape = (pixels.sizeY.val, pixels.sizeX.val)
        gridded = onto_grid(labels, labels_pixel_size, shape, _pixel_size(pixels))
        if gridded is None:
            raise InputError(f"the labels ({labels.shape[1]}x{labels.shape[0]}) do not match the size of OMERO image "
                             f"{image_id} ({shape[1]}x{shape[0]}) nor cover it at another pixel size")
        labels = gridded
        classes = dict(zip(object_classes.labels.tolist(), object_classes.classes.tolist())) if object_classes else {}
        rois = []
        for region in measure.regionprops(labels.astype(np.int64)):
            roi = RoiI()
            roi.setImage(ImageI(image_id, False))
            roi.setName(rstring(f"{name} {region.label}"))
            for made in ([mask_shape(region)] if shape == "mask" else polygon_shapes(region)):
                if region.label in classes:
                    k = classes[region.label]
                    made.setTextValue(rstring(object_classes.names[k - 1]))
                    made.setStrokeColor(rint(omero_colour(class_colour(k - 1), 255)))
                    made.setFillColor(rint(omero_colour(class_colour(k - 1), 64)))
                roi.addShape(made)
            rois.append(roi)
        if not rois:
            return []
        saved = self.services.getUpdateService().saveAndReturnArray(rois, self._context())
        return [roi.id.val for roi in saved]

    def add_key_values(self, image_id: int, pairs: Sequence[tuple[str, str]]) -> int:
        """A key-value map (namespace dlhisto) linked to the image; its id."""
        from omero.model import MapAnnotationI, NamedValue
        from omero.rtypes import rstring

        annotation = MapAnnotationI()
        annotation.setNs(rstring(NAMESPACE))
        annotation.setMapValue([NamedValue(str(k), str(v)) for k, v in pairs])
        return self._link(image_id, annotation)

    def attach_file(self, image_id: int, path: str | os.PathLike, name: str, mimetype: str) -> int:
        """Upload a file and link it to the image as a file annotation; the annotation's id."""
        import hashlib

        from omero.model import FileAnnotationI, OriginalFileI
        from omero.rtypes import rlong, rstring

        path = Path(path)
        content = path.read_bytes()
        original = OriginalFileI()
        original.setName(rstring(name))
        original.setPath(rstring("dlhisto/"))
        original.setSize(rlong(len(content)))
        original.setMimetype(rstring(mimetype))
        original.setHash(rstring(hashlib.sha1(content).hexdigest()))
        original = self.services.getUpdateService().saveAndReturnObject(original, self._context())
        store = self.services.createRawFileStore()
        try:
            store.setFileId(original.id.val, self._context())
            for offset in range(0, len(content), 1 << 20):
                chunk = content[offset:offset + (1 << 20)]
                store.write(chunk, offset, len(chunk), self._context())
            store.save(self._context())
        finally:
            store.close()
        annotation = FileAnnotationI()
        annotation.setNs(rstring(NAMESPACE))
        annotation.setFile(OriginalFileI(original.id.val, False))
        return self._link(image_id, annotation)

    def _link(self, image_id: int, annotation) -> int:
        from omero.model import ImageAnnotationLinkI, ImageI

        self.image(image_id)  # a clear error for an unknown image, before anything is written
        update = self.services.getUpdateService()
        annotation = update.saveAndReturnObject(annotation, self._context())
        link = ImageAnnotationLinkI()
        link.setParent(ImageI(image_id, False))
        link.setChild(type(annotation)(annotation.id.val, False))
        update.saveAndReturnObject(link, self._context())
        return annotation.id.val

    def _context(self) -> dict:
        """Call context: the group to work in (-1: all the user's groups)."""
        return {"omero.group": str(self.credentials.group if self.credentials.group is not None else -1)}


@contextlib.contextmanager
def connect(credentials: Credentials, timeout_s: int = 15) -> Iterator[Session]:
    """Log in (user and password, or a session key); errors become one clear line."""
    try:
        import Glacier2
        import Ice
        import omero
        import omero.clients  # noqa: F401  (registers omero.client)
    except ImportError:
        raise InputError("OMERO support is not installed: pip install 'dlhisto[omero]'") from None
    client = omero.client(host=credentials.host, port=credentials.port,
                          args=[f"--Ice.Override.ConnectTimeout={timeout_s * 1000}", "--Ice.Warn.Connections=0"])
    try:
        try:
            if credentials.session_key:
                client.joinSession(credentials.session_key)
            else:
                client.createSession(credentials.user, credentials.password)
        except Glacier2.PermissionDeniedException:
            who = f"user '{credentials.user}'" if not credentials.session_key else "the session key"
            raise InputError(f"OMERO at {credentials.where} refused the login of {who}: wrong user name, password "
                             "or session key") from None
        except Ice.ConnectionRefusedException:
            raise InputError(f"cannot connect to OMERO at {credentials.where}: connection refused") from None
        except (Ice.ConnectTimeoutException, Ice.TimeoutException):
            raise InputError(f"cannot connect to OMERO at {credentials.where}: no answer in {timeout_s} s") from None
        except Ice.DNSException:
            raise InputError(f"cannot connect to OMERO: unknown host '{credentials.host}'") from None
        except Ice.SocketException as exc:
            raise InputError(f"cannot connect to OMERO at {credentials.where}: {type(exc).__name__}") from None
        yield Session(client, credentials)
    except omero.ServerError as exc:
        raise InputError(f"OMERO at {credentials.where} answered: {exc.message or type(exc).__name__}") from None
    except Ice.Exception as exc:
        raise InputError(f"lost the connection to OMERO at {credentials.where}: {type(exc).__name__}") from None
    finally:
        client.closeSession()


# -- the two steps ---------------------------------------------------------------------------
ROI_COLUMNS = ["image_id", "image", "label", "roi_id", "name", "shapes", "text"]
ANNOTATION_COLUMNS = ["image_id", "image", "kind", "namespace", "key", "value"]
PUSHED_COLUMNS = ["image_id", "kind", "id", "name"]


def fetch(session: Session, image_ids: Sequence[int] = (), dataset_ids: Sequence[int] = (),
          output_dir: str | os.PathLike = ".", rois_table=None, annotations_table=None, log=print) -> list[int]:
    """Fetch images and their ROIs as label images, as ``dlhisto omero_fetch`` does.

    Writes ``images/<id>_<name>.ome.tif`` and ``labels/<id>_<name>.ome.tif`` under
    ``output_dir`` (all images, or none if any fails), and optionally the tables of the ROIs
    (which label each became) and of the images' tags and key-value pairs. Returns the image ids.

    Examples
    --------
    >>> from dlhisto_core import omero
    >>> with omero.connect(omero.read_credentials()) as session:  # doctest: +SKIP
    ...     omero.fetch(session, dataset_ids=[51], output_dir="fetched")
    [1201, 1202]
    """
    from ..io.writers import write_image, write_labels
    from ..io.outputs import outputs_together
    from ..io.tables import write_table

    out = Path(output_dir)
    image_ids = list(image_ids)
    for dataset_id in dataset_ids:
        image_ids += session.dataset_image_ids(dataset_id)
    image_ids = list(dict.fromkeys(image_ids))
    if not image_ids:
        raise InputError("give at least one image id or dataset id")
    out.mkdir(parents=True, exist_ok=True)
    roi_rows, annotation_rows = [], []
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out) as work:
        work = Path(work)
        for folder in ("images", "labels"):
            (work / folder).mkdir()
        for image_id in image_ids:
            fetched = session.fetch_image(image_id)
            file_name = f"{image_id}_{_safe_name(fetched.name)}.ome.tif"
            write_image(work / "images" / file_name, fetched.pixels, fetched.pixel_size)
            labels, rois = rois_to_labels(session.rois(image_id), fetched.pixels.shape[:2])
            write_labels(work / "labels" / file_name, labels, fetched.pixel_size)
            roi_rows += [{"image_id": image_id, "image": fetched.name, "label": k, "roi_id": roi.id,
                          "name": roi.name, "shapes": ",".join(roi.shapes), "text": roi.text}
                         for k, roi in enumerate(rois, 1)]
            annotation_rows += [{"image_id": image_id, "image": fetched.name, **row}
                                for row in session.annotations(image_id)]
            if log:
                log(f"image {image_id} '{fetched.name}': {fetched.pixels.shape[1]}x{fetched.pixels.shape[0]}, "
                    f"{len(rois)} ROIs")
        with outputs_together(rois_table, annotations_table) as (rois_path, annotations_path):  # with the images
            if rois_path:
                write_table(rois_path, roi_rows, ROI_COLUMNS)
            if annotations_path:
                write_table(annotations_path, annotation_rows, ANNOTATION_COLUMNS)
            for folder in ("images", "labels"):
                (out / folder).mkdir(exist_ok=True)
                for path in sorted((work / folder).iterdir()):
                    os.replace(path, out / folder / path.name)
    return image_ids


def push(session: Session, image_id: int, labels: np.ndarray | None = None, shape: str = "mask",
         roi_name: str = "dlhisto", attachments: Sequence[tuple[str, str]] = (),
         key_values: Sequence[tuple[str, str]] = (), labels_pixel_size: tuple[float, float] | None = None,
         object_classes: ObjectClasses | None = None) -> list[dict]:
    """Push results to an OMERO image, as ``dlhisto omero_push`` does: each object of
    ``labels`` (at ``labels_pixel_size``, resampled onto the image's pixels where it differs)
    as one ROI (with its class name and colour from ``object_classes``, e.g. cell types), the
    (path, name) ``attachments`` as files, and ``key_values``
    (with dlhisto's version and the ROI count) as one key-value map. Returns a row per object
    created (image_id, kind, id, name).

    Examples
    --------
    >>> from dlhisto_core import omero, read_labels
    >>> labels = read_labels("test-data/nuclei_labels.tif").data
    >>> with omero.connect(omero.read_credentials()) as session:  # doctest: +SKIP
    ...     rows = omero.push(session, 1201, labels, shape="polygon")
    """
    from .. import __version__

    pairs = [("dlhisto.version", __version__), *key_values]
    session.image(image_id)  # an unknown image fails before anything is written
    rows = []
    if labels is not None:
        roi_ids = session.push_labels(image_id, labels, shape, roi_name, labels_pixel_size, object_classes)
        rows += [{"image_id": image_id, "kind": "roi", "id": i} for i in roi_ids]
        pairs.append(("dlhisto.rois", str(len(roi_ids))))
    for path, name in attachments:
        rows.append({"image_id": image_id, "kind": "file", "name": name,
                     "id": session.attach_file(image_id, path, name, _mimetype(name))})
    rows.append({"image_id": image_id, "kind": "map", "id": session.add_key_values(image_id, pairs)})
    return rows


def image_id_from_name(name: str) -> int:
    """The OMERO image id that starts a name given by :func:`fetch` ('1201_slide_3' -> 1201)."""
    digits = name.split("_", 1)[0]
    if not digits.isdigit() or not digits.strip("0"):
        raise InputError(f"'{name}' does not start with an OMERO image id and '_' "
                         "(as the images of omero_fetch are named); give the image id instead")
    return int(digits)


def key_value(text: str) -> tuple[str, str]:
    """('key', 'value') of 'key=value'."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"key-value pairs are written key=value, got '{text}'")
    return key.strip(), value.strip()


def _safe_name(name: str) -> str:
    """A file-name-safe form of an OMERO image name, without its extension."""
    stem = Path(name).name.split(".")[0]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:80] or "image"


def omero_colour(rgb: Sequence[int], alpha: int) -> int:
    """An RGBA colour as OMERO stores it: one signed 32-bit integer, red in the highest byte."""
    value = (int(rgb[0]) << 24) | (int(rgb[1]) << 16) | (int(rgb[2]) << 8) | int(alpha)
    return value - 2**32 if value >= 2**31 else value


def _mimetype(name: str) -> str:
    import mimetypes
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


# -- shapes <-> label images -----------------------------------------------------------------
def mask_shape(region):
    """An OMERO mask (bits packed row by row, as OMERO stores them) over the object's box."""
    from omero.model import MaskI
    from omero.rtypes import rdouble

    y0, x0, y1, x1 = region.bbox
    mask = MaskI()
    mask.setX(rdouble(x0))
    mask.setY(rdouble(y0))
    mask.setWidth(rdouble(x1 - x0))
    mask.setHeight(rdouble(y1 - y0))
    mask.setBytes(np.packbits(region.image.ravel()).tobytes())
    return mask


def polygon_shapes(region) -> list:
    """OMERO polygons along the object's outline, one per connected part: the pixel edges, as
    the GeoJSON export draws them (:func:`geojson.mask_polygons`), so that the pixels whose
    centres they enclose are the object's again. OMERO polygons have no holes: an object's holes
    are filled."""
    from omero.model import PolygonI
    from omero.rtypes import rstring

    y0, x0 = region.bbox[:2]
    shapes = []
    for rings in mask_polygons(region.image):
        polygon = PolygonI()
        polygon.setPoints(rstring(" ".join(f"{x + x0},{y + y0}" for x, y in rings[0][:-1])))
        shapes.append(polygon)
    return shapes


def rois_to_labels(rois: Sequence, shape: tuple[int, int]) -> tuple[np.ndarray, list[FetchedRoi]]:
    """A label image with ROI number k (1..N) drawn from each ROI's 2-D shapes; and a
    description of each ROI. Later ROIs are drawn over earlier ones."""
    labels = np.zeros(shape, np.uint32)
    described = []
    for k, roi in enumerate(rois, 1):
        kinds, texts = [], []
        for shape_ in roi.copyShapes():
            kind = type(shape_).__name__.removesuffix("I").lower()
            kinds.append(kind)
            if getattr(shape_, "textValue", None) is not None:
                texts.append(shape_.textValue.val)
            labels[shape_mask(shape_, shape)] = k
        described.append(FetchedRoi(roi.id.val, roi.name.val if roi.name else "", kinds, "; ".join(texts)))
    return labels, described


def shape_mask(shape_, image_shape: tuple[int, int]) -> np.ndarray:
    """Pixels covered by one OMERO shape (mask, polygon, rectangle, ellipse; others cover none)."""
    from omero.model import EllipseI, MaskI, PolygonI, RectangleI

    covered = np.zeros(image_shape, bool)
    value = lambda field: float(getattr(shape_, field).val)  # noqa: E731
    if isinstance(shape_, MaskI):
        x0, y0, width, height = (int(round(value(f))) for f in ("x", "y", "width", "height"))
        bits = np.unpackbits(np.frombuffer(shape_.bytes, np.uint8))[:width * height].reshape(height, width)
        region = covered[max(y0, 0):y0 + height, max(x0, 0):x0 + width]
        region |= bits[max(-y0, 0):max(-y0, 0) + region.shape[0], max(-x0, 0):max(-x0, 0) + region.shape[1]] > 0
    elif isinstance(shape_, RectangleI):
        x0, y0 = int(round(value("x"))), int(round(value("y")))
        covered[max(y0, 0):y0 + int(round(value("height"))), max(x0, 0):x0 + int(round(value("width")))] = True
    elif isinstance(shape_, EllipseI):
        rows, cols = draw.ellipse(value("y"), value("x"), value("radiusY"), value("radiusX"), shape=image_shape)
        covered[rows, cols] = True
    elif isinstance(shape_, PolygonI):  # the pixels whose centres it encloses or passes through
        points = np.array([[float(v) for v in p.split(",")] for p in shape_.points.val.split()])
        ring = np.vstack([points, points[:1]])
        top, left = (max(int(np.floor(ring[:, k].min())), 0) for k in (1, 0))
        bottom, right = (min(int(np.ceil(ring[:, k].max())) + 1, image_shape[1 - k]) for k in (1, 0))
        if bottom > top and right > left:
            covered[top:bottom, left:right] |= ring_pixels(ring, top, left, (bottom - top, right - left))
    return covered


def _pixel_size(pixels) -> tuple[float, float] | None:
    """The (y, x) pixel size in µm that an image's pixels record, or None."""
    size_x, size_y = pixels.physicalSizeX, pixels.physicalSizeY
    return (_micrometres(size_y), _micrometres(size_x)) if size_x is not None and size_y is not None else None


def _micrometres(length) -> float:
    """An omero.model Length in micrometres."""
    from omero.model.enums import UnitsLength
    from omero.model import LengthI

    return float(LengthI(length, UnitsLength.MICROMETER).getValue())
