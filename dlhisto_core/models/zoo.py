"""bioimage.io models from anyone: a package of the model zoo (spec 0.4 or 0.5), opened,
checked and ready to run window by window as its rdf.yaml declares (the engine that runs it over
images and slides: :mod:`dlhisto_core.dl.foreign`).

The package's TorchScript or ONNX weights run, or its ``pytorch_state_dict`` when the network
is one dlhisto builds itself (segmentation-models-pytorch's; a network in a file or another
library would mean running code the package names: refused); its axes (batch, channel, y, x; singleton z or t), the tile
sizes it accepts (fixed, or min + k * step), its halo, and its pre- and postprocessing are
honoured. Spec 0.4 descriptions are read through bioimageio.spec's own conversion to 0.5.

Nothing in the package is trusted: the zip's sizes are capped before anything is decompressed,
member names may not leave the package, the rdf is parsed by bioimageio.spec (safe YAML) with no
download, test tensors are read without pickle. On load the package's test input must give its
test output within the tolerance bioimageio.core's ``test_model`` applies.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from . import code_allowlist
from ..io import untrusted
from ..base.errors import InputError, one_line
from ..base.threads import cpu_threads

MAX_PACKAGE_BYTES = 4 * 2**30
MAX_TEST_ELEMENTS = 2**24
"""Largest test tensor of a package (16 M values: 64 MB of float32)."""
PREPROCESSING = {"binarize", "clip", "ensure_dtype", "fixed_zero_mean_unit_variance", "scale_linear", "scale_range",
                 "sigmoid", "softmax", "zero_mean_unit_variance"}
OUTPUT_STATISTICS = {"zero_mean_unit_variance", "scale_range", "scale_mean_variance"}
"""Postprocessing steps that need statistics of the whole output: from the first of them on, the
output is written once, measured, then processed tile by tile (see :func:`dlhisto_core.dl.foreign.predict_zoo`)."""
POSTPROCESSING = {"binarize", "clip", "ensure_dtype", "fixed_zero_mean_unit_variance", "scale_linear", "sigmoid",
                  "softmax"} | OUTPUT_STATISTICS
SMP_ARCHITECTURES = {"Unet", "UnetPlusPlus", "FPN"}
"""segmentation-models-pytorch networks whose state dicts dlhisto loads (it builds them itself)."""
SMP_KWARGS = {"encoder_name", "encoder_depth", "encoder_weights", "decoder_channels", "decoder_use_batchnorm",
              "decoder_use_norm", "decoder_attention_type", "in_channels", "classes", "activation"}
TOLERANCE = (1e-3, 1e-3, 100)
"""bioimageio.core's default reproducibility tolerance: relative, absolute, mismatched elements per million."""


@dataclass
class ZooModel:
    """A foreign package ready to run: its (0.5) description, the weights format it runs, and
    the network as a function of one array in the input's axis order."""

    name: str
    description: object
    weights_format: str
    network: "TorchNetwork | OnnxNetwork"
    """The network: called with an array of the input's axes, it runs on the CPU in float32."""
    input_axes: list[str]
    output_axes: list[str]
    window_sizes: dict[str, tuple[int, int]]
    """For y and x: (min, step) of the sizes the network takes (step 0: fixed)."""
    halo: dict[str, int]
    channel_names: list[str]
    padding: dict
    """How the input is extended beyond the image's border (``np.pad`` keywords; the package's
    ``pad``, symmetric by default as in bioimageio.core)."""
    window_postprocessing: list
    """The output's postprocessing applied window by window: up to the first step that needs
    statistics of the whole output (:data:`OUTPUT_STATISTICS`)."""
    whole_output_postprocessing: list
    """The rest, applied once the whole output is written and measured."""
    folder: tempfile.TemporaryDirectory = field(repr=False, default=None)
    files: "PackageFiles" = field(repr=False, default=None)

    @property
    def n_channels(self) -> int:
        """Channels the input takes."""
        for axis in self.description.inputs[0].axes:
            if axis.type == "channel":
                return len(axis.channel_names)
        return 1

    @property
    def pixel_size(self) -> float | None:
        """The input's pixel size (µm) when its y and x axes state one."""
        scales = {axis.scale for axis in self.description.inputs[0].axes
                  if axis.type == "space" and axis.id in ("y", "x") and getattr(axis, "unit", None) == "micrometer"}
        return float(scales.pop()) if len(scales) == 1 else None

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_foreign(path, name: str | None = None) -> bool:
    """True for a bioimage.io package that dlhisto did not make (no ``config.dlhisto``)."""
    name = name or Path(path).name
    with untrusted.open_zip(path, name, "a bioimage.io model package", MAX_PACKAGE_BYTES) as archive:
        if "rdf.yaml" not in archive.namelist():
            return False
        rdf = untrusted.load_yaml(untrusted.read_member(archive, "rdf.yaml", name, untrusted.MAX_TEXT_BYTES),
                                  name, "rdf.yaml")
    config = rdf.get("config") if isinstance(rdf, dict) else None
    return not (isinstance(config, dict) and isinstance(config.get("dlhisto"), dict))


