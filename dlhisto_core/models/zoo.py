"""bioimage.io models from anyone: a package of the model zoo (spec 0.4 or 0.5), run tile by
tile on images and slides as its rdf.yaml declares.

The package's TorchScript or ONNX weights run, or its ``pytorch_state_dict`` when the network
is one dlhisto builds itself (segmentation-models-pytorch's; a network in a file or another
library would mean running code the package names: refused); its axes (batch, channel, y, x; singleton z or t), the tile
sizes it accepts (fixed, or min + k * step), its halo, and its pre- and postprocessing are
honoured. Spec 0.4 descriptions are read through bioimageio.spec's own conversion to 0.5.

Nothing in the package is trusted: the zip's sizes are capped before anything is decompressed,
member names may not leave the package, the rdf is parsed by bioimageio.spec (safe YAML) with no
download, test tensors are read without pickle. On load the package's test input must give its
test output within the tolerance bioimageio.core's ``test_model`` applies.

Per-sample statistics (mean and spread, percentiles) are taken from the whole image as the
reference does; for images above :data:`MAX_STATS_PIXELS` from the slide's overview.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from . import code_allowlist
from ..io import untrusted
from ..base.errors import InputError, one_line
from ..io.slides import image_reader
from ..io.writers import write_tiled_image
from ..io.outputs import outputs_together
from ..io.tables import write_row
from ..base.threads import cpu_threads

MAX_PACKAGE_BYTES = 4 * 2**30
MAX_TEST_ELEMENTS = 2**24
"""Largest test tensor of a package (16 M values: 64 MB of float32)."""
MAX_STATS_PIXELS = 64 * 2**20
"""Images up to this many pixels give their statistics from every pixel; larger ones from their overview."""
PREPROCESSING = {"binarize", "clip", "ensure_dtype", "fixed_zero_mean_unit_variance", "scale_linear", "scale_range",
                 "sigmoid", "softmax", "zero_mean_unit_variance"}
OUTPUT_STATISTICS = {"zero_mean_unit_variance", "scale_range", "scale_mean_variance"}
"""Postprocessing steps that need statistics of the whole output: from the first of them on, the
output is written once, measured, then processed tile by tile (see :func:`predict_zoo`)."""
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
    network: Callable[[np.ndarray], np.ndarray]
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


def _network(description, files: PackageFiles, name: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
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

        def run_torchscript(array: np.ndarray) -> np.ndarray:
            with torch.no_grad(), _foreign_failure(name):
                result = module(torch.from_numpy(np.ascontiguousarray(array)))
                result = result[0] if isinstance(result, (tuple, list)) else result
                return result.float().numpy()
        return "torchscript", run_torchscript
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
        input_name = session.get_inputs()[0].name

        def run_onnx(array: np.ndarray) -> np.ndarray:
            with _foreign_failure(name):
                return np.asarray(session.run(None, {input_name: np.ascontiguousarray(array)})[0], np.float32)
        return "onnx", run_onnx
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


def _state_dict_network(entry, files: PackageFiles, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A PyTorch state dict for a network dlhisto builds itself: one of segmentation-models-pytorch's
    (:data:`SMP_ARCHITECTURES`, keyword arguments of :data:`SMP_KWARGS` only, no pretrained download).
    Code the package names (a file, another library) never runs."""
    import torch

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
    model.eval()

    def run_state_dict(array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(array))).float().numpy()
    return run_state_dict


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


# ---- running the network on an image ----

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


def window_size(min_size: int, step: int, wanted: int) -> int:
    """The smallest size the network takes that is at least ``wanted`` (or its fixed size)."""
    if step == 0 or wanted <= min_size:
        return min_size
    return min_size + step * math.ceil((wanted - min_size) / step)


@dataclass
class ZooSummary:
    """What a foreign model's prediction produced (one row of the summary table)."""

    model: str
    shape: tuple[int, int]
    windows: int
    channel_names: list[str]
    channel_means: list[float]

    def row(self, image_name: str) -> dict:
        return {"image": image_name, "model": self.model, "height": self.shape[0], "width": self.shape[1],
                "windows": self.windows, **{f"mean_{n}": m for n, m in zip(self.channel_names, self.channel_means)}}

    def describe(self) -> str:
        means = ", ".join(f"{n} {m:.4g}" for n, m in zip(self.channel_names, self.channel_means))
        return f"{self.shape[1]} x {self.shape[0]} px in {self.windows} windows; mean output: {means}"


