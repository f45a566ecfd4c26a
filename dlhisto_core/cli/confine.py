"""A step run confined: a child process that can read only its inputs and the software, write
only its outputs and a private work folder, and reach no network.

Files from others are code as much as data: a TorchScript graph, an ONNX model or a crafted
slide that drives OpenSlide's C code into a bug can do whatever the job's process may, and a
Galaxy job may read and write other users' datasets. The ``dlhisto`` command therefore runs
each step in a child process confined with Linux Landlock (:mod:`landlock`; no root needed):

- read and run: the step's input files, Python and its packages, the system's libraries and
  settings (``/usr``, ``/lib``, ``/etc``), ``/proc``, ``/sys`` and the devices a job uses;
- write: the hidden ``.part`` files of its outputs (made before the child starts), a private
  work folder (its ``TMPDIR`` and ``HOME``) and folders a step writes whole (OMERO fetch's
  output folder, a training checkpoint's folder);
- no TCP connections or listening (except the OMERO steps) and no signals to other processes.

The parent stays unconfined and does what the child cannot: it moves the outputs into place,
together, only when the child succeeded (:func:`outputs.commit`, under a lock on their folders
so that runs writing the same outputs at once never mix them); it turns a crash of the child
(a native abort or segfault, the kernel's out-of-memory killer) into one line and no output;
and it kills a child that has not ended :data:`GRACE_SECONDS` after SIGTERM (a native loop that
never returns to Python), so that a cancelled job always ends, leaving nothing.

Confinement needs Landlock in the kernel (Linux 5.13 and later; most distributions enable it).
Where it has none, the step still runs in a child (crashes and cancellation as above), without
the file and network rules: ``DLHISTO_CONFINEMENT=required`` refuses to run instead, and
``DLHISTO_CONFINEMENT=off`` runs the step in the command's own process (for debugging).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import landlock
from ..io import outputs
from ..base.errors import InputError, one_line

GRACE_SECONDS = 3.0
"""How long a cancelled child may take to clean up before it is killed."""
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys",
               "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")
"""Read-only everywhere: the system's programs, libraries and settings, process and hardware information."""
DEVICES = ("/dev/shm", "/dev/null", "/dev/dri")
"""Written by libraries as they run (shared memory of data loaders)."""
GPU_DEVICE_PREFIX = "nvidia"
NATIVE_STDERR = ".native-stderr"
"""In the work folder: what native libraries printed (GLib's warnings, onnxruntime's log), kept off
the user's stderr; its last line explains a crash."""
_PR_SET_PDEATHSIG = 1


@dataclass
class Confinement:
    """What a step may touch: files and folders it reads, folders it writes whole, its outputs
    (final paths; their .part files are writable) and whether it uses the network."""

    read: list[Path] = field(default_factory=list)
    write: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    network: bool = False

    def rules(self, work: Path, parts: list[Path]) -> landlock.Rules:
        """The Landlock rules of the child, with its work folder and the .part files of its outputs."""
        rules = landlock.Rules(network=self.network)
        for path in (*SYSTEM_READ, *_software_paths(), *self.read):
            rules.allow(path, landlock.READ)
        for path in (*DEVICES, *_gpu_devices(), work, *self.write):
            rules.allow(path, landlock.EVERYTHING)
        for part in parts:
            rules.allow(part, landlock.READ_FILE | landlock.WRITE_FILE | landlock.TRUNCATE)
        return rules


def mode() -> str:
    """``DLHISTO_CONFINEMENT``: 'auto' (default: Landlock where the kernel has it), 'required' or 'off'."""
    value = os.environ.get("DLHISTO_CONFINEMENT", "auto").strip().lower() or "auto"
    if value not in ("auto", "required", "off"):
        raise InputError(f"DLHISTO_CONFINEMENT must be auto, required or off, not '{value[:40]}'")
    return value


def run_confined(step: Callable[[], int], confinement: Confinement, fail: Callable[[str, int], int]) -> int:
    """Run ``step`` (which returns an exit status) in a confined child process and return its
    exit status; its outputs are moved into place here, after it succeeded. ``fail(message,
    status)`` prints the one line of a failure the child could not report itself."""
    required = mode() == "required"
    if required and landlock.abi_version() == 0:
        return fail("DLHISTO_CONFINEMENT=required, but this kernel has no Landlock to confine the step", 2)
    signals = _Signals()  # before anything is reserved: a SIGTERM from now on is the step's cancellation
    work, reserved = None, {}
    try:
        work = Path(tempfile.mkdtemp(prefix="dlhisto-job-"))
        reserved = outputs.reserve(confinement.outputs)
        record = work / ".committed"
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        if signals.received:
            return signals.cancelled(fail)
        pid = os.fork()
        if pid == 0:  # the child: confined, then the step; it never returns from here
            signals.restore()
            os._exit(_child(step, confinement.rules(work, list(reserved.values())), work, record, reserved, parent))
        signals.forward_to(pid)
        return _parent(pid, reserved, record, fail, signals)
    finally:
        signals.restore()
        outputs.release(reserved)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


