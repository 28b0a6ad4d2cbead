"""Reconciling: a box's record brought in line with what its directory and
the process table say.  The directory is the truth about a run (``shim``:
who holds its lock; ``exits``: how its main command ended)."""

from __future__ import annotations

import time
from pathlib import Path

from . import boxdir
from .exits import read_exit
from .shim import shim_pid
from .status import ENDED, LIVE, BoxStatus
from .store import DELETE, BoxRecord, Change, Proc, Store, boot_id, removes


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
        supervisor = boxdir.SUPERVISORS.get(record.config.get("engine", "ns"), "boxlite-shim")
        why = (
            f"its supervisor, {supervisor}{pid}, ended without being asked to stop "
            f"({boxdir.SHIM_LOG} may say why)"
        )
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
