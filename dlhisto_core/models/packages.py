"""Models as bioimage.io model packages (spec 0.5): the reusable model base of dlhisto.

A package is a zip holding ``rdf.yaml``, the weights as a PyTorch state dict (architecture from
segmentation-models-pytorch, named in the rdf), as TorchScript and as ONNX (for deepImageJ, Fiji
and other ONNX runtimes), a test input and its expected
output, the preprocessing (percentile normalisation) and postprocessing (softmax) as bioimage.io
operations, and dlhisto's own model description under ``config.dlhisto``. Every package is
validated with ``bioimageio.spec`` before it is written.

Loading trusts nothing in the file: the rdf is parsed as plain YAML, the architecture must be
one of the few dlhisto builds, and weights are read with ``torch.load(weights_only=True)`` (or
safetensors), so no code from the package ever runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import __version__
from ..io import untrusted
from ..io.metadata import check_metadata
from . import cards, schemas
from ..imaging.intensity import EPS, NORMALIZATION, stretch
from .networks import build_model
from ..base.errors import InputError, one_line
from .spec import InstanceThresholds
from .spec import ModelSpec
from ..io.outputs import atomic_output
from .cards import EVALUATION_HEADING, evaluation_section, headline, read_evaluation

FORMAT_VERSION = "0.5.12"
SMP_CALLABLES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN"}
CLASSIFIER = {"callable": "TileClassifier", "import_from": "dlhisto_core.models.networks"}
CLASSIFIER_MODULES_BEFORE = ("dlhisto_core.dl_models",)
"""Where packages made by earlier releases say the tile classifier is: they still load."""
WEIGHTS_FILE = "weights.pt"
MAX_WEIGHTS_BYTES = 2**30
"""Largest weights file accepted (dlhisto's networks: 10 to 100 MB)."""
MAX_PACKAGE_BYTES = 4 * 2**30
"""Largest total decompressed size of a package (weights thrice, test tensors, documentation)."""
TORCHSCRIPT_FILE = "model.torchscript"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


@dataclass
class PackageInfo:
    """Human-facing description written into the package."""

    name: str
    description: str
    class_names: list[str]
    channel_names: list[str]
    authors: list[str]
    training: dict
    license: str = "MIT"
    pixel_size: float | None = None
    """The pixel size (µm) of the training images, when they all record the same one."""
    stain_reference: dict | None = None
    """The stain reference (:class:`stain.StainReference` as a dict) the training images were mapped onto."""
    instances: dict | None = None
    """Instance models: the object thresholds (:class:`spec.InstanceThresholds` as a dict),
    with what they scored where they were tuned."""


def export_package(model: torch.nn.Module, spec: ModelSpec, info: PackageInfo, test_input: np.ndarray,
                   path: str | os.PathLike, target_normalization: dict | None = None) -> None:
    """Write ``model`` as a validated bioimage.io package.

    ``test_input`` is a raw (C, Y, X) image patch (before normalisation) with Y and X multiples
    of 32; its prediction becomes the package's expected test output. Regression models need
    their ``target_normalization`` (see ``dl_data``): the ``dataset`` one becomes the output's
    ``scale_linear`` postprocessing, the ``input`` one (scale back with the input's percentiles,
    which no bioimage.io operation does) is left to dlhisto: the package's output is then in the
    normalised units of the input.
    """
    if len(info.class_names) != spec.out_channels or len(info.channel_names) != spec.in_channels:
        raise InputError("the package needs one name per class (or output channel) and per input channel")
    if (spec.task == "regression") != (target_normalization is not None):
        raise ValueError("regression models, and only they, need a target normalisation")
    model = model.to("cpu").eval()
    raw = test_input[None].astype(np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(_scale_range(raw, spec)))
    if spec.task == "regression":
        gain, offset = _output_scale(target_normalization, spec.out_channels)
        expected = output.numpy() * gain[None, :, None, None] + offset[None, :, None, None]
    else:
        expected = torch.softmax(output, dim=1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_torch(model.state_dict(), folder / WEIGHTS_FILE)
        example = torch.from_numpy(_scale_range(raw, spec))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace's deprecation notice: TorchScript is what bioimage.io runs
            save_torch(torch.jit.trace(model, example), folder / TORCHSCRIPT_FILE)
            _save_onnx(model, example, spec, folder / ONNX_FILE)
        np.save(folder / "test_input.npy", raw)
        np.save(folder / "test_output.npy", expected.astype(np.float32))
        (folder / "README.md").write_text(cards.readme(spec, info, target_normalization))
        (folder / "rdf.yaml").write_text(yaml.safe_dump(_rdf(spec, info, folder, target_normalization),
                                                        sort_keys=False))
        validate(folder / "rdf.yaml")
        write_package(folder, path)


def write_package(folder: Path, path: str | os.PathLike) -> None:
    """The files of ``folder`` as a package zip at ``path``, whole or not at all."""
    with atomic_output(path) as tmp_zip, zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())


def _save_onnx(model: torch.nn.Module, example: torch.Tensor, spec: ModelSpec, path: Path) -> None:
    """``model`` as ONNX (TorchScript-based exporter, opset :data:`ONNX_OPSET`), batch and, for
    segmentation, height and width left free, written whole or not at all."""
    dims = {0: "batch"} if spec.task == "classification" else {0: "batch", 2: "y", 3: "x"}
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET, input_names=["raw"],
                      output_names=["output"], dynamic_axes={"raw": {0: "batch", 2: "y", 3: "x"}, "output": dims})
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


