"""An OMERO test server: the real Ice 3.6 protocol on 127.0.0.1, real omero.model objects, and
only the OMERO operations dlhisto calls (see tests/README.md for its scope and limits).

No OMERO.server can be installed on the CI machines, so the tests run omero-py's real client
code against this server instead. Every operation it does not implement fails at once with
omero.ApiUsageException, so a new call in dlhisto shows up as a failing test, never as a hang.
"""

from __future__ import annotations

import threading
import uuid

import Glacier2
import Ice
import numpy as np
import omero
import omero.api
import omero.model
from omero.model import (ImageAnnotationLinkI, ImageI, LengthI, PixelsI, PixelsTypeI, RoiI)
from omero.model.enums import UnitsLength
from omero.rtypes import rint, rlong, rstring

PIXELS_TYPES = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float32): "float"}
QUERY_IMAGE = "select i from Image i join fetch i.pixels p join fetch p.pixelsType where i.id = :id"
QUERY_DATASET = "select l from DatasetImageLink l where l.parent.id = :id order by l.child.id"
QUERY_ANNOTATIONS = "select l from ImageAnnotationLink l join fetch l.child where l.parent.id = :id"


class _Strict:
    """Every operation of the generated skeleton that a subclass does not define raises
    omero.ApiUsageException at once (the skeletons' no-op would leave AMD calls waiting)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = {name for klass in cls.__mro__ if klass.__module__ == __name__ for name in vars(klass)}
        for klass in cls.__mro__:
            if klass.__module__ != __name__ and klass not in (object, Ice.Object):
                for name, member in vars(klass).items():
                    if callable(member) and not name.startswith(("_", "ice_")) and name not in own:
                        setattr(cls, name, _Strict._refuse(name))

    @staticmethod
    def _refuse(name):
        def refuse(self, *args, **kwargs):
            error = omero.ApiUsageException(message=f"OMERO test server: {name} is not implemented")
            if name.endswith("_async"):
                args[0].ice_exception(error)
            else:
                raise error
        return refuse


class Store:
    """What the server holds: images with pixels, ROIs, annotations, files; and a log of calls."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 1000
        self.images, self.rois, self.annotations, self.files = {}, {}, {}, {}
        self.links, self.dataset_links = [], []
        self.calls: list[str] = []

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def add_image(self, pixels: np.ndarray, name: str, pixel_size_um: float | None = None,
                  dataset_id: int | None = None, image_id: int | None = None) -> int:
        image_id = image_id or self.new_id()
        self.images[image_id] = {"name": name, "pixels": pixels if pixels.ndim == 3 else pixels[..., None],
                                 "pixels_id": self.new_id(), "pixel_size": pixel_size_um}
        self.rois[image_id] = []
        if dataset_id is not None:
            link = omero.model.DatasetImageLinkI(self.new_id(), True)
            link.setParent(omero.model.DatasetI(dataset_id, False))
            link.setChild(ImageI(image_id, False))
            self.dataset_links.append(link)
        return image_id

    def image_object(self, image_id: int):
        record = self.images[image_id]
        data = record["pixels"]
        image = ImageI(image_id, True)
        image.setName(rstring(record["name"]))
        pixels = PixelsI(record["pixels_id"], True)
        pixels.setSizeX(rint(data.shape[1]))
        pixels.setSizeY(rint(data.shape[0]))
        pixels.setSizeC(rint(data.shape[2]))
        pixels.setSizeZ(rint(1))
        pixels.setSizeT(rint(1))
        kind = PixelsTypeI()
        kind.setValue(rstring(PIXELS_TYPES[data.dtype]))
        pixels.setPixelsType(kind)
        if record["pixel_size"]:
            pixels.setPhysicalSizeX(LengthI(record["pixel_size"], UnitsLength.MICROMETER))
            pixels.setPhysicalSizeY(LengthI(record["pixel_size"], UnitsLength.MICROMETER))
        image.addPixels(pixels)
        return image

    def image_of_pixels(self, pixels_id: int) -> dict:
        return next(r for r in self.images.values() if r["pixels_id"] == pixels_id)


