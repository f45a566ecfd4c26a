"""dlhisto's pretrained models, shipped inside the package as compact weight files.

Each model was trained by ``scripts/build_pretrained.py`` (seeded, from images and annotations
that ship inside registry packages) and is kept in git as one safetensors file
(``dlhisto_core/models/weights/<name>.safetensors``): the network's weights in half precision, the
package's test input, and, as the file's text metadata, what its bioimage.io package records
(the network, the description, the object thresholds) and its evaluation on images it never
saw. :func:`pretrained_model` makes the full bioimage.io package from it (weights, TorchScript,
ONNX, model card with the evaluation), validated like any other, for ``predict``, ``classify``,
``transfer`` or the model base.

- ``nuclei_fluorescence``: nuclei instances in one-channel fluorescence images;
- ``nuclei_he``: nuclei instances in H&E images;
- ``nuclei_types_he``: the types of H&E nuclei (connective, inflammatory, neoplastic), pixel by
  pixel: with ``nuclei_he``'s objects, each nucleus takes the type most of its pixels have;
- ``tissue_he``: tumour / stroma classes of 128 px H&E tiles.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..io.outputs import outputs_together

WEIGHTS_FOLDER = Path(__file__).resolve().parent / "weights"
FORMAT = "dlhisto-compact-1"
TEST_INPUT = "__test_input__"
"""The tensor of a compact file that is the package's test input, not a weight."""


@dataclass(frozen=True)
class ShippedModel:
    """One pretrained model dlhisto ships."""

    name: str
    what: str
    data: str
    """The images and annotations it was trained on, with their licences."""

    @property
    def path(self) -> Path:
        return WEIGHTS_FOLDER / f"{self.name}.safetensors"


SHIPPED = {model.name: model for model in (
    ShippedModel("nuclei_fluorescence", "nuclei instances in one-channel fluorescence images",
                 "mnfinder 1.2.3 training-data (24 of its 30 images train, 6 tune; its validation-data held out; "
                 "MIT) and the DSB2018 image of stardist 0.9.2 (img2d.tif, mask2d.tif; its quadrants 1-3 train, "
                 "quadrant 4 held out; BSD-3-Clause), at an estimated 0.5 µm per pixel (nuclear areas); strong "
                 "augmentation; encoder started from torchvision's ImageNet MobileNetV2 (BSD-3-Clause)"),
    ShippedModel("nuclei_he", "nuclei instances in H&E images (RGB)",
                 "histolytics 0.3.0 hgsc_nest.jpg with its nuclei instance mask and hgsc_stromal_he.jpg with its 423 "
                 "nuclei polygons (BSD-3-Clause; a segmentation model's output, not an expert's), each cut by rows: "
                 "top 576 train, next 192 tune, last 732 held out; resampled from an estimated 0.44 µm per pixel "
                 "(its lymphocytes) to 0.5 µm; strong augmentation (scale, HED stain, intensity, blur, noise); "
                 "encoder started from torchvision's ImageNet MobileNetV2 (BSD-3-Clause)"),
    ShippedModel("nuclei_types_he", "types of H&E nuclei pixel by pixel: background, connective, inflammatory, "
                 "neoplastic (with nuclei_he's objects, each nucleus takes its pixels' majority type)",
                 "histolytics 0.3.0 hgsc_nest.jpg with its nuclei type mask and hgsc_stromal_he.jpg with its 423 "
                 "classed nuclei polygons (BSD-3-Clause; a segmentation model's types, not an expert's), cut by rows "
                 "as nuclei_he's data (top 576 train, next 192 tune, last 732 held out), resampled from an "
                 "estimated 0.44 µm per pixel to 0.5 µm; strong augmentation; encoder started from torchvision's "
                 "ImageNet MobileNetV2 (BSD-3-Clause)"),
    ShippedModel("tissue_he", "tumour / stroma classes of 128 px H&E tiles",
                 "histolytics 0.3.0 hgsc_nest.jpg and hgsc_stromal_he.jpg, top 640 px (BSD-3-Clause), tiles "
                 "classed from its nuclei types (a model's output), at an estimated 0.44 µm per pixel (its "
                 "lymphocytes); encoder started from ImageNet"),
)}