def is_package(path: str | os.PathLike) -> bool:
    """A zip with an rdf.yaml (torch.save files are zips too, without one)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "rdf.yaml" in archive.namelist()


def load_package(path: str | os.PathLike, name: str | None = None) -> tuple[torch.nn.Module, ModelSpec, dict]:
    """Rebuild the network of a dlhisto bioimage.io package; returns (model, spec, rdf).

    Nothing in the file is trusted: the zip's sizes are checked before anything is
    decompressed, the rdf is parsed as plain YAML without aliases and checked against
    :class:`schemas.PackageRdf`, and the weights must fit the network the rdf declares.
    """
    name = name or Path(path).name
    what = "a bioimage.io model package with PyTorch weights"
    with untrusted.open_zip(path, name, what, MAX_PACKAGE_BYTES) as archive:
        if "rdf.yaml" not in archive.namelist():
            raise InputError(f"'{name}' is not {what} (it has no rdf.yaml)")
        rdf = untrusted.load_yaml(untrusted.read_member(archive, "rdf.yaml", name, untrusted.MAX_TEXT_BYTES),
                                  name, "rdf.yaml")
        if not isinstance(rdf, dict):
            raise InputError(f"'{name}' is not {what} (its rdf.yaml is not a mapping)")
        config = rdf.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("dlhisto"), dict):
            raise InputError(f"'{name}' is a bioimage.io package but not one made by dlhisto; "
                             "give its weights file to transfer learning instead")
        checked = check_metadata(schemas.PackageRdf, rdf, name, "rdf.yaml")
        source = checked.weights.pytorch_state_dict.source
        check_weights_format(untrusted.read_member(archive, source, name, MAX_WEIGHTS_BYTES, head=16), name)
        weights = untrusted.read_member(archive, source, name, MAX_WEIGHTS_BYTES)
    spec = ModelSpec.from_dict(checked.config.dlhisto.model.model_dump())
    architecture = checked.weights.pytorch_state_dict.architecture
    import_from = architecture.import_from
    if spec.task == "classification" and import_from in CLASSIFIER_MODULES_BEFORE:
        import_from = CLASSIFIER["import_from"]
    if _architecture_source(spec) != {"callable": architecture.callable, "import_from": import_from}:
        raise InputError(f"'{name}' names an architecture dlhisto does not build: {architecture.callable!r}")
    model = build_model(spec)
    load_fitting_state_dict(model, read_state_dict(weights, name), name)
    return model.eval(), spec, rdf


def load_fitting_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """``model.load_state_dict(state)``, refused in one line when the tensors do not fit the network."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        example = (f"'{wrong[0]}' is {tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in the "
                   "network" if wrong else f"'{(missing or unexpected)[0]}' is "
                   + ("missing" if missing else "not part of the network"))
        raise InputError(f"the weights of '{name}' do not fit the network it declares: {len(wrong)} tensor(s) of "
                         f"another shape, {len(missing)} missing, {len(unexpected)} unknown (e.g. {example})")
    model.load_state_dict(state)


PICKLE_PROTOCOLS = b"\x02\x03\x04\x05"
"""Pickle protocols (the byte after 0x80) of torch.save's legacy, non-zip files and plain pickles,
which the safe unpickler then reads or refuses."""