def load_zoo_model(path, name: str | None = None, check: bool = True) -> ZooModel:
    """Open a bioimage.io package (any maker), refuse what dlhisto cannot honour in one line,
    and (``check``) reproduce its test output from its test input.

    Parameters
    ----------
    path : path
        The package (a zip with rdf.yaml, spec 0.4 or 0.5).
    name : str, optional
        Its name in messages (default: the file name).
    check : bool
        Run the package's test input and compare with its test output, as bioimageio.core's
        ``test_model`` does (tolerance :data:`TOLERANCE`).

    Returns
    -------
    ZooModel
        Close it (or use it as a context manager) to remove its unpacked files.

    Examples
    --------
    >>> from dlhisto_core import load_zoo_model, predict_zoo
    >>> with load_zoo_model("test-data/zoo/ts05_zmuv_halo.zip") as model:
    ...     summary = predict_zoo(model, "test-data/nuclei.tif", getfixture("tmp_path") / "out.tif", tile_size=128)
    >>> model.weights_format, model.halo, summary.windows
    ('torchscript', {'y': 8, 'x': 8}, 16)
    """
    name = name or Path(path).name
    folder = tempfile.TemporaryDirectory(prefix="dlhisto-zoo-")
    try:
        files = PackageFiles(path, name, Path(folder.name))
        description = _description(files.path("rdf.yaml"), name)
        model = _zoo_model(description, files, name)
        model.folder, model.files = folder, files
        if check:
            check_test_tensors(model)
        return model
    except BaseException:
        folder.cleanup()
        raise


class PackageFiles:
    """The files of a package that its rdf.yaml names, each taken out of the zip (name checked,
    size capped) the first time it is asked for: a member nothing names is never decompressed."""

    def __init__(self, package, name: str, folder: Path):
        self.package, self.name, self.folder = package, name, folder
        with untrusted.open_zip(package, name, "a bioimage.io model package", MAX_PACKAGE_BYTES) as archive:
            self.members = set(archive.namelist())
        if "rdf.yaml" not in self.members:
            raise InputError(f"'{name}' is not a bioimage.io model package (it has no rdf.yaml)")

    def path(self, source) -> Path:
        """The file ``source`` (a path in the package, as the rdf gives it), extracted."""
        text = str(getattr(source, "path", source))
        if "://" in text:
            raise InputError(f"'{self.name}' names a file outside the package ({one_line(text)[:100]}); dlhisto "
                             "downloads nothing")
        member = PurePosixPath(text).as_posix().removeprefix("./")
        target = (self.folder / member).resolve()
        if self.folder.resolve() not in target.parents or member not in self.members:
            raise InputError(f"'{self.name}' names a file it does not hold: '{one_line(text)[:100]}'")
        if not target.is_file():
            with untrusted.open_zip(self.package, self.name, "a bioimage.io model package", MAX_PACKAGE_BYTES) \
                    as archive:
                untrusted.extract_member(archive, member, self.name, self.folder, MAX_PACKAGE_BYTES)
        return target