def pretrained_model(name: str, path: str | os.PathLike, evaluation: str | os.PathLike | None = None) -> Path:
    """Write the bioimage.io package of the shipped model ``name`` (one of :data:`SHIPPED`) to
    ``path``, and, if given, its evaluation on held-out images (the table of ``evaluate``) to
    ``evaluation``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from dlhisto_core import pretrained_model, predict
    >>> folder = Path(tempfile.mkdtemp())
    >>> package = pretrained_model("tissue_he", folder / "tissue_he.zip", folder / "held_out.tsv")
    >>> (folder / "held_out.tsv").read_text().splitlines()[-1].split()[:2]
    ['all', '82']
    """
    if name not in SHIPPED:
        raise InputError(f"dlhisto ships no model '{name}'; choose one of {', '.join(SHIPPED)}")
    if not SHIPPED[name].path.is_file():
        raise InputError(f"the weights of '{name}' are missing from this installation ({SHIPPED[name].path})")
    with outputs_together(path, evaluation) as (package_part, evaluation_part):
        expand(SHIPPED[name].path, package_part)
        if evaluation_part:
            Path(evaluation_part).write_text(_metadata(SHIPPED[name].path).get("evaluation", ""))
    return Path(path)


def _metadata(compact_file: str | os.PathLike) -> dict:
    """The text metadata of a compact file, refused in one line when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(compact_file, "pt") as opened:
            metadata = opened.metadata() or {}
    except Exception:  # an unreadable header (SafetensorError, OSError): not a compact file either
        metadata = {}
    if metadata.get("format") != FORMAT or not {"spec", "info", "target_normalization"} <= set(metadata):
        raise InputError(f"'{Path(compact_file).name}' is not a compact dlhisto model ({FORMAT})")
    return metadata


def compact(package: str | os.PathLike, target: str | os.PathLike, evaluation: str | os.PathLike | None = None,
            evaluation_name: str | None = None, training: dict | None = None) -> None:
    """Keep a dlhisto package as one compact file: its weights in half precision, its test input
    and what it records; ``evaluation`` (a table of ``evaluate``) goes into its model card when
    :func:`expand` makes the package again, ``training`` (e.g. the training data and their
    licences) into its training record."""
    import torch
    from safetensors.torch import save_file

    from . import packages
    from ..io import untrusted
    from ..io.outputs import atomic_output

    model, spec, rdf = packages.load_package(package)
    dlhisto = rdf["config"]["dlhisto"]
    info = {"name": rdf["name"], "description": rdf["description"],
            "class_names": rdf["outputs"][0]["axes"][1]["channel_names"],
            "channel_names": rdf["inputs"][0]["axes"][1]["channel_names"],
            "authors": [author["name"] for author in rdf["authors"]],
            "training": {**dlhisto["training"], **(training or {})},
            "license": rdf["license"], "pixel_size": packages.pixel_size(rdf),
            "stain_reference": dlhisto.get("stain_reference"), "instances": dlhisto.get("instances")}
    name = Path(package).name
    with untrusted.open_zip(package, name, "a model package", packages.MAX_PACKAGE_BYTES) as archive:
        raw = untrusted.read_member(archive, "test_input.npy", name, packages.MAX_PACKAGE_BYTES)
    test_input = np.load(io.BytesIO(raw), allow_pickle=False)[0]
    tensors = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    tensors[TEST_INPUT] = torch.from_numpy(np.ascontiguousarray(test_input, np.float32))
    metadata = {"format": FORMAT, "spec": json.dumps(spec.to_dict()), "info": json.dumps(info),
                "target_normalization": json.dumps(dlhisto.get("target_normalization"))}
    if evaluation is not None:
        metadata["evaluation"] = Path(evaluation).read_text()
        metadata["evaluation_name"] = evaluation_name or Path(evaluation).name
    with atomic_output(target) as part:
        save_file({key: value.contiguous() for key, value in tensors.items()}, part, metadata=metadata)


def expand(compact_file: str | os.PathLike, path: str | os.PathLike) -> None:
    """The bioimage.io package of a file :func:`compact` wrote (weights back in single precision)."""
    from safetensors.torch import load_file

    from . import packages
    from .networks import build_model
    from .spec import ModelSpec

    metadata = _metadata(compact_file)
    tensors = load_file(compact_file)
    test_input = tensors.pop(TEST_INPUT).numpy()
    spec = ModelSpec.from_dict(json.loads(metadata["spec"]))
    model = build_model(spec)
    packages.load_fitting_state_dict(model, {k: v.float() if v.is_floating_point() else v
                                                  for k, v in tensors.items()}, Path(compact_file).name)
    recorded = json.loads(metadata["info"])
    info = packages.PackageInfo(**{f.name: recorded[f.name] for f in fields(packages.PackageInfo)})
    target_normalization = json.loads(metadata["target_normalization"])
    if "evaluation" not in metadata:
        packages.export_package(model, spec, info, test_input, path, target_normalization)
        return
    with tempfile.TemporaryDirectory(prefix="dlhisto-expand-") as work:
        plain, table = Path(work) / "model.zip", Path(work) / "evaluation.tsv"
        packages.export_package(model, spec, info, test_input, plain, target_normalization)
        table.write_text(metadata["evaluation"])
        packages.with_evaluation(plain, table, path, recorded["name"], metadata["evaluation_name"])