def check_weights_format(head: bytes, name: str) -> None:
    """Refuse weights that begin as neither torch.save's zip, a pickle (legacy torch.save) nor
    safetensors' header (from their first bytes: a gigabyte of anything else is not read)."""
    is_pickle = head[:1] == b"\x80" and head[1:2] in PICKLE_PROTOCOLS
    if not head.startswith(b"PK\x03\x04") and not is_pickle and head[8:9] != b"{":
        raise InputError(f"'{name}' is neither a PyTorch weights file (torch.save) nor a safetensors file")


def read_state_dict(source, name: str) -> dict[str, torch.Tensor]:
    """Tensors of a PyTorch state dict or safetensors file (bytes, a path or a file), without
    unpickling any object."""
    if isinstance(source, bytes):
        data = source  # no copy: weights of a package can be a gigabyte
    elif hasattr(source, "read"):
        data = source.read()
    else:
        data = untrusted.read_small_file(source, name, "the weights file", MAX_WEIGHTS_BYTES)
    check_weights_format(data, name)
    untrusted.check_zip_in_memory(data, name, MAX_WEIGHTS_BYTES)  # torch.save files are zips
    if data[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        from safetensors.torch import load as load_safetensors
        try:
            return load_safetensors(data)
        except Exception as exc:
            raise InputError(f"'{name}' is not a readable safetensors file ({one_line(exc, 200)})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices of the safe unpickler
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"'{name}' holds Python objects besides tensors and is refused: only plain "
                         "state dicts (torch.save of tensors) or safetensors files are loaded") from exc
    except Exception as exc:
        raise InputError(f"'{name}' is not a readable PyTorch weights file ({one_line(exc, 200)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning-style checkpoints
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"'{name}' holds no state dict of tensors")
    return state


def pixel_size(rdf: dict) -> float | None:
    """The pixel size (µm) a package's model was trained at (its input's space axes), or None."""
    axes = [axis for axis in rdf["inputs"][0]["axes"] if axis.get("type") == "space"]
    scales = {axis.get("scale") for axis in axes if axis.get("unit") == "micrometer"}
    return float(scales.pop()) if len(scales) == 1 and len(axes) == 2 and None not in scales else None


def stain_reference(rdf: dict, name: str):
    """The stain reference (:class:`stain.StainReference`) the package's training images were
    mapped onto, or None."""
    from ..imaging import stain

    recorded = rdf["config"]["dlhisto"].get("stain_reference")
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        raise InputError(f"'{name}': config.dlhisto.stain_reference is not a mapping")
    return stain.from_dict(recorded, name)


def instance_thresholds(rdf: dict, name: str):
    """The object thresholds (:class:`spec.InstanceThresholds`) an instance package records;
    the defaults for packages that record none."""
    recorded = rdf["config"]["dlhisto"].get("instances")
    return InstanceThresholds() if recorded is None else InstanceThresholds.from_dict(recorded, name)


def target_normalization(rdf: dict, spec: ModelSpec, name: str) -> dict:
    """The target normalisation of a regression package (``dl_data``), checked."""
    normalization = rdf["config"]["dlhisto"].get("target_normalization")
    mode = normalization.get("mode") if isinstance(normalization, dict) else None
    if mode == "input":
        return {"mode": mode}
    if mode == "dataset":
        try:
            low, high = (np.asarray(normalization[k], np.float32) for k in ("low", "high"))
        except (KeyError, TypeError, ValueError):
            low = high = np.zeros(0)
        if low.shape == high.shape == (spec.out_channels,) and np.isfinite(low).all() and np.isfinite(high).all():
            return {"mode": mode, "low": low.tolist(), "high": high.tolist()}
    raise InputError(f"regression model '{name}' records no valid target normalisation")


def _output_scale(normalization: dict, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Gain and offset per output channel as far as the package alone knows them: the input's
    percentiles are unknown to it, so the ``input`` mode stays in the input's normalised units."""
    return target_scale(normalization, np.zeros(n_channels), np.ones(n_channels))


def _architecture_source(spec: ModelSpec) -> dict:
    if spec.task == "classification":
        return dict(CLASSIFIER)
    return {"callable": SMP_CALLABLES[spec.architecture], "import_from": "segmentation_models_pytorch"}


def _rdf(spec: ModelSpec, info: PackageInfo, folder: Path, target_normalization: dict | None) -> dict:
    torch_version = torch.__version__.split("+")[0]
    scale = {} if info.pixel_size is None else {"scale": info.pixel_size, "unit": "micrometer"}
    space = [{"type": "space", "id": axis, "size": {"min": 64, "step": 32}, **scale} for axis in ("y", "x")]
    classes = {"type": "channel", "channel_names": info.class_names}
    cite = [{"text": "Ronneberger et al. U-Net (2015)", "doi": "10.1007/978-3-319-24574-4_28"},
            {"text": "Iakubovskii, Segmentation Models Pytorch",
             "url": "https://github.com/qubvel-org/segmentation_models.pytorch"}]
    output = {"id": "probabilities", "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}]}
    if spec.task == "classification":
        out_axes = [{"type": "batch"}, classes]
        kwargs = {"encoder": spec.encoder, "in_channels": spec.in_channels, "n_classes": spec.out_channels}
        kind = "tile classification"
    else:
        out_axes = [{"type": "batch"}, classes, *[{"type": "space", "id": axis, "size": {
            "tensor_id": "raw", "axis_id": axis}, **scale} for axis in ("y", "x")]]
        kwargs = {"encoder_name": spec.encoder, "encoder_weights": None, "in_channels": spec.in_channels,
                  "classes": spec.out_channels}
        kind = f"{spec.task}-segmentation"
    if spec.task == "regression":
        kind = "image restoration"
        cite.append({"text": "Weigert et al. Content-aware image restoration (2018)",
                     "doi": "10.1038/s41592-018-0216-7"})
        gain, offset = _output_scale(target_normalization, spec.out_channels)
        output = {"id": "prediction", "postprocessing": [] if target_normalization["mode"] == "input" else [
            {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain.tolist(), "offset": offset.tolist()}}]}
    low, high = NORMALIZATION
    dlhisto = {"version": __version__, "model": spec.to_dict(), "training": info.training}
    if target_normalization is not None:
        dlhisto["target_normalization"] = target_normalization
    if info.stain_reference is not None:
        dlhisto["stain_reference"] = info.stain_reference
    if info.instances is not None:
        dlhisto["instances"] = info.instances
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "description": info.description,
        "authors": [{"name": author} for author in info.authors],
        "cite": cite,
        "license": info.license,
        "documentation": _file(folder, "README.md"),
        "tags": ["dlhisto", "histology", kind.replace(" ", "-"), spec.architecture, spec.encoder, "2d", "pytorch"],
        "inputs": [{
            "id": "raw",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": info.channel_names}, *space],
            "test_tensor": _file(folder, "test_input.npy"),
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_range", "kwargs": {"axes": _normalized_axes(spec), "min_percentile": low,
                                                               "max_percentile": high, "eps": EPS}}],
        }],
        "outputs": [{
            "id": output["id"],
            "axes": out_axes,
            "test_tensor": _file(folder, "test_output.npy"),
            "data": {"type": "float32"},
            "postprocessing": output["postprocessing"],
        }],
        "weights": {
            "pytorch_state_dict": {
                **_file(folder, WEIGHTS_FILE),
                "architecture": {**_architecture_source(spec), "kwargs": kwargs},
                "pytorch_version": torch_version,
            },
            "torchscript": {**_file(folder, TORCHSCRIPT_FILE), "pytorch_version": torch_version,
                            "parent": "pytorch_state_dict"},
            "onnx": {**_file(folder, ONNX_FILE), "opset_version": ONNX_OPSET, "parent": "pytorch_state_dict"},
        },
        "config": {"dlhisto": dlhisto},
    }


