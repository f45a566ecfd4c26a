"""Where a step's results go: whole, together, or not at all.

Every output is written to a hidden ``.<name>.<random>.part`` file beside its final path and
moved into place only when the whole step has succeeded; a step with several outputs moves
them together (:func:`outputs_together`), holding a lock on their folders while it does
(:func:`commit`), so that runs writing the same outputs at once never leave one run's output
beside another's. A failed step, a full disk, a job cancelled with SIGTERM or Ctrl-C
(:func:`cancel_on_signals`) or killed with SIGKILL therefore never leaves a result that looks
complete where Galaxy, or a user, would pick it up.

A confined step (:mod:`confine`) cannot create files beside its outputs: their .part files are
made before it starts (:func:`reserve`), and it only records which are complete
(:func:`defer_commits`); the unconfined parent moves them once the step has succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from ..base.errors import InputError

_pending: set[Path] = set()
"""The .part files being written, removed by :func:`cancel_on_signals` if the job is cancelled."""
_pending_lock = threading.Lock()
_reserved: dict[str, Path] = {}
"""Final path (real path) -> its .part file, made by :func:`reserve` before a confined step starts."""
_deferred_record: Path | None = None
"""In a confined step: the file that lists the outputs ready to be moved by the parent."""

MAX_PART_NAME_BYTES = 200
"""Most bytes of an output's name kept in its .part file's name (which adds 15, within 255)."""
SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}


class Cancelled(BaseException):
    """The job was cancelled by a signal (Galaxy and Slurm send SIGTERM; Ctrl-C sends SIGINT).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(SIGNAL_NAMES.get(signum, f"signal {signum}"))
        self.signum = signum


@contextlib.contextmanager
def outputs_together(*paths: str | os.PathLike | None) -> Iterator[list[Path | None]]:
    """Temporary paths for several outputs, moved to ``paths`` together when the block succeeds.

    ``None`` stands for an output that was not asked for and yields ``None``. When the block
    fails, no output appears and the temporary files are removed. An error while writing
    (``OSError``, e.g. a full disk) names the output's final path, not the hidden file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> with outputs_together(folder / "a.txt", None, folder / "b.txt") as (a, nothing, b):
    ...     _ = a.write_text("one"); _ = b.write_text("two")
    >>> sorted(p.name for p in folder.iterdir()), nothing
    (['a.txt', 'b.txt'], None)
    """
    given = [None if p is None else Path(p) for p in paths]
    nested = [path for path in given if path is not None and _is_pending(path)]  # an outer block's .part files
    finals = [None if path in nested else path for path in given]
    temps: list[Path | None] = []
    try:
        for final in finals:
            temps.append(None if final is None else _new_part(final))
        written_to = [path if path in nested else temp for path, temp in zip(given, temps)]
        try:
            yield written_to
            mode = 0o666 & ~_current_umask()  # mkstemp made them private
            for temp in temps:
                if temp is not None:
                    os.chmod(temp, mode)
            written = [(temp, final) for temp, final in zip(temps, finals) if temp is not None]
            deferred = [(t, f) for t, f in written if _deferred_record is not None and _is_reserved(t, f)]
            commit([pair for pair in written if pair not in deferred])
            if deferred:
                with open(_deferred_record, "a") as fh:
                    fh.writelines(f"{os.path.realpath(final)}\n" for _, final in deferred)
        except OSError as exc:  # a nested block names the outer block's .part file, which that block renames
            raise _naming_final_path(exc, written_to, given) from exc
    finally:
        for temp in temps:
            if temp is not None:
                if temp not in _reserved.values():  # reserved ones are the parent's to remove
                    temp.unlink(missing_ok=True)
                with _pending_lock:
                    _pending.discard(temp)


def commit(pairs: list[tuple[Path, Path]]) -> None:
    """Move each (.part file, final path) into place, holding an exclusive lock on every folder
    involved (in a fixed order), so that two runs committing the same outputs do it one after
    the other, each set whole."""
    folders = sorted({os.path.realpath(os.path.dirname(os.path.abspath(final))) for _, final in pairs})
    with contextlib.ExitStack() as locks:
        for folder in folders:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            locks.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for temp, final in pairs:
            os.replace(temp, final)