def _log(store: Store, name: str) -> None:
    with store.lock:
        store.calls.append(name)


class Query(_Strict, omero.api.IQuery):
    def __init__(self, store: Store):
        self.store = store

    def findByQuery_async(self, cb, query, params, current=None):
        _log(self.store, "IQuery.findByQuery")
        if query != QUERY_IMAGE:
            cb.ice_exception(omero.ApiUsageException(message=f"OMERO test server: unknown query {query!r}"))
            return
        image_id = params.map["id"].val
        cb.ice_response(self.store.image_object(image_id) if image_id in self.store.images else None)

    def findAllByQuery_async(self, cb, query, params, current=None):
        _log(self.store, "IQuery.findAllByQuery")
        parent = params.map["id"].val
        if query == QUERY_DATASET:
            cb.ice_response([link for link in self.store.dataset_links if link.parent.id.val == parent])
        elif query == QUERY_ANNOTATIONS:
            cb.ice_response([link for link in self.store.links if link.parent.id.val == parent])
        else:
            cb.ice_exception(omero.ApiUsageException(message=f"OMERO test server: unknown query {query!r}"))


class Update(_Strict, omero.api.IUpdate):
    def __init__(self, store: Store):
        self.store = store

    def saveAndReturnArray_async(self, cb, objects, current=None):
        _log(self.store, "IUpdate.saveAndReturnArray")
        try:
            cb.ice_response([self._save(o) for o in objects])
        except omero.ServerError as error:
            cb.ice_exception(error)

    def saveAndReturnObject_async(self, cb, obj, current=None):
        _log(self.store, "IUpdate.saveAndReturnObject")
        try:
            cb.ice_response(self._save(obj))
        except omero.ServerError as error:
            cb.ice_exception(error)

    def _save(self, obj):
        if isinstance(obj, (RoiI, ImageAnnotationLinkI)):
            image_id = (obj.image if isinstance(obj, RoiI) else obj.parent).id.val
            if image_id not in self.store.images:
                raise omero.ValidationException(message=f"no image {image_id}")
        obj.setId(rlong(self.store.new_id()))
        if isinstance(obj, RoiI):
            for shape in obj.copyShapes():
                shape.setId(rlong(self.store.new_id()))
            self.store.rois[obj.image.id.val].append(obj)
        elif isinstance(obj, ImageAnnotationLinkI):
            obj.setChild(self.store.annotations[obj.child.id.val])
            self.store.links.append(obj)
        elif isinstance(obj, omero.model.OriginalFileI):
            self.store.files[obj.id.val] = {"file": obj, "content": b""}
        else:
            self.store.annotations[obj.id.val] = obj
        return obj


class Roi(_Strict, omero.api.IRoi):
    def __init__(self, store: Store):
        self.store = store

    def findByImage_async(self, cb, image_id, options, current=None):
        _log(self.store, "IRoi.findByImage")
        result = omero.api.RoiResult()
        result.rois = list(self.store.rois.get(image_id, []))
        cb.ice_response(result)


class RawPixelsStore(_Strict, omero.api.RawPixelsStore):
    def __init__(self, store: Store):
        self.store, self.record = store, None

    def setPixelsId_async(self, cb, pixels_id, bypass, current=None):
        _log(self.store, "RawPixelsStore.setPixelsId")
        try:
            self.record = self.store.image_of_pixels(pixels_id)
        except StopIteration:
            cb.ice_exception(omero.ValidationException(message=f"no pixels {pixels_id}"))
            return
        cb.ice_response()

    def getTile_async(self, cb, z, c, t, x, y, w, h, current=None):
        _log(self.store, "RawPixelsStore.getTile")
        tile = self.record["pixels"][y:y + h, x:x + w, c]
        cb.ice_response(np.ascontiguousarray(tile).astype(tile.dtype.newbyteorder(">")).tobytes())

    def close_async(self, cb, current=None):
        _log(self.store, "RawPixelsStore.close")
        cb.ice_response()