def _normalized_axes(spec: ModelSpec) -> list[str]:
    """Axes over which the percentiles are taken: per channel, or all channels together for tile classes."""
    return ["channel", "y", "x"] if spec.task == "classification" else ["y", "x"]


def _scale_range(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """bioimage.io's scale_range as the package declares it, on a (1, C, Y, X) array."""
    low, high = NORMALIZATION
    axes = (1, 2, 3) if spec.task == "classification" else (2, 3)
    return stretch(raw, np.percentile(raw, low, axis=axes, keepdims=True),
                   np.percentile(raw, high, axis=axes, keepdims=True))


def _file(folder: Path, name: str) -> dict:
    return {"source": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}


def validate(rdf_path: Path, name: str | None = None) -> None:
    """Refuse a package that bioimageio.spec finds invalid (with its files checked): one that
    dlhisto wrote (a bug), or with ``name`` one given by a user (an :class:`InputError`)."""
    from bioimageio.spec import ValidationContext, load_description
    with ValidationContext(perform_io_checks=True):
        description = load_description(rdf_path)
    if description.validation_summary.status == "failed":
        errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in description.validation_summary.details
                  for e in d.errors]
        if name is not None:
            raise InputError(f"'{name}' is not a valid bioimage.io package: {one_line('; '.join(errors), 300)}")
        raise RuntimeError(f"dlhisto wrote an invalid bioimage.io package: {'; '.join(errors)[:500]}")


