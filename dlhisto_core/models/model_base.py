"""The facility's model base: bioimage.io packages installed once into a Galaxy tool data table
(``dlhisto_models``), which predict, classify and transfer offer beside the history.

A row of the table describes one package: its id, name, task, input channels, pixel size,
description and the path of the installed zip. :func:`describe_package` makes that row from the
package itself, after checking it as predict would load it (dlhisto's packages rebuilt, others
run on their test input); the data manager tool (``data_managers/``) writes it in the JSON that
Galaxy's data managers return, with the zip to install.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

from ..io import untrusted
from ..base.errors import InputError, one_line
from ..io.outputs import atomic_output

TABLE = "dlhisto_models"
COLUMNS = ("value", "name", "task", "channels", "pixel_size", "description", "path")
"""The data table's columns, as tool_data_table_conf.xml.sample declares them."""
FOREIGN_TASK = "bioimage.io"
"""The task of a package made elsewhere: its output is written as it comes (probabilities or image)."""
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
"""Unicode categories no column may hold: control characters (tab, newline), format characters,
line and paragraph separators."""


def describe_package(package, name: str | None = None, model_id: str | None = None,
                     description: str | None = None) -> dict:
    """The model base's row for a package (without its path), the package checked on the way.

    Parameters
    ----------
    package : path
        A bioimage.io package: dlhisto's or one made elsewhere.
    name : str, optional
        Its display name in messages (default: the file name).
    model_id : str, optional
        The row's id (default: from the package's name): lower-case letters, digits, ``_.-``.
    description : str, optional
        Default: the package's own.

    Examples
    --------
    >>> from dlhisto_core.models.model_base import describe_package
    >>> row = describe_package("test-data/nuclei_unet.zip", model_id="nuclei")
    >>> row["value"], row["task"], row["channels"]
    ('nuclei', 'instance', 1)
    """
    from . import packages, zoo

    name = name or Path(package).name
    if zoo.is_foreign(package, name):
        with zoo.load_zoo_model(package, name) as model:
            rdf_name, rdf_description = model.description.name, model.description.description
            row = {"task": FOREIGN_TASK, "channels": model.n_channels, "pixel_size": model.pixel_size}
    else:
        _, spec, rdf = packages.load_package(package, name)
        rdf_name, rdf_description = rdf.get("name", name), rdf.get("description", "")
        row = {"task": spec.task, "channels": spec.in_channels, "pixel_size": packages.pixel_size(rdf)}
    model_id = model_id or re.sub(r"[^a-z0-9_.-]+", "_", str(rdf_name).lower()).strip("_.-")[:64]
    if not ID_PATTERN.match(model_id or ""):
        raise InputError(f"the model id {model_id!r} must be 1-64 lower-case letters, digits, '_', '.' or '-'")
    text = " ".join(str(description or rdf_description).split())  # one line: it is a column of a table
    return {"value": model_id, "name": " ".join(str(rdf_name).split()), **row,
            "description": text.replace("\t", " ")[:500]}


def install(package, target_folder, json_path, name: str | None = None, model_id: str | None = None,
            description: str | None = None, evaluation=None, evaluation_name: str | None = None) -> dict:
    """What a Galaxy data manager returns for ``package``: the zip copied to
    ``target_folder/<id>/model.zip`` and the row of :data:`TABLE` in ``json_path``
    (``{"data_tables": {"dlhisto_models": [row]}}``), its path the folder ``<id>``, which
    data_manager_conf.xml moves into Galaxy's data folder and translates to the zip's absolute
    path there. Returns the row.

    An ``evaluation`` table (of evaluate or crossval) goes into the model card of a dlhisto
    package (:func:`packages.with_evaluation`; another maker's card is left as it is), and its
    headline figures into the row's name, which users see when they pick the model."""
    from .cards import headline, read_evaluation
    from .packages import with_evaluation

    row = describe_package(package, name, model_id, description)
    figures = "" if evaluation is None else headline(*read_evaluation(evaluation, evaluation_name))
    row["name"] = f"{row['name']}: {figures}" if figures else row["name"]
    row = {**row, "path": row["value"], "pixel_size": "" if row["pixel_size"] is None else f"{row['pixel_size']:g}"}
    checked = loc_row(row)  # before anything is written
    folder = Path(target_folder) / row["value"]
    folder.mkdir(parents=True, exist_ok=True)
    if evaluation is not None and row["task"] != FOREIGN_TASK:
        with_evaluation(package, evaluation, folder / "model.zip", name, evaluation_name)
    else:
        shutil.copyfile(package, folder / "model.zip")
    with atomic_output(json_path) as tmp:
        Path(tmp).write_text(json.dumps({"data_tables": {TABLE: [checked]}}, indent=2))
    return row


def loc_row(row: dict) -> dict:
    """The row of :data:`TABLE` as Galaxy writes it into ``dlhisto_models.loc`` (one line, its
    columns separated by tabs): every column a string without tab, line break or other control
    character, which would split the row or add another; the id and path from :data:`ID_PATTERN`."""
    checked = {column: str(row[column]) for column in COLUMNS}
    for column, value in checked.items():
        bad = next((c for c in value if unicodedata.category(c) in FORBIDDEN_CATEGORIES), None)
        if bad is not None:
            raise InputError(f"the model base's {column} would hold the control character U+{ord(bad):04X} "
                             f"('{one_line(value.encode('unicode_escape').decode('ascii'), 80)}'), which would "
                             "break its table: refused")
    for column in ("value", "path"):
        if not ID_PATTERN.match(checked[column]):
            raise InputError(f"the model base's {column} {checked[column]!r} must be 1-64 lower-case letters, digits, "
                             "'_', '.' or '-'")
    return checked


def install_from_data_manager(package, json_path, name: str | None = None, model_id: str | None = None,
                              description: str | None = None, evaluation=None,
                              evaluation_name: str | None = None) -> dict:
    """:func:`install` as a Galaxy data manager job runs it: ``json_path`` holds, when the job
    starts, Galaxy's parameters with the folder (``extra_files_path``) the package goes to; it
    is replaced by the row to add."""
    return install(package, data_manager_folder(json_path), json_path, name, model_id, description, evaluation,
                   evaluation_name)


def data_manager_folder(json_path) -> str:
    """The folder (``extra_files_path``) that Galaxy's data manager parameters give the package."""
    params = untrusted.load_json(untrusted.read_small_file(json_path, Path(json_path).name, "the data manager's "
                                                           "parameters"), Path(json_path).name, "its parameters")
    try:
        folder = params["output_data"][0]["extra_files_path"]
    except (KeyError, IndexError, TypeError):
        folder = None
    if not isinstance(folder, str) or not folder:
        raise InputError("the data manager's parameters name no output folder (output_data.0.extra_files_path)")
    return folder
