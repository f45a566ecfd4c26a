"""The zip files of dlhisto's classifiers: a JSON description checked against a schema and a
scikit-learn forest in the skops format, loaded with an explicit list of trusted types, so that
opening a classifier from someone else never runs pickled code."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ..base.errors import InputError, one_line
from ..io import untrusted
from ..io.outputs import atomic_output

MAX_CLASSIFIER_BYTES = 2**31
"""Largest decompressed classifier accepted (a forest of 100 trees on a million samples: ~100 MB)."""
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
"""Beyond skops' own safe defaults, the only type a stored forest may contain."""
DESCRIPTION, FOREST = "classifier.json", "forest.skops"


def save_forest(path: str | os.PathLike, metadata: dict, forest) -> None:
    """Write the description and the forest as one zip, whole or not at all."""
    import skops.io

    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(DESCRIPTION, json.dumps(metadata, indent=2))
        archive.writestr(FOREST, skops.io.dumps(forest))


def load_forest(path: str | os.PathLike, name: str | None, file_format: str, what: str, schema):
    """The checked description (a ``schema`` instance) and the random forest of a file written
    by :func:`save_forest`; anything else is refused without being executed. The zip's sizes
    (and those of the skops file inside it) are checked before anything is decompressed."""
    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    from ..io.metadata import check_metadata

    name = name or Path(path).name
    with untrusted.open_zip(path, name, what, MAX_CLASSIFIER_BYTES) as archive:
        names = archive.namelist()
        if DESCRIPTION not in names or FOREST not in names:
            raise InputError(f"'{name}' is not {what} (it lacks {DESCRIPTION} or {FOREST})")
        metadata = untrusted.load_json(untrusted.read_member(archive, DESCRIPTION, name, untrusted.MAX_TEXT_BYTES),
                                       name, DESCRIPTION)
        if not isinstance(metadata, dict) or metadata.get("format") != file_format:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise InputError(f"'{name}' is not {what} (format {found!r})")
        checked = check_metadata(schema, metadata, name, DESCRIPTION)
        forest_bytes = untrusted.read_member(archive, FOREST, name, MAX_CLASSIFIER_BYTES)
    untrusted.check_zip_in_memory(forest_bytes, name, MAX_CLASSIFIER_BYTES)  # a skops file is a zip too
    try:
        untrusted_types = set(skops.io.get_untrusted_types(data=forest_bytes)) - set(TRUSTED_TYPES)
    except Exception as exc:  # skops could not even parse it
        raise InputError(f"'{name}' holds no readable forest ({type(exc).__name__})") from exc
    if untrusted_types:
        raise InputError(f"'{name}' contains types that are not allowed in a classifier: "
                         f"{', '.join(sorted(untrusted_types))}")
    try:
        forest = skops.io.loads(forest_bytes, trusted=TRUSTED_TYPES)
    except Exception as exc:
        raise InputError(f"'{name}' holds no readable forest ({one_line(exc, 200)})") from exc
    if not isinstance(forest, RandomForestClassifier):
        raise InputError(f"'{name}' does not contain a random forest")
    return checked, forest
