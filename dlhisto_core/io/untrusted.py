"""Reading files from others (model packages, classifiers, forms, tables) within fixed bounds.

A zip is checked before anything is decompressed: member count, each member's declared size
and the total; members are then read with the same cap, whatever the header claimed. YAML is
parsed without aliases (whose expansion turns a few kilobytes into gigabytes) and JSON and YAML
texts are capped in size; nesting too deep for the parser is one clear error. Every refusal is
an :class:`InputError` naming the file and what is wrong, in one line.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path, PurePosixPath

import yaml

from ..base.errors import InputError, one_line

MIB = 2**20
MAX_ZIP_MEMBERS = 1000
MAX_TEXT_BYTES = 4 * MIB
"""Largest metadata text (rdf.yaml, classifier.json, forms, credentials) read."""
MAX_INTEGER_DIGITS = 30
"""Longest whole number accepted in JSON and YAML: no field needs more, and Python turns one of
thousands of digits into an error (or a float overflow) far from where it was read."""


def open_zip(path: str | os.PathLike, name: str, what: str, max_total: int) -> zipfile.ZipFile:
    """Open a zip whose members' declared sizes add up to at most ``max_total`` bytes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"'{name}' is not {what} ({one_line(exc)})") from None
    try:
        check_zip(archive, name, max_total)
    except BaseException:
        archive.close()
        raise
    return archive


def check_zip(archive: zipfile.ZipFile, name: str, max_total: int) -> None:
    """Refuse a zip with too many members, or whose members would decompress to more than ``max_total``."""
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError(f"'{name}' holds {len(members)} files; at most {MAX_ZIP_MEMBERS} are accepted")
    total = sum(member.file_size for member in members)
    if total > max_total:
        raise InputError(f"'{name}' would decompress to {_size(total)}; at most {_size(max_total)} are accepted")


def read_member(archive: zipfile.ZipFile, member: str, name: str, limit: int, head: int | None = None) -> bytes:
    """The bytes of one member, refused beyond ``limit`` (declared or actual size); with ``head``,
    only its first ``head`` bytes."""
    info = _member_info(archive, member, name, limit)
    try:
        with archive.open(info) as fh:
            data = fh.read(limit + 1 if head is None else head)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"'{name}': '{member}' cannot be read ({one_line(exc)})") from None
    if len(data) > limit:
        raise InputError(f"'{name}': '{member}' is larger than {_size(limit)}")
    return data


def _member_info(archive: zipfile.ZipFile, member: str, name: str, limit: int) -> zipfile.ZipInfo:
    """The member's entry, refused when it is missing or declares more than ``limit`` bytes."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise InputError(f"'{name}' has no file '{one_line(member)[:100]}'") from None
    if info.file_size > limit:
        raise InputError(f"'{name}': '{member}' would decompress to {_size(info.file_size)}; "
                         f"at most {_size(limit)} are accepted")
    return info


def extract_zip(archive: zipfile.ZipFile, name: str, folder: Path, limit: int) -> None:
    """Every file of ``archive`` into ``folder``, each name checked (none outside the folder) and
    each size capped at ``limit``."""
    for member in archive.namelist():
        if not member.endswith("/"):
            extract_member(archive, member, name, folder, limit)


def extract_member(archive: zipfile.ZipFile, member: str, name: str, folder: Path, limit: int) -> Path:
    """One file of ``archive`` into ``folder`` (its name checked: none outside the folder; its
    size capped at ``limit``); returns where it is."""
    parts = PurePosixPath(member).parts
    if member.startswith("/") or ".." in parts or "\\" in member or ":" in member:
        raise InputError(f"'{name}' holds a file named outside the package: '{one_line(member)[:100]}'")
    target = folder.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    info = _member_info(archive, member, name, limit)  # its declared size, before anything is decompressed
    try:
        with archive.open(info) as source, open(target, "wb") as copy:
            copied = 0
            while chunk := source.read(MIB):  # in chunks: memory stays small, whatever the member's size
                copied += len(chunk)
                if copied > limit:
                    raise InputError(f"'{name}': '{one_line(member)[:100]}' is larger than {_size(limit)}")
                copy.write(chunk)
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"'{name}': '{member}' cannot be read ({one_line(exc)})") from None
    return target


def check_zip_in_memory(data: bytes, name: str, max_total: int) -> None:
    """Apply :func:`check_zip` to a zip held in memory (a zip inside a zip, e.g. a skops file)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            check_zip(inner, name, max_total)
    except zipfile.BadZipFile:
        return  # not a zip: its own reader refuses it


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases and whole numbers of more than
    :data:`MAX_INTEGER_DIGITS` digits."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases (*name) are not accepted",
                                                    event.start_mark)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INTEGER_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"a number of {len(node.value)} digits; at most "
                                                    f"{MAX_INTEGER_DIGITS} are accepted", node.start_mark)
        return super().construct_yaml_int(node)


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _NoAliasLoader.construct_yaml_int)


MAX_CLASSES = 1000
"""Most classes a table, class map or annotation file may name: a confusion matrix, a class map's
values and every per-class table stay small (16,000 classes made a 2 GB confusion matrix)."""


def check_class_count(count: int, where: str) -> None:
    """Refuse more than :data:`MAX_CLASSES` classes, before anything is sized by their number."""
    if count > MAX_CLASSES:
        raise InputError(f"{where} has {count} classes; at most {MAX_CLASSES} are accepted")


def parse_int(text: str) -> int:
    """JSON's whole numbers, at most :data:`MAX_INTEGER_DIGITS` digits (``json.loads(parse_int=...)``)."""
    if len(text) > MAX_INTEGER_DIGITS:
        raise InputError(f"a number of {len(text)} digits; at most {MAX_INTEGER_DIGITS} are accepted")
    return int(text)


def load_yaml(data: bytes, name: str, what: str):
    """Parse an untrusted YAML text: safe types only, no aliases, at most :data:`MAX_TEXT_BYTES`."""
    text = _text(data, name, what)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"'{name}': {what} is not valid YAML{where}: {one_line(problem)}") from None
    except RecursionError:
        raise InputError(f"'{name}': {what} is nested too deeply") from None


def load_json(data: bytes, name: str, what: str):
    """Parse an untrusted JSON text of at most :data:`MAX_TEXT_BYTES`."""
    text = _text(data, name, what)
    try:
        return json.loads(text, parse_int=parse_int)
    except InputError as exc:
        raise InputError(f"'{name}': {what} holds {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"'{name}': {what} is not valid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"'{name}': {what} is nested too deeply") from None


def read_small_file(path: str | os.PathLike, name: str, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a small input file (form, credentials, weights), refused beyond ``limit``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} '{name}': {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} '{name}' is larger than {_size(limit)}")
    return data


def _text(data: bytes, name: str, what: str) -> str:
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"'{name}': {what} is larger than {_size(MAX_TEXT_BYTES)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{name}': {what} is not UTF-8 text (byte {exc.start})") from None


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MIB), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"