def predict_zoo(model: ZooModel, image, output_path=None, classes_path=None, summary_path=None,
                tile_size: int = 512, pixel_size: float | None = None, image_name: str | None = None) -> ZooSummary:
    """Run a foreign model over an image or slide window by window, and write its output (float32
    OME-TIFF, channels last), its class map (the most probable channel, 0..C-1; a single channel
    thresholded at 0.5) and a one-row summary, together or not at all.

    Windows have a size the network takes (at least ``tile_size`` where it can choose); each
    output tile keeps the window's centre, ``halo`` pixels away from the window's sides except at
    the image's border, so that no tile is cut where the network lacks context.
    """
    with outputs_together(output_path, classes_path, summary_path) as (output, classes, summary_file), \
            tempfile.TemporaryDirectory(prefix="dlhisto-zoo-") as work, \
            image_reader(image, name=image_name, pixel_size=pixel_size) as reader:
        height, width = reader.shape[:2]
        channels = 1 if len(reader.shape) == 2 else reader.shape[2]
        if channels != model.n_channels:
            raise InputError(f"'{model.name}' takes {model.n_channels}-channel images; '{reader.name}' has {channels}")
        pre = model.description.inputs[0].preprocessing
        stats_input = to_tensor(_stats_image(reader, model), model.input_axes)
        stats = measure(pre, stats_input, model.input_axes)
        windows = {axis: window_size(*model.window_sizes[axis], tile_size + 2 * model.halo[axis]) for axis in ("y", "x")}
        tile = {axis: max(16, (windows[axis] - 2 * model.halo[axis]) // 16 * 16) for axis in ("y", "x")}
        if tile["y"] != tile["x"]:
            tile["y"] = tile["x"] = min(tile.values())
        step = tile["y"]
        means = _ChannelMeans(len(model.channel_names))
        tail = model.whole_output_postprocessing

        def window_tiles():
            for y in range(0, height, step):
                for x in range(0, width, step):
                    th, tw = min(step, height - y), min(step, width - x)
                    yield _window_output(model, reader, stats, (y, x, th, tw), windows, (height, width))
        n_windows = math.ceil(height / step) * math.ceil(width / step)
        out_shape = (height, width, len(model.channel_names)) if len(model.channel_names) > 1 else (height, width)
        target = output or Path(work) / "output.ome.tif"  # the class map is made from it
        if tail:  # the output before those steps, measured, then processed tile by tile
            first = Path(work) / "before_statistics.ome.tif"
            write_tiled_image(first, map(_squeezed, window_tiles()), out_shape, np.float32, step, reader.pixel_size)
            reference = {str(model.description.inputs[0].id): (apply_all(pre, stats_input, model.input_axes, stats),
                                                               model.input_axes)}
            tiles = _processed_tiles(first, tail, reference, out_shape, step)
        else:
            tiles = window_tiles()
        write_tiled_image(target, (_squeezed(means.add(t)) for t in tiles), out_shape, np.float32, step,
                          reader.pixel_size)
        if classes:
            _write_classes(target, classes, out_shape, step, reader.pixel_size)
        result = ZooSummary(model.name, (height, width), n_windows, model.channel_names, means.means())
        if summary_file:
            write_row(summary_file, result.row(image_name or reader.name))
        return result


class _ChannelMeans:
    """The mean of each channel over the tiles of an output, (Y, X, C) tile by tile."""

    def __init__(self, channels: int):
        self.sums, self.count = np.zeros(channels), 0

    def add(self, tile: np.ndarray) -> np.ndarray:
        self.sums += tile.reshape(-1, tile.shape[-1]).sum(axis=0)
        self.count += tile.shape[0] * tile.shape[1]
        return tile

    def means(self) -> list[float]:
        return list(self.sums / max(self.count, 1))


def _squeezed(tile: np.ndarray) -> np.ndarray:
    """A (Y, X, C) tile as written: (Y, X) for one channel."""
    return tile if tile.shape[-1] > 1 else tile[..., 0]


def _with_channels(values: np.ndarray) -> np.ndarray:
    """(Y, X) or (Y, X, C) pixels as (Y, X, C)."""
    return values[..., None] if values.ndim == 2 else values


def _stored_tiles(output, shape, tile_size: int):
    """The tiles of an open output (:class:`TiledImageReader`), (Y, X, C), in the order written."""
    for y in range(0, shape[0], tile_size):
        for x in range(0, shape[1], tile_size):
            yield _with_channels(output.read_region(y, x, tile_size, tile_size))


def _processed_tiles(first: Path, steps, reference, shape, tile_size: int):
    """The tiles of the output written to ``first`` with the postprocessing ``steps`` applied, their
    statistics taken on the whole output (its overview beyond :data:`MAX_STATS_PIXELS`)."""
    from ..io.readers import TiledImageReader

    axes = ["y", "x", "channel"]
    with TiledImageReader(first) as output:
        whole = output.overview()[0] if shape[0] * shape[1] > MAX_STATS_PIXELS else output.read_region(
            0, 0, shape[0], shape[1])
        stats = measure(steps, _with_channels(whole), axes, reference)
        del whole
        for tile in _stored_tiles(output, shape, tile_size):
            yield apply_all(steps, tile, axes, stats)


def _stats_image(reader, model: ZooModel) -> np.ndarray:
    """The pixels per-sample statistics come from, as the reference takes them: the whole image
    extended by the halo as the package pads it; for a large slide, its overview."""
    height, width = reader.shape[:2]
    if height * width > MAX_STATS_PIXELS:
        return reader.overview()[0]
    return _padded_region(reader, -model.halo["y"], -model.halo["x"], height + 2 * model.halo["y"],
                          width + 2 * model.halo["x"], model.padding)


def _padded_region(reader, top: int, left: int, height: int, width: int, padding: dict) -> np.ndarray:
    """Pixels [top:top+height, left:left+width] of the image, extended beyond its borders as the
    package pads its input (``np.pad`` keywords)."""
    image_height, image_width = reader.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image_height), min(left + width, image_width)
    pixels = reader.read_region(y0, x0, y1 - y0, x1 - x0)
    widths = [(y0 - top, top + height - y1), (x0 - left, left + width - x1)]
    if any(a or b for a, b in widths):
        pixels = np.pad(pixels, widths + [(0, 0)] * (pixels.ndim - 2), **padding)
    return pixels


def _window_output(model: ZooModel, reader, stats, box, windows, shape) -> np.ndarray:
    """The output for the tile ``box`` (y, x, h, w), from a window of the network's size holding
    the tile and its halo: inside the image extended by the halo (as the reference extends it)
    wherever the window fits there, further extended where the image is smaller."""
    (y, x, th, tw), (height, width) = box, shape
    (wy, wx), (hy, hx) = (windows["y"], windows["x"]), (model.halo["y"], model.halo["x"])
    top = max(min(y - hy, height + hy - wy), -hy)
    left = max(min(x - hx, width + hx - wx), -hx)
    tensor = to_tensor(_padded_region(reader, top, left, wy, wx, model.padding), model.input_axes)
    output = from_tensor(run_processed(model, tensor, stats), model.output_axes)
    return output[y - top:y - top + th, x - left:x - left + tw]


def _write_classes(output_path, classes_path, shape, tile_size: int, pixel_size) -> None:
    """The class map of a written output: the most probable channel, or one channel >= 0.5."""
    from ..io.readers import TiledImageReader

    def classes_of(values: np.ndarray) -> np.ndarray:
        return (values[..., 0] >= 0.5 if values.shape[-1] == 1 else values.argmax(axis=-1)).astype(np.uint8)

    with TiledImageReader(output_path) as output:
        write_tiled_image(classes_path, map(classes_of, _stored_tiles(output, shape, tile_size)), shape[:2], np.uint8,
                          tile_size, pixel_size)