def _description(rdf_path: Path, name: str):
    """The package's description as spec 0.5 (0.4 converted by bioimageio.spec), never downloading."""
    from bioimageio.spec import InvalidDescr, load_model_description

    untrusted.load_yaml(rdf_path.read_bytes(), name, "rdf.yaml")  # size, aliases: before bioimageio.spec parses it
    try:
        description = load_model_description(rdf_path, perform_io_checks=False, format_version="latest")
    except Exception as exc:
        raise InputError(f"'{name}' is not a valid bioimage.io model description ({one_line(exc, 200)})") from None
    if isinstance(description, InvalidDescr):
        errors = description.validation_summary.details[0].errors if description.validation_summary.details else []
        reason = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "invalid"
        raise InputError(f"'{name}' is not a valid bioimage.io model description ({one_line(reason, 200)})")
    return description


def _zoo_model(description, files: PackageFiles, name: str) -> ZooModel:
    if len(description.inputs) != 1:
        raise InputError(f"'{name}' takes {len(description.inputs)} input tensors; dlhisto runs models of one image")
    tensor_in, tensor_out = description.inputs[0], description.outputs[0]
    input_axes = _axes(tensor_in, name, "input")
    output_axes = _axes(tensor_out, name, "output")
    sizes, halo = {}, {}
    for axis in tensor_in.axes:
        if axis.type == "space" and axis.id in ("y", "x"):
            size = axis.size
            if isinstance(size, int):
                sizes[str(axis.id)] = (size, 0)
            elif hasattr(size, "min") and hasattr(size, "step"):
                sizes[str(axis.id)] = (int(size.min), int(size.step))
            else:
                raise InputError(f"'{name}': the input's {axis.id} size refers to another tensor; dlhisto runs "
                                 "models whose tile sizes are fixed or min + k * step")
    input_scales = {axis.id: getattr(axis, "scale", 1) for axis in tensor_in.axes}
    for axis in tensor_out.axes:
        if axis.type == "space" and axis.id in ("y", "x"):
            size = axis.size  # the output's size is the input's size x input scale / output scale + offset
            if not (hasattr(size, "tensor_id") and size.tensor_id == tensor_in.id and size.axis_id == axis.id
                    and not size.offset and getattr(axis, "scale", 1) == input_scales.get(axis.id)):
                raise InputError(f"'{name}': its output's {axis.id} axis is not the input's (same size and scale); "
                                 "dlhisto runs models whose output has the input's size")
            halo[str(axis.id)] = int(getattr(axis, "halo", 0) or 0)
    for where, steps, allowed in (("preprocessing", tensor_in.preprocessing, PREPROCESSING),
                                  ("postprocessing", tensor_out.postprocessing, POSTPROCESSING)):
        for step in steps:
            if step.id not in allowed:
                raise InputError(f"'{name}': its {where} step '{step.id}' is not supported by dlhisto")
            reference = getattr(step.kwargs, "reference_tensor", None) if hasattr(step, "kwargs") else None
            if reference is not None and reference not in (tensor_in.id, tensor_out.id):
                raise InputError(f"'{name}': its {where} step '{step.id}' refers to another tensor ({reference})")
    weights_format, network = _network(description, files, name)
    channels = next((list(map(str, a.channel_names)) for a in tensor_out.axes if a.type == "channel"), ["output"])
    pad = getattr(tensor_in, "pad", None)
    padding = {"mode": pad.mode if pad is not None else "symmetric"}
    if padding["mode"] == "constant":
        padding["constant_values"] = pad.value
    return ZooModel(name, description, weights_format, network, input_axes, output_axes, sizes, halo, channels,
                    padding, *split_at_output_statistics(tensor_out.postprocessing))


