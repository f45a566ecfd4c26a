"""Inputs as (path, display name) pairs, and repeated inputs paired by name.

Galaxy gives each element of a collection a name (its element identifier); two collections
that belong together (images and their labels) are paired by these names, never by position,
so that a missing, extra or misnamed element is an error instead of a silent mismatch.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..base.errors import InputError

Named = tuple[str, str]
"""An input file and its display name (Galaxy's element identifier, or the file name)."""


def named(items: Sequence[Named | str | os.PathLike]) -> list[Named]:
    """(path, display name) pairs from paths or pairs; a bare path is named by its file name."""
    return [(str(item[0]), str(item[1])) if isinstance(item, (tuple, list)) else (str(item), Path(item).name)
            for item in items]


def pair_by_name(names: Sequence[str], others: Sequence[str], what: str, other_what: str,
                 complete: bool = True) -> list[int | None]:
    """For each of ``names``, the index of the element of ``others`` with the same name (None
    where there is none and ``complete`` is False).

    Examples
    --------
    >>> pair_by_name(["a.tif", "b.tif"], ["b.tif", "a.tif"], "image", "label image")
    [1, 0]
    >>> pair_by_name(["a.tif"], ["c.tif"], "image", "label image")
    Traceback (most recent call last):
    dlhisto_core.base.errors.InputError: label image 'c.tif' has no image of the same name
    """
    for items, kind in ((names, what), (others, other_what)):
        twice = [name for name, count in Counter(items).items() if count > 1]
        if twice:
            raise InputError(f"two {kind}s are named '{twice[0]}': names must pair the inputs one to one")
    index, known = {name: k for k, name in enumerate(others)}, set(names)
    unmatched = [name for name in others if name not in known]
    if unmatched:
        raise InputError(f"{other_what} '{unmatched[0]}' has no {what} of the same name"
                         + (f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""))
    missing = [name for name in names if name not in index]
    if complete and missing:
        raise InputError(f"{what} '{missing[0]}' has no {other_what} of the same name"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return [index.get(name) for name in names]
