"""Linux Landlock through its three system calls: a process gives up, for itself and every process
it starts, all file access but the paths it lists, TCP connections and listening, and signals
to processes outside its domain. No root is needed; the kernel needs Landlock (5.13 and later;
network rules 6.7, scopes 6.12), and each newer right is used where the kernel has it.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
"""landlock_create_ruleset, landlock_add_rule, landlock_restrict_self."""
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER = 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights a rule on a file (not a folder) may hold."""
READ = READ_FILE | READ_DIR | EXECUTE
"""Read and run what is below a path."""
EVERYTHING = (1 << 16) - 1
"""Every file right Landlock knows (a folder the process owns)."""
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass
class Rules:
    """What a confined process may still do: ``paths`` maps a file or folder to its rights (a
    folder's apply to everything below it); ``network`` keeps TCP."""

    paths: dict[Path, int] = field(default_factory=dict)
    network: bool = False

    def allow(self, path, rights: int) -> None:
        """Add ``rights`` on ``path`` (ignored when it does not exist)."""
        path = Path(path)
        if path.exists():
            self.paths[path] = self.paths.get(path, 0) | rights


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or this machine's is not known)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(version, 0)


def restrict_self(rules: Rules) -> int:
    """Confine this process (and what it starts later) to ``rules``; returns the ABI used (0:
    the kernel has no Landlock and nothing was restricted). Irreversible.

    Only the calling thread and threads started after it are confined: call it before the
    process has other threads (e.g. first thing in a new child process).
    """
    abi = abi_version()
    if abi == 0:
        return 0
    create, add_rule, restrict = _SYSCALLS[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    handled_fs = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(handled_fs, 0 if rules.network or abi < 4 else NET_BIND_TCP | NET_CONNECT_TCP,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"Landlock refused the ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for path, rights in rules.paths.items():
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # gone since it was listed: nothing to allow
            try:
                allowed = rights & handled_fs & (_FILE_RIGHTS if not os.path.isdir(path) else ~0)
                rule = _PathBeneathAttr(allowed, fd)
                if libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"Landlock refused the rule for {path}: {os.strerror(error)}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 or libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"Landlock could not confine the process: {os.strerror(error)}")
    finally:
        os.close(ruleset)
    return abi