def reserve(paths: list[str | os.PathLike]) -> dict[str, Path]:
    """Make the .part file of each output now (final real path -> .part file), for a step that
    will not be allowed to create files beside its outputs; :func:`release` removes what is left."""
    reserved = {}
    try:
        for path in paths:
            reserved[os.path.realpath(path)] = _new_part(Path(path))
    except BaseException:
        release(reserved)
        raise
    _reserved.update(reserved)
    return reserved


def release(reserved: dict[str, Path]) -> None:
    """Remove the reserved .part files that were not moved into place."""
    for key, part in reserved.items():
        _reserved.pop(key, None)
        part.unlink(missing_ok=True)
        with _pending_lock:
            _pending.discard(part)


def defer_commits(reserved: dict[str, Path], record: Path) -> None:
    """In a confined step: write outputs into their ``reserved`` .part files and list the complete
    ones in ``record`` instead of moving them (the parent moves them when the step succeeded)."""
    global _deferred_record
    _reserved.clear()
    _reserved.update(reserved)
    _deferred_record = record


def _is_pending(path: Path) -> bool:
    """True for a .part file being written: an outer block already moves it into place whole."""
    with _pending_lock:
        return path in _pending


def _is_reserved(temp: Path, final: Path) -> bool:
    return _reserved.get(os.path.realpath(final)) == temp


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, moved into place only if the block succeeds."""
    with outputs_together(path) as (temp,):
        yield temp


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: list[str | os.PathLike]) -> None:
    """Refuse, before any work, two outputs at one path, an output over an input, and an
    output that is a folder; ``outputs`` maps option names to paths (None: not asked for)."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if Path(path).is_dir():
            raise InputError(f"the output {option} '{path}' is a folder; give a file name")
        key = os.path.realpath(path)
        if key in seen:
            raise InputError(f"{seen[key]} and {option} name the same file '{path}': give each output its own path")
        seen[key] = option
    for path in inputs:
        if os.path.realpath(path) in seen:
            raise InputError(f"the output {seen[os.path.realpath(path)]} would overwrite the input '{path}'")


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Cancelled` inside the block, so that every
    ``with`` block unwinds (temporary files and work folders are removed); on the way out,
    any .part file still registered (e.g. one a writer thread had open) is removed too.
    Later signals are ignored while that cleanup runs."""
    def cancel(signum, frame):
        for number in SIGNAL_NAMES:
            signal.signal(number, signal.SIG_IGN)
        raise Cancelled(signum)

    previous = {number: signal.signal(number, cancel) for number in SIGNAL_NAMES}
    try:
        yield
    except Cancelled:
        remove_pending()
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def remove_pending() -> None:
    """Remove every .part file that is still being written."""
    with _pending_lock:
        pending = list(_pending)
        _pending.clear()
    for path in pending:
        if path not in _reserved.values():  # reserved ones are the parent's to remove
            path.unlink(missing_ok=True)


def _new_part(final: Path) -> Path:
    reserved = _reserved.get(os.path.realpath(final))
    if reserved is not None and reserved.exists():
        with open(reserved, "wb"):  # empty, as a new one would be
            pass
        return reserved
    shown = final.name.encode()[:MAX_PART_NAME_BYTES].decode(errors="ignore")  # the whole name within 255 bytes
    try:
        fd, name = tempfile.mkstemp(prefix=f".{shown}.", suffix=".part", dir=final.parent)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, os.fspath(final)) from exc
    os.close(fd)
    temp = Path(name)
    with _pending_lock:
        _pending.add(temp)
    return temp


def _naming_final_path(exc: OSError, temps: list[Path | None], finals: list[Path | None]) -> OSError:
    """The same error, naming the final path of the output being written (the user's name for
    it) instead of its hidden temporary file; errors about other files are left as they are."""
    written = [(t, f) for t, f in zip(temps, finals) if t is not None]
    if exc.filename is not None:
        final = next((f for t, f in written if os.fspath(t) == os.fspath(exc.filename)), None)
    else:  # the writer did not say which file: known only when there is one
        final = written[0][1] if len(written) == 1 else None
    if final is None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(final))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
