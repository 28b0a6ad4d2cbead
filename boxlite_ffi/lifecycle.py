"""A box's life: its statuses, what its directory says about it, and how a
record is reconciled with reality.

    configured -> starting -> running -> stopping -> stopped
                                      -> exited   (its main command ended)
                           -> failed  (it could not start)
                                      -> lost     (its shim died unasked, or the host restarted)
    stopped, exited, failed, lost -> starting (start again: the writable layer stays)

Removing is not a status: a removed box's record is hidden from lookups
and kept a while, so a waiter still learns how its run ended.

The directory is the truth about a run.  The shim holds a write lock on
``<dir>/lock`` while it lives (so whoever holds it is the box's shim, and a
second shim cannot start), and writes ``<dir>/exit`` when the main command
ended the box.  Records are brought in line with those facts by ``settle``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import boxdir
from .errors import Code
from .execution import Outcome
from .store import DELETE, BoxRecord, Change, Proc, Store, boot_id, removes


class BoxStatus(Code):
    CONFIGURED = "configured"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"
    LOST = "lost"  # the run ended without a stop or an end of its main command


LIVE = frozenset({BoxStatus.STARTING, BoxStatus.RUNNING, BoxStatus.STOPPING})
ENDED = frozenset({BoxStatus.STOPPED, BoxStatus.EXITED, BoxStatus.FAILED, BoxStatus.LOST})


@dataclass(frozen=True)
class BoxExit:
    """How a box's run ended (``Box.wait``).

    ``outcome`` is its main command's (EXITED with ``exit_code``, SIGNALED
    with ``signal``, FAILED_TO_START with ``reason``), LOST when the run
    ended unasked (``reason`` says how), or None when the box was stopped.  ``exit_code`` follows
    the shell: 128+n after signal n, 127/126 when the command could not be
    started.
    """

    status: BoxStatus
    outcome: Outcome | None
    exit_code: int | None
    signal: int | None
    reason: str | None
    finished: float | None

    @classmethod
    def of(cls, record: BoxRecord) -> BoxExit:
        outcome = None
        if record.status == BoxStatus.EXITED:
            outcome = Outcome.EXITED if record.exit_signal is None else Outcome.SIGNALED
        elif record.status == BoxStatus.FAILED and record.exit_code is not None:
            outcome = Outcome.FAILED_TO_START
        elif record.status == BoxStatus.LOST:
            outcome = Outcome.LOST
        return cls(
            BoxStatus(record.status),
            outcome,
            record.exit_code,
            record.exit_signal,
            record.reason,
            record.finished,
        )


@dataclass(frozen=True)
class BoxInfo:
    """A box as ``Runtime.list`` and ``Box.info`` report it."""

    id: str
    name: str | None
    image: str
    status: BoxStatus
    exit_code: int | None
    signal: int | None
    reason: str | None
    created: float
    started: float | None
    finished: float | None
    detached: bool
    auto_remove: bool
    config: dict[str, Any]

    @classmethod
    def of(cls, record: BoxRecord) -> BoxInfo:
        return cls(
            record.id,
            record.name,
            record.config.get("image", ""),
            BoxStatus(record.status),
            record.exit_code,
            record.exit_signal,
            record.reason,
            record.created,
            record.started,
            record.finished,
            record.detached,
            bool(record.config.get("auto_remove")),
            record.config,
        )


# ---- what the directory says ---------------------------------------------

_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64 and arm64


def shim_pid(box_dir: Path) -> int | None:
    """The pid of the shim holding the box's lock, None when no shim runs."""
    try:
        fd = os.open(box_dir / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    return pid if l_type != fcntl.F_UNLCK and pid > 0 else None


# To a shim: kill the box now (SIGTERM: stop it gracefully).  The shim
# exits once its box's whole pid namespace is gone, unlike after a SIGKILL
# of the shim itself, which leaves the agent to die of PDEATHSIG later.
KILL_NOW = signal.SIGUSR1


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


def read_exit(box_dir: Path) -> Change | None:
    """The end the shim recorded for the main command, as record fields."""
    try:
        what, value, millis = (box_dir / "exit").read_text().split()
        number, finished = int(value), int(millis) / 1000
    except (OSError, ValueError):
        return None
    if what == "exited":
        return {"status": BoxStatus.EXITED, "exit_code": number, "finished": finished}
    if what == "signaled":
        return {
            "status": BoxStatus.EXITED,
            "exit_code": 128 + number,
            "exit_signal": number,
            "finished": finished,
        }
    code = 127 if number == 2 else 126  # ENOENT: not found; else not executable
    reason = f"the main command could not start: {os.strerror(number)}"
    return {"status": BoxStatus.FAILED, "exit_code": code, "reason": reason, "finished": finished}


# ---- reconciling ----------------------------------------------------------


def ended(record: BoxRecord, box_dir: Path) -> Change:
    """The fields of a run that is over: what the shim recorded; else
    stopped when someone asked for it (a stop, a removal), else lost."""
    recorded = read_exit(box_dir)
    if recorded:
        return recorded
    now = time.time()
    if record.status == BoxStatus.STOPPING or record.removed:
        return {"status": BoxStatus.STOPPED, "finished": now}
    shim = record.shim
    if shim is not None and shim.boot_id != boot_id():
        why = "the host restarted while it ran"
    else:
        pid = f" (pid {shim.pid})" if shim else ""
        why = f"its supervisor, boxlite-shim{pid}, died without being asked to stop"
    return {"status": BoxStatus.LOST, "reason": why, "finished": now}


def settle(record: BoxRecord, box_dir: Path) -> Change | None:
    """What the record should say, given who is alive; DELETE for a box
    nobody may keep: its owner died, or it was auto_remove and ended."""
    status = BoxStatus(record.status)
    pid = shim_pid(box_dir)
    actor_gone = record.actor is None or not record.actor.alive()
    change: Change = {}
    if status == BoxStatus.STARTING and actor_gone:
        # Its starter died: the start got through, or it did not.
        if pid is not None:
            change = {"status": BoxStatus.RUNNING, "shim": Proc.of(pid), "actor": None}
        else:
            reason = "the process starting it died"
            change = {"status": BoxStatus.FAILED, "reason": reason, "actor": None}
    elif status in (BoxStatus.RUNNING, BoxStatus.STOPPING) and pid is None:
        change = ended(record, box_dir) | {"actor": None}
    if pid is None and not record.removed and _unkept(record, change.get("status", status)):
        return change | DELETE
    return change or None


def _unkept(record: BoxRecord, status: BoxStatus) -> bool:
    owner_gone = not record.detached and record.owner is not None and not record.owner.alive()
    return (status not in LIVE and owner_gone) or (
        status in ENDED and record.config.get("auto_remove", False)
    )


def reconcile(store: Store, box_id: str, box_dir: Path, seen: BoxRecord | None = None) -> BoxRecord:
    """Settle one record (``seen``, if just read), removing the directory of
    a box that settling removed.  Only a record that needs a change costs a
    write transaction, where it is settled again."""
    record = seen or store.get(box_id)
    if settle(record, box_dir) is None:
        return record
    removing = []

    def change(record: BoxRecord) -> Change | None:
        fields = settle(record, box_dir)
        if removes(fields):
            removing.append(True)
        return fields

    record = store.change(box_id, change, frees=True)
    if removing:
        boxdir.discard(box_dir)
    return record