def _axes(tensor, name: str, which: str) -> list[str]:
    """The axis ids of a tensor, refusing axes an image cannot fill: space z and time of size 1
    (singletons) are accepted, as are batch and channel."""
    ids = []
    for axis in tensor.axes:
        kind, axis_id = axis.type, str(axis.id)
        if kind in ("batch", "channel") or (kind == "space" and axis_id in ("y", "x")):
            ids.append(axis_id if kind == "space" else kind)
        elif kind in ("space", "time") and getattr(axis, "size", None) == 1:
            ids.append(f"singleton {axis_id}")
        else:
            raise InputError(f"'{name}': its {which} axis '{axis_id}' ({kind}) cannot come from a 2D image; dlhisto "
                             "runs models of axes batch, channel, y, x (and z or t of size 1)")
    if "y" not in ids or "x" not in ids:
        raise InputError(f"'{name}': its {which} has no y and x axes")
    return ids


class TorchNetwork:
    """A foreign TorchScript module, or an smp network dlhisto built, on one device."""

    runs_on_cpu_only = False

    def __init__(self, module, name: str):
        self.module, self.name = module, name

    def to(self, device) -> None:
        self.module.to(device)

    def run(self, tensor):
        """The output tensor of an input tensor (in the input's axes), on the tensor's device."""
        import torch

        with torch.inference_mode(), _foreign_failure(self.name):
            result = self.module(tensor)
            return result[0] if isinstance(result, (tuple, list)) else result

    def __call__(self, array: np.ndarray) -> np.ndarray:
        import torch

        return self.run(torch.from_numpy(np.ascontiguousarray(array))).float().cpu().numpy()


class OnnxNetwork:
    """A foreign ONNX graph in ONNX Runtime, on the CPU."""

    runs_on_cpu_only = True

    def __init__(self, session, name: str):
        self.session, self.name = session, name
        self.input_name = session.get_inputs()[0].name

    def to(self, device) -> None:
        pass

    def run(self, tensor):
        import torch

        return torch.from_numpy(self(tensor.cpu().numpy())).to(tensor.device)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        with _foreign_failure(self.name):
            return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(array)})[0], np.float32)


def _network(description, files: PackageFiles, name: str) -> tuple[str, TorchNetwork | OnnxNetwork]:
    """The first weights format dlhisto runs (TorchScript, ONNX, then a state dict of a network it
    builds), as a function of an array."""
    weights = description.weights
    if weights.torchscript is not None:
        import torch
        data = _weights_bytes(weights.torchscript.source, files, name)
        code_allowlist.check_torchscript_archive(data, name)
        try:
            with warnings.catch_warnings():  # torch.jit.load's FutureWarning, on every package
                warnings.simplefilter("ignore")
                module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as exc:
            raise InputError(f"'{name}': its TorchScript weights cannot be read ({_cause(exc)})") from None
        code_allowlist.check_torchscript(module, name)
        return "torchscript", TorchNetwork(module, name)
    if weights.onnx is not None:
        import onnxruntime

        data = _weights_bytes(weights.onnx.source, files, name)
        code_allowlist.check_onnx(data, name)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads()  # 0: one per core
        onnxruntime.set_default_logger_severity(3)  # errors only: its warnings are coloured lines on stderr
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"'{name}': its ONNX weights cannot be read ({one_line(exc, 200)})") from None
        return "onnx", OnnxNetwork(session, name)
    if weights.pytorch_state_dict is not None:
        return "pytorch_state_dict", _state_dict_network(weights.pytorch_state_dict, files, name)
    formats = [f for f in ("keras_hdf5", "tensorflow_saved_model_bundle", "tensorflow_js")
               if getattr(weights, f, None) is not None]
    raise InputError(f"'{name}': its weights are {', '.join(formats) or 'none'}; dlhisto runs TorchScript, ONNX or "
                     "PyTorch state dict weights")


@contextlib.contextmanager
def _foreign_failure(name: str):
    """A foreign network that fails on a window (an operator's error, a file it may not open) is
    the package's fault: one line naming it."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        raise InputError(f"'{name}': the model failed on the image ({_cause(exc)})") from None


def _cause(exc: BaseException) -> str:
    """The line of an error that says what went wrong: TorchScript's errors end with it, after
    the code that raised it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(exc).__name__, 200)