def with_evaluation(package, evaluation, output, name: str | None = None,
                    evaluation_name: str | None = None) -> str:
    """Write ``package`` to ``output`` with the ``evaluation`` table in its model card (replacing
    an earlier one), the rdf's checksum of the card updated and the package validated again.

    Only dlhisto's packages are changed: another maker's card is theirs. Returns the headline
    (:func:`headline`).

    Examples
    --------
    >>> import tempfile, zipfile
    >>> from pathlib import Path
    >>> from dlhisto_core.models.packages import with_evaluation
    >>> out = Path(tempfile.mkdtemp()) / "scored.zip"
    >>> with_evaluation("test-data/nuclei_unet.zip", "test-data/stain_truth.tsv", out)  # no summary row
    ''
    >>> "## Evaluation" in zipfile.ZipFile(out).read("README.md").decode()
    True
    """

    name = name or Path(package).name
    evaluation_name = evaluation_name or Path(evaluation).name
    columns, rows = read_evaluation(evaluation, evaluation_name)
    with tempfile.TemporaryDirectory(prefix="dlhisto-card-") as work:
        folder = Path(work)
        with untrusted.open_zip(package, name, "a bioimage.io model package", MAX_PACKAGE_BYTES) as archive:
            untrusted.extract_zip(archive, name, folder, MAX_PACKAGE_BYTES)
        rdf_path = folder / "rdf.yaml"
        if not rdf_path.is_file():
            raise InputError(f"'{name}' is not a bioimage.io model package (it has no rdf.yaml)")
        rdf = untrusted.load_yaml(rdf_path.read_bytes(), name, "rdf.yaml")
        config = rdf.get("config") if isinstance(rdf, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("dlhisto"), dict):
            raise InputError(f"'{name}' was not made by dlhisto: its model card is its maker's and is left as it is")
        validate(rdf_path, name)  # as given (checksums included), before its card changes
        documentation = rdf.get("documentation")
        card = folder / str(documentation.get("source") if isinstance(documentation, dict) else "")
        if not isinstance(documentation, dict) or card.name != "README.md" or not card.is_file():
            raise InputError(f"'{name}': its rdf.yaml names no README.md as its documentation")
        text = card.read_text(encoding="utf-8", errors="replace")
        text = text.split(f"\n{EVALUATION_HEADING}\n")[0].rstrip("\n") + "\n\n"
        card.write_text(text + evaluation_section(columns, rows, evaluation_name))
        documentation["sha256"] = hashlib.sha256(card.read_bytes()).hexdigest()
        rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
        validate(rdf_path)
        write_package(folder, output)
    return headline(columns, rows)


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through memory, so that a full disk is an ``OSError`` naming the file
    (torch's own writer reports it as an obscure ``RuntimeError``). A ``torch.jit`` module is
    saved as TorchScript."""
    buffer = io.BytesIO()
    if isinstance(obj, torch.jit.ScriptModule):
        torch.jit.save(obj, buffer)
    else:
        torch.save(obj, buffer)
    with open(path, "wb") as fh:
        fh.write(buffer.getbuffer())


def target_scale(normalization: dict, input_low: np.ndarray, input_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gain and offset that take a regression network's output back to the target's
    units: the inverse of the target normalisation, with the input's percentiles for ``input``."""
    if normalization["mode"] == "dataset":
        low, high = (np.asarray(normalization[k], np.float32) for k in ("low", "high"))
    else:
        low, high = np.asarray(input_low, np.float32), np.asarray(input_high, np.float32)
    return (high - low + np.float32(EPS)).astype(np.float32), low