class _Signals:
    """SIGTERM and SIGINT (and the grace timer after them) while a confined step runs: received
    before the fork, they cancel the step before it starts; after it, they are forwarded to the
    child, which gets :data:`GRACE_SECONDS` to clean up before it is killed. Handlers are process-
    wide, so no thread of the parent (a library's) can die of a signal meant for the step."""

    def __init__(self):
        self.received: list[int] = []
        self.child: int | None = None
        self.previous = {number: signal.signal(number, self._forward) for number in outputs.SIGNAL_NAMES}
        self.previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._too_late)

    def _forward(self, signum, frame) -> None:
        if not self.received:
            self.received.append(signum)
            signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)
        if self.child is not None:
            _kill(self.child, signum)

    def _too_late(self, signum, frame) -> None:
        if self.child is not None:
            _kill(self.child, signal.SIGKILL)

    def forward_to(self, pid: int) -> None:
        """From now on signals go to ``pid``; one that came before the fork goes now."""
        self.child = pid
        if self.received:
            _kill(pid, self.received[0])

    def cancelled(self, fail: Callable[[str, int], int]) -> int:
        return fail(f"cancelled by {outputs.SIGNAL_NAMES[self.received[0]]}; no output was written",
                    128 + self.received[0])

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _child(step: Callable[[], int], rules: landlock.Rules, work: Path, record: Path, reserved: dict,
           parent: int) -> int:
    status = 4
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the parent killed: so is the child
        if os.getppid() != parent:  # it was killed before that took effect
            return 143
        try:
            landlock.restrict_self(rules)
        except OSError:  # e.g. a container whose seccomp profile refuses Landlock's calls
            if mode() == "required":
                raise
        for variable in ("TMPDIR", "HOME", "MPLCONFIGDIR"):  # matplotlib makes its font list there
            os.environ[variable] = str(work)
        tempfile.tempdir = str(work)
        outputs.defer_commits(reserved, record)
        _native_stderr_to(work / NATIVE_STDERR)
        status = step()
    except BaseException as exc:  # noqa: BLE001 - nothing may escape a forked child
        print(f"dlhisto: error: the step could not start confined ({exc})", file=sys.stderr)
        status = 4
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _native_stderr_to(path: Path) -> None:
    """Send what C libraries write to file descriptor 2 into ``path``; Python's own stderr (the
    step's one line) still reaches the user."""
    user_stderr = os.dup(2)
    native = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.dup2(native, 2)
    os.close(native)
    sys.stderr = open(user_stderr, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def _parent(pid: int, reserved: dict, record: Path, fail: Callable[[str, int], int], signals: _Signals) -> int:
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status == 0:
        ready = record.read_text().splitlines() if record.exists() else []
        outputs.commit([(reserved[final], Path(final)) for final in ready if final in reserved])
        return 0
    if signals.received and status < 0:
        return signals.cancelled(fail)
    if status < 0:
        return fail(_crash_message(-status, _last_line(record.with_name(NATIVE_STDERR))), 128 - status)
    return status


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _crash_message(signum: int, native: str) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        return (f"the step was killed ({name}), most likely by the system for using too much memory; "
                "no output was written")
    said = f" ({one_line(native, 200)})" if native else ""
    return (f"the step crashed ({name}) in native code (a slide reader, a model's operator or a library) on "
            f"these inputs{said}; no output was written")


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _software_paths() -> list[str]:
    """Python, its packages and this package, wherever they are installed; the libraries of
    LD_LIBRARY_PATH."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[1])}  # parents[1]: dlhisto_core
    cwd = os.getcwd()
    paths |= {p for p in sys.path if p and os.path.abspath(p) != cwd}
    paths |= {p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p}
    return sorted(paths)


def _gpu_devices() -> list[str]:
    try:
        return [f"/dev/{name}" for name in os.listdir("/dev") if name.startswith(GPU_DEVICE_PREFIX)]
    except OSError:
        return []