def _state_dict_network(entry, files: PackageFiles, name: str) -> TorchNetwork:
    """A PyTorch state dict for a network dlhisto builds itself: one of segmentation-models-pytorch's
    (:data:`SMP_ARCHITECTURES`, keyword arguments of :data:`SMP_KWARGS` only, no pretrained download).
    Code the package names (a file, another library) never runs."""

    from .packages import load_fitting_state_dict, read_state_dict

    architecture = entry.architecture
    where = getattr(architecture, "import_from", None)
    if where != "segmentation_models_pytorch" or architecture.callable not in SMP_ARCHITECTURES:
        named = f"{where}.{architecture.callable}" if where else f"{architecture.callable} of a file in the package"
        raise InputError(f"'{name}': its PyTorch state dict is for {named}, which would mean running code the package "
                         f"names; dlhisto builds segmentation_models_pytorch's {', '.join(sorted(SMP_ARCHITECTURES))} "
                         "itself, or runs TorchScript or ONNX weights")
    kwargs = dict(architecture.kwargs)
    unknown = sorted(set(kwargs) - SMP_KWARGS)
    if unknown or kwargs.get("encoder_weights") is not None or kwargs.get("activation") is not None:
        what = f"arguments dlhisto does not pass ({', '.join(unknown)})" if unknown else \
            "pretrained encoder weights to download or an activation"
        raise InputError(f"'{name}': its architecture {architecture.callable} asks for {what}")
    import segmentation_models_pytorch as smp
    try:
        model = getattr(smp, architecture.callable)(**kwargs)
    except Exception as exc:
        raise InputError(f"'{name}': its architecture {architecture.callable}({kwargs}) cannot be built "
                         f"({one_line(exc, 200)})") from None
    data = _weights_bytes(entry.source, files, name)
    load_fitting_state_dict(model, read_state_dict(data, name), name)
    return TorchNetwork(model.eval(), name)


def _weights_bytes(source, files: PackageFiles, name: str) -> bytes:
    return untrusted.read_small_file(files.path(source), name, "the weights", MAX_PACKAGE_BYTES)


# ---- pre- and postprocessing: each step a function of (array, axes), statistics given ----

def measure(steps, array: np.ndarray, axes: list[str], others: dict | None = None) -> list[dict]:
    """The per-sample statistics each step needs, each taken on the array as the steps before it
    leave it (as the reference does). ``others`` maps the id of another tensor that
    scale_mean_variance refers to (the input, pre-processed, for an output) to (array, axes); a
    step that refers to none of them refers to the array itself."""
    stats = []
    for step in steps:
        kwargs, needed = getattr(step, "kwargs", None), {}
        if step.id in OUTPUT_STATISTICS:
            reduce = _reduced(kwargs.axes, axes)
            if step.id == "scale_range":
                needed = {"low": np.percentile(array, kwargs.min_percentile, axis=reduce, keepdims=True),
                          "high": np.percentile(array, kwargs.max_percentile, axis=reduce, keepdims=True)}
            else:
                needed = {"mean": array.mean(axis=reduce, keepdims=True), "std": array.std(axis=reduce, keepdims=True)}
            if step.id == "scale_mean_variance":
                ref, ref_axes = (others or {}).get(str(kwargs.reference_tensor), (array, axes))
                ref_reduce = _reduced(kwargs.axes, ref_axes)
                needed.update(ref_mean=_like(ref.mean(axis=ref_reduce, keepdims=True), ref_axes, axes),
                              ref_std=_like(ref.std(axis=ref_reduce, keepdims=True), ref_axes, axes))
        stats.append(needed)
        array = apply(step, array, axes, needed)
    return stats


def apply_all(steps, array: np.ndarray, axes: list[str], stats: list[dict]) -> np.ndarray:
    """:func:`apply` for each step in turn, with the statistics :func:`measure` took."""
    for step, step_stats in zip(steps, stats):
        array = apply(step, array, axes, step_stats)
    return array


def split_at_output_statistics(steps) -> tuple[list, list]:
    """Postprocessing as (steps applied window by window, steps from the first that needs
    statistics of the whole output on)."""
    steps = list(steps)
    first = next((i for i, step in enumerate(steps) if step.id in OUTPUT_STATISTICS), len(steps))
    return steps[:first], steps[first:]


