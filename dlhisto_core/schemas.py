"""Schemas of the metadata dlhisto reads from files others made: the parts of a model
package's ``rdf.yaml`` that dlhisto uses, and a pixel classifier's ``classifier.json``.

Each file is checked once, when it is loaded, for types, ranges and sizes (pydantic, strict:
no silent conversion), so that no field reaches the code with a type or size it does not
expect; the first problem is reported in one line with its place in the file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .errors import InputError, one_line
from .features import FEATURES, MAX_SCALE, MAX_SCALES
from .image_io import PIXEL_SIZE_RANGE_UM
from .model_spec import ARCHITECTURE_NAMES, ENCODERS, MAX_CLASSES, MAX_IN_CHANNELS, TASKS

MAX_NAME_LENGTH = 200
"""Longest class or channel name accepted."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Checked(BaseModel):
    """Fields dlhisto reads are typed strictly; other fields are kept but not looked at."""

    model_config = ConfigDict(strict=True, extra="allow")


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


class _FeatureSettings(_Checked):
    model_config = ConfigDict(strict=True, extra="forbid")
    features: list[Literal[FEATURES]] = Field(max_length=len(FEATURES))
    scales: list[Annotated[float, Field(gt=0, le=MAX_SCALE, allow_inf_nan=False)]] = Field(max_length=MAX_SCALES)
    include_raw: bool


class ClassifierMetadata(_Checked):
    """classifier.json of a pixel classifier (``pixel_classifier.save``)."""

    format: Literal["dlhisto-pixel-classifier"]
    format_version: Literal[1]
    features: _FeatureSettings
    class_names: list[Name] = Field(min_length=2, max_length=255)
    n_channels: int = Field(ge=1, le=MAX_IN_CHANNELS)
    pixel_size: float | None = Field(default=None, gt=0, le=1e4)
    """µm; absent in classifiers made before it was recorded."""
    training: dict[str, Any] = Field(default_factory=dict)


def check(schema: type[BaseModel], data: Any, name: str, what: str) -> BaseModel:
    """``data`` checked against ``schema``; the first problem as one :class:`InputError` line."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        place = ".".join(str(part) for part in error["loc"])
        raise InputError(f"'{name}' has an invalid {what}" + (f" at {place}" if place else "")
                         + f": {one_line(error['msg'], 200)}") from None