class RawFileStore(_Strict, omero.api.RawFileStore):
    def __init__(self, store: Store):
        self.store, self.file_id = store, None

    def setFileId_async(self, cb, file_id, current=None):
        _log(self.store, "RawFileStore.setFileId")
        self.file_id = file_id
        cb.ice_response()

    def write_async(self, cb, buffer, position, length, current=None):
        _log(self.store, "RawFileStore.write")
        content = bytearray(self.store.files[self.file_id]["content"])
        content[position:position + length] = buffer[:length]
        self.store.files[self.file_id]["content"] = bytes(content)
        cb.ice_response()

    def save_async(self, cb, current=None):
        _log(self.store, "RawFileStore.save")
        cb.ice_response(self.store.files[self.file_id]["file"])

    def close_async(self, cb, current=None):
        _log(self.store, "RawFileStore.close")
        cb.ice_response()


class ServiceFactory(_Strict, omero.api.ServiceFactory):
    def __init__(self, adapter, store: Store):
        self.adapter, self.store = adapter, store
        self.query = self._add(Query(store), omero.api.IQueryPrx)
        self.update = self._add(Update(store), omero.api.IUpdatePrx)
        self.roi = self._add(Roi(store), omero.api.IRoiPrx)

    def _add(self, servant, proxy_class):
        return proxy_class.uncheckedCast(self.adapter.add(servant, Ice.stringToIdentity(f"service/{uuid.uuid4()}")))

    def getQueryService(self, current=None):
        return self.query

    def getUpdateService(self, current=None):
        return self.update

    def getRoiService(self, current=None):
        return self.roi

    def createRawPixelsStore(self, current=None):
        return self._add(RawPixelsStore(self.store), omero.api.RawPixelsStorePrx)

    def createRawFileStore(self, current=None):
        return self._add(RawFileStore(self.store), omero.api.RawFileStorePrx)

    def setCallback(self, callback, current=None):
        pass

    def keepAlive(self, proxy, current=None):
        return True

    def keepAllAlive(self, proxies, current=None):
        return 0

    def destroy(self, current=None):
        pass


class Router(_Strict, Glacier2.Router):
    """Glacier2: logs in (user + password, or a session key as both) and hosts the services."""

    def __init__(self, adapter, store: Store, users: dict):
        self.adapter, self.store, self.users, self.sessions = adapter, store, users, {}

    def getClientProxy(self, current=None):  # routed calls go straight to this adapter, which hosts everything
        return self.adapter.createProxy(Ice.stringToIdentity("routed"))

    def getServerProxy(self, current=None):
        return self.adapter.createProxy(Ice.stringToIdentity("routed"))

    def addProxies(self, proxies, current=None):
        return []

    def getCategoryForClient(self, current=None):
        return "callback"

    def getSessionTimeout(self, current=None):
        return 600

    def getACMTimeout(self, current=None):
        return 600

    def refreshSession_async(self, cb, current=None):
        cb.ice_response()

    def destroySession(self, current=None):
        _log(self.store, "Glacier2.Router.destroySession")

    def createSession_async(self, cb, user, password, current=None):
        _log(self.store, "Glacier2.Router.createSession")
        if user in self.sessions and password == user:  # omero.client.joinSession(key)
            cb.ice_response(self.sessions[user])
            return
        if self.users.get(user) != password:
            cb.ice_exception(Glacier2.PermissionDeniedException("wrong user name or password"))
            return
        key = str(uuid.uuid4())
        identity = Ice.Identity(key, "session")
        self.adapter.add(ServiceFactory(self.adapter, self.store), identity)
        self.sessions[key] = Glacier2.SessionPrx.uncheckedCast(self.adapter.createProxy(identity))
        cb.ice_response(self.sessions[key])


