"""Where a step's results go: whole, together, or not at all.

Every output is written to a hidden ``.<name>.<random>.part`` file beside its final path and
moved into place only when the whole step has succeeded; a step with several outputs moves
them together (:func:`outputs_together`). A failed step, a full disk, a job cancelled with
SIGTERM or Ctrl-C (:func:`cancel_on_signals`) or killed with SIGKILL therefore never leaves a
result that looks complete where Galaxy, or a user, would pick it up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from .errors import InputError

_pending: set[Path] = set()
"""The .part files being written, removed by :func:`cancel_on_signals` if the job is cancelled."""
_pending_lock = threading.Lock()

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
    finals = [None if p is None else Path(p) for p in paths]
    temps: list[Path | None] = []
    try:
        for final in finals:
            temps.append(None if final is None else _new_part(final))
        try:
            yield list(temps)
            mode = 0o666 & ~_current_umask()  # mkstemp made them private
            for temp in temps:
                if temp is not None:
                    os.chmod(temp, mode)
            for temp, final in zip(temps, finals):
                if temp is not None:
                    os.replace(temp, final)
        except OSError as exc:
            raise _naming_final_path(exc, temps, finals) from exc
    finally:
        for temp in temps:
            if temp is not None:
                temp.unlink(missing_ok=True)
                with _pending_lock:
                    _pending.discard(temp)


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
        path.unlink(missing_ok=True)


def _new_part(final: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
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