def _like(values: np.ndarray, from_axes: list[str], to_axes: list[str]) -> np.ndarray:
    """Reduced statistics (keepdims) of one tensor's axes reshaped to broadcast on another's: one
    value for all, or one per entry of the axes the two share (e.g. per channel)."""
    if values.size == 1:
        return values.reshape(())
    shape = [values.shape[from_axes.index(a)] if a in from_axes else 1 for a in to_axes]
    if int(np.prod(shape)) != values.size:
        raise InputError(f"scale_mean_variance: the reference tensor's statistics (shape {values.shape}, axes "
                         f"{', '.join(from_axes)}) do not fit the output's axes ({', '.join(to_axes)})")
    return values.reshape(shape)


def apply(step, array: np.ndarray, axes: list[str], stats: dict) -> np.ndarray:
    """One pre- or postprocessing step on an array of the tensor's axes."""
    kwargs = getattr(step, "kwargs", None)
    if step.id == "ensure_dtype":
        return array.astype(str(kwargs.dtype))
    if step.id == "zero_mean_unit_variance":
        return (array - stats["mean"]) / (stats["std"] + kwargs.eps)
    if step.id == "scale_mean_variance":
        normalised = (array - stats["mean"]) / (stats["std"] + kwargs.eps)
        return normalised * (stats["ref_std"] + kwargs.eps) + stats["ref_mean"]
    if step.id == "scale_range":
        return (array - stats["low"]) / (stats["high"] - stats["low"] + kwargs.eps)
    if step.id == "fixed_zero_mean_unit_variance":
        mean, std = _along(kwargs.mean, kwargs, axes, array), _along(kwargs.std, kwargs, axes, array)
        return (array - mean) / (std + getattr(kwargs, "eps", 1e-6))
    if step.id == "scale_linear":
        return array * _along(kwargs.gain, kwargs, axes, array) + _along(kwargs.offset, kwargs, axes, array)
    if step.id == "clip":
        return np.clip(array, kwargs.min, kwargs.max)
    if step.id == "sigmoid":
        return 1 / (1 + np.exp(-array))
    if step.id == "softmax":
        axis = axes.index(str(kwargs.axis) if str(kwargs.axis) != "channel" else "channel")
        shifted = np.exp(array - array.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)
    if step.id == "binarize":
        return (array > _along(kwargs.threshold, kwargs, axes, array)).astype(array.dtype)
    raise InputError(f"the processing step '{step.id}' is not supported by dlhisto")  # refused on load already


def _reduced(reduce_axes, axes: list[str]) -> tuple[int, ...]:
    """Positions of the axes statistics are taken over (None: all)."""
    if reduce_axes is None:
        return tuple(range(len(axes)))
    names = {str(a) for a in reduce_axes}
    return tuple(i for i, a in enumerate(axes) if a in names or a.replace("singleton ", "") in names)


def _along(value, kwargs, axes: list[str], array: np.ndarray):
    """A scalar, or one value per entry of the kwargs' ``axis``, shaped to broadcast on ``array``."""
    values = np.asarray(value, np.float32)
    if values.ndim == 0:
        return values
    axis = str(getattr(kwargs, "axis", "channel") or "channel")
    shape = [1] * array.ndim
    shape[axes.index(axis if axis in axes else "channel")] = values.size
    return values.reshape(shape)


# ---- running the network on a sample ----

def to_tensor(image: np.ndarray, axes: list[str]) -> np.ndarray:
    """(Y, X[, C]) pixels as a float32 array of the input's axes."""
    if image.ndim == 2:
        image = image[..., None]
    layout = {"y": 0, "x": 1, "channel": 2}
    array = np.transpose(image, [layout[a] for a in axes if a in layout]).astype(np.float32)
    for position, axis in enumerate(axes):
        if axis not in layout:  # batch and singletons
            array = np.expand_dims(array, position)
    return array


def from_tensor(array: np.ndarray, axes: list[str]) -> np.ndarray:
    """An output array of ``axes`` as (Y, X, C) float32."""
    keep = [a for a in axes if a in ("y", "x", "channel")]
    squeezed = array.reshape([n for n, a in zip(array.shape, axes) if a in keep])
    if "channel" not in keep:
        squeezed = squeezed[..., None]
        keep = keep + ["channel"]
    return np.transpose(squeezed, [keep.index(a) for a in ("y", "x", "channel")]).astype(np.float32)