class OmeroTestServer:
    """``with OmeroTestServer(users={"alice": "secret"}) as server:`` then connect to
    ``tcp://127.0.0.1`` on ``server.port``; ``server.store`` holds the data."""

    def __init__(self, users: dict, port: int = 0):
        self.users, self.store, self.requested_port = users, Store(), port

    def __enter__(self) -> "OmeroTestServer":
        from omero import ObjectFactoryRegistrar

        self.communicator = Ice.initialize(["--Ice.Warn.Connections=0", "--Ice.Warn.Dispatch=0",
                                            "--Ice.MessageSizeMax=65536"])  # as OMERO: 64 MB messages
        ObjectFactoryRegistrar.registerObjectFactory(self.communicator, None)  # omero.model.*I
        for factory in omero.rtypes.ObjectFactories.values():  # omero.RString, RList, ...
            factory.register(self.communicator)
        self.adapter = self.communicator.createObjectAdapterWithEndpoints("OmeroTestServer", f"tcp -h 127.0.0.1 -p {self.requested_port}")
        self.router = Router(self.adapter, self.store, self.users)
        self.adapter.add(self.router, Ice.Identity("router", "OMERO.Glacier2"))
        self.adapter.activate()
        self.port = self.adapter.getEndpoints()[0].getInfo().port
        return self

    def session_key(self, user: str) -> str:
        """Open a session as if the user had logged in elsewhere; its key."""
        key = str(uuid.uuid4())
        identity = Ice.Identity(key, "session")
        self.adapter.add(ServiceFactory(self.adapter, self.store), identity)
        self.router.sessions[key] = Glacier2.SessionPrx.uncheckedCast(self.adapter.createProxy(identity))
        return key

    def __exit__(self, *exc) -> None:
        self.communicator.destroy()


def seed_nuclei(store: Store, test_data) -> None:
    """Image 1: the DSB2018 nuclei image (pixel size 0.65 um, dataset 7) with its 125
    human-annotated nuclei as mask ROIs and a tag. Image 2: the same pixels, nothing on them
    (for the tests that push). Dataset 8: images 3 and 4, the quadrants nuclei_q3 and nuclei_q4
    without ROIs (for the workflow that fetches, predicts and pushes)."""
    import tifffile
    from skimage.measure import regionprops

    from dlhisto_core.share.omero import mask_shape

    pixels = tifffile.imread(f"{test_data}/nuclei.tif")
    image_id = store.add_image(pixels, "nuclei.tif", 0.65, dataset_id=7, image_id=1)
    store.add_image(pixels, "nuclei (copy).tif", 0.65, image_id=2)
    for quadrant_id, quadrant in ((3, "nuclei_q3.tif"), (4, "nuclei_q4.tif")):
        store.add_image(tifffile.imread(f"{test_data}/{quadrant}"), quadrant, 0.65, dataset_id=8, image_id=quadrant_id)
    for region in regionprops(tifffile.imread(f"{test_data}/nuclei_groundtruth.tif")):
        roi = RoiI(rlong(store.new_id()), True)
        roi.setImage(ImageI(image_id, False))
        roi.setName(rstring(f"nucleus {region.label}"))
        roi.addShape(mask_shape(region))
        store.rois[image_id].append(roi)
    tag = omero.model.TagAnnotationI(rlong(store.new_id()), True)
    tag.setTextValue(rstring("annotated"))
    link = ImageAnnotationLinkI(rlong(store.new_id()), True)
    link.setParent(ImageI(image_id, False))
    link.setChild(tag)
    store.links.append(link)


if __name__ == "__main__":  # the server of the Galaxy tool tests (scripts/test)
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True, help="user:password")
    parser.add_argument("--test-data", required=True, help="folder of nuclei.tif and nuclei_groundtruth.tif")
    options = parser.parse_args()
    user, _, password = options.user.partition(":")
    with OmeroTestServer(users={user: password}, port=options.port) as server:
        seed_nuclei(server.store, options.test_data)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        print(f"OMERO test server on tcp://127.0.0.1:{server.port}: images 1 to 4", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
