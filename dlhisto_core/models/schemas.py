"""Schemas of the metadata dlhisto reads from files others made: the parts of a model
package's ``rdf.yaml`` that dlhisto uses, and a pixel classifier's ``classifier.json``.

Each file is checked once, when it is loaded, for types, ranges and sizes (pydantic, strict:
no silent conversion), so that no field reaches the code with a type or size it does not
expect; the first problem is reported in one line with its place in the file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ..io.pixel_size import PIXEL_SIZE_RANGE_UM
from .spec import ARCHITECTURE_NAMES, ENCODERS, MAX_CLASSES, TASKS
from ..base.bounds import MAX_IN_CHANNELS
from ..io.metadata import FiniteFloat, Name, _Checked


class _ModelFields(_Checked):
    model_config = ConfigDict(strict=True, extra="forbid")
    task: Literal[TASKS]
    n_classes: int = Field(ge=1, le=MAX_CLASSES)
    in_channels: int = Field(ge=1, le=MAX_IN_CHANNELS)
    architecture: Literal[ARCHITECTURE_NAMES]
    encoder: Literal[ENCODERS]


class _TargetNormalization(_Checked):
    mode: Literal["input", "dataset"]
    low: list[FiniteFloat] | None = Field(default=None, max_length=MAX_CLASSES)
    high: list[FiniteFloat] | None = Field(default=None, max_length=MAX_CLASSES)


class _DlhistoConfig(_Checked):
    version: Name
    model: _ModelFields
    training: dict[str, Any] = Field(default_factory=dict)
    target_normalization: _TargetNormalization | None = None
    stain_reference: dict[str, Any] | None = None


class _Config(_Checked):
    dlhisto: _DlhistoConfig


class _Architecture(_Checked):
    callable: Name
    import_from: Name


class _StateDictWeights(_Checked):
    source: Name
    architecture: _Architecture


class _Weights(_Checked):
    pytorch_state_dict: _StateDictWeights


class _Axis(_Checked):
    type: Name
    channel_names: list[Name] | None = Field(default=None, max_length=MAX_CLASSES)
    scale: Annotated[float, Field(gt=PIXEL_SIZE_RANGE_UM[0], le=PIXEL_SIZE_RANGE_UM[1])] | None = None
    """Space axes: the pixel size the model was trained at, in ``unit``."""
    unit: Name | None = None


class _Tensor(_Checked):
    axes: list[_Axis] = Field(min_length=2, max_length=5)


class PackageRdf(_Checked):
    """The parts of a dlhisto model package's rdf.yaml that dlhisto reads."""

    weights: _Weights
    inputs: list[_Tensor] = Field(min_length=1, max_length=1)
    outputs: list[_Tensor] = Field(min_length=1, max_length=1)
    config: _Config

    @model_validator(mode="after")
    def _one_name_per_class(self) -> "PackageRdf":
        model = self.config.dlhisto.model
        channel_axis = self.outputs[0].axes[1]
        if channel_axis.type != "channel" or channel_axis.channel_names is None:
            raise ValueError("the output's second axis must be its channel axis, with channel_names")
        if len(channel_axis.channel_names) != model.n_classes:
            raise ValueError(f"{len(channel_axis.channel_names)} output channel names for {model.n_classes} classes")
        normalization = self.config.dlhisto.target_normalization
        if (model.task == "regression") != (normalization is not None):
            raise ValueError("config.dlhisto.target_normalization is given for, and only for, regression models")
        return self


