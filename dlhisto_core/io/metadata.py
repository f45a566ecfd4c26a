"""Checking metadata read from files others made against a schema.

Each file is checked once, when it is loaded, for types, ranges and sizes (pydantic, strict:
no silent conversion), so that no field reaches the code with a type or size it does not
expect; the first problem is reported in one line with its place in the file. The schemas
themselves live beside the code that reads the files (:mod:`models.schemas` for a model
package's ``rdf.yaml``, :mod:`ml.pixel_classifier` for ``classifier.json``).
"""

from __future__ import annotations
from typing import Annotated, Any
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from ..base.errors import InputError, one_line


MAX_NAME_LENGTH = 200
"""Longest class or channel name accepted."""


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Checked(BaseModel):
    """Fields dlhisto reads are typed strictly; other fields are kept but not looked at."""

    model_config = ConfigDict(strict=True, extra="allow")


def check_metadata(schema: type[BaseModel], data: Any, name: str, what: str) -> BaseModel:
    """``data`` checked against ``schema``; the first problem as one :class:`InputError` line."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        place = ".".join(str(part) for part in error["loc"])
        raise InputError(f"'{name}' has an invalid {what}" + (f" at {place}" if place else "")
                         + f": {one_line(error['msg'], 200)}") from None