def run_sample(model: ZooModel, tensor: np.ndarray) -> np.ndarray:
    """One whole input tensor as the reference's ``test_model`` runs it: pre-processed with its
    own statistics, run and post-processed (with the output's own statistics where a step needs
    them), neither extended nor cropped by the halo."""
    pre = model.description.inputs[0].preprocessing
    processed = apply_all(pre, tensor, model.input_axes, measure(pre, tensor, model.input_axes))
    output = run_processed(model, processed, None)
    tail = model.whole_output_postprocessing
    others = {str(model.description.inputs[0].id): (processed, model.input_axes)}
    return apply_all(tail, output, model.output_axes, measure(tail, output, model.output_axes, others))


def run_processed(model: ZooModel, tensor: np.ndarray, stats: list[dict] | None) -> np.ndarray:
    """Pre-process ``tensor`` with the statistics :func:`measure` took (None: it is pre-processed
    already), run the network and post-process its output up to the first step that needs
    statistics of the whole output."""
    if stats is not None:
        tensor = apply_all(model.description.inputs[0].preprocessing, tensor, model.input_axes, stats)
    output = model.network(tensor.astype(np.float32, copy=False))
    head = model.window_postprocessing
    return apply_all(head, output, model.output_axes, [{}] * len(head))


def check_test_tensors(model: ZooModel) -> None:
    """Refuse a package whose test input does not give its test output (bioimageio.core's tolerance)."""
    description = model.description
    test_in = _npy(description.inputs[0].test_tensor.source, model, description.inputs[0])
    expected = _npy(description.outputs[0].test_tensor.source, model, description.outputs[0])
    try:
        got = run_sample(model, test_in.astype(np.float32))
    except Exception as exc:
        raise InputError(f"'{model.name}': its test input does not run ({one_line(exc, 200)})") from None
    rtol, atol, ppm = TOLERANCE
    if got.shape != expected.shape:
        raise InputError(f"'{model.name}': its test input gives an output of shape {got.shape}, its test output is "
                         f"{expected.shape}")
    mismatched = np.abs(got - expected) > atol + rtol * np.abs(expected)
    if mismatched.sum() / mismatched.size * 1e6 > ppm:
        raise InputError(f"'{model.name}': its test output is not reproduced ({mismatched.sum()} of {mismatched.size} "
                         f"values differ by more than {atol:g} + {rtol:g} x the value)")


def _npy(source, model: ZooModel, tensor) -> np.ndarray:
    """A test tensor, its shape checked against the tensor's axes before its data are read."""
    path = model.files.path(source)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(fh)
            _check_test_shape(shape, tensor, model)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"'{model.name}': '{path.name}' is not a plain numpy array ({one_line(exc, 200)})") from None


def _check_test_shape(shape: tuple, tensor, model: ZooModel) -> None:
    """Refuse a test tensor whose shape its axes do not allow (one value per axis; the channels
    named; a batch of 1; fixed sizes kept), or larger than :data:`MAX_TEST_ELEMENTS`."""
    axes = list(tensor.axes)
    problem = None
    if len(shape) != len(axes):
        problem = f"{len(shape)} axes, its description {len(axes)}"
    elif math.prod(shape) > MAX_TEST_ELEMENTS:
        problem = f"{math.prod(shape):,} values; at most {MAX_TEST_ELEMENTS:,} are accepted"
    else:
        for size, axis in zip(shape, axes):
            fixed = getattr(axis, "size", None)
            expected = (len(axis.channel_names) if axis.type == "channel" else 1 if axis.type == "batch"
                        else fixed if isinstance(fixed, int) else None)
            if expected is not None and size != expected:
                problem = f"{size} along {axis.id} ({axis.type}), its description {expected}"
                break
    if problem:
        raise InputError(f"'{model.name}': its test tensor '{tensor.id}' has {problem}")
