"""The box's shim as its directory shows it: whoever holds a write lock on
``<dir>/lock`` is the box's shim (a second shim cannot start), so the lock
both finds the shim and proves a pid is still it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
from pathlib import Path

from . import boxdir

_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64 and arm64

# To a shim: kill the box now (SIGTERM: stop it gracefully).  The shim
# exits once its box's whole pid namespace is gone, unlike after a SIGKILL
# of the shim itself, which leaves the agent to die of PDEATHSIG later.
# BL_SHIM_KILL_NOW in native/core/core.h; tests/test_facts.py checks the two.
KILL_NOW = signal.SIGUSR1


def shim_pid(box_dir: Path) -> int | None:
    """The pid of the shim holding the box's lock, None when no shim runs."""
    try:
        fd = os.open(box_dir / boxdir.LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    return pid if l_type != fcntl.F_UNLCK and pid > 0 else None


def signal_shim(box_dir: Path, sig: int, *, wait: bool = False) -> int | None:
    """Send sig to the box's shim, checked to hold the lock once a pidfd
    pins it (so a reused pid is never signalled), and wait for its exit if
    asked.  Its pid, or None when no shim runs the box."""
    pid = shim_pid(box_dir)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        pidfd = os.pidfd_open(pid)
        try:
            if shim_pid(box_dir) == pid:
                signal.pidfd_send_signal(pidfd, sig)
                if wait:
                    select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
    return pid
