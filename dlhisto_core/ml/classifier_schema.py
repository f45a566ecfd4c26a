"""Schemas of the classifiers' ``classifier.json``, checked when a classifier is loaded
(pydantic loads only then).
"""

from __future__ import annotations
from typing import Annotated, Any, Literal
from pydantic import ConfigDict, Field
from ..imaging.features import FEATURES, MAX_SCALE, MAX_SCALES
from ..base.bounds import MAX_IN_CHANNELS
from ..io.metadata import Name, _Checked


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


class ObjectClassifierMetadata(_Checked):
    """classifier.json of an object classifier (``object_classifier.save``)."""

    format: Literal["dlhisto-object-classifier"]
    format_version: Literal[1]
    feature_names: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=1024)
    class_names: list[Name] = Field(min_length=2, max_length=255)
    ring_width: float = Field(gt=0, le=50)
    neighbour_radius: float = Field(gt=0, le=1000)
    pixel_size: float | None = Field(default=None, gt=0, le=1e4)
    training: dict[str, Any] = Field(default_factory=dict)
