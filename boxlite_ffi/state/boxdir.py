"""A box directory's files: their names (one definition for Python; the C
side writes the same, tests/test_facts.py checks them), the marker that
makes a directory a box's, and the specification from which its record can
be rebuilt.

``<dir>/.boxlite-box`` (``boxlite_box_marker()``, include/boxlite.h) is
written right after the directory is made; the native core refuses a box
directory without it, so a wrong path is never chmodded or written to.

``<dir>/box.json`` is the box's specification: everything its record holds
that is not a fact about a run (id, name, configuration with the image
reference and resolved layers, detached, created, creator), as one JSON
object::

    {"kind": "boxlite-box", "version": 1, "id": ..., "name": ...,
     "detached": ..., "created": ..., "owner": "pid:ticks:boot" | null,
     "config": {...}}

It is written (temporary file, fsync, rename, fsync of the directory) once
the record is committed, and again whenever the record's durable part
changes; a reader takes any version up to ``VERSION`` (later fields it does
not know are ignored: snapshots and clones may add them), and refuses a
later one.

What the two files prove, for the sweep of directories with no record: a
directory with the marker and no specification is an unfinished create
(the record is committed before the specification is written) or a
removal that got as far as deleting the specification (its first step):
garbage.  One with a specification is a box, whatever the store says.
A warm pool's box (``store.POOLED``) gets its specification only when a
create takes it: until then it is the runtime's, garbage once its record
is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from .._native import ffi, lib
from ..errors import os_errors
from ..tree import remove_tree
from .store import BoxRecord, Proc

MARKER = ffi.string(lib.boxlite_box_marker()).decode()
SPEC = "box.json"
# Written by the shim (native/shim): the lock it holds while it lives, its
# agent's socket, the main command's end and logs, the cgroups it made.
LOCK = "lock"
AGENT_SOCKET = "agent.sock"
EXIT = "exit"
CGROUPS = "cgroups"
SHIM_LOG = "shim.log"
# Each engine's supervisor of a box, which holds its lock (native/engine/*.c).
SUPERVISORS = {"ns": "boxlite-shim", "vm": "boxlite-vmm"}
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
# Written by the runtime (state/disk.py), mounted by the shim.
DISK_IMAGE = "disk.img"
KIND = "boxlite-box"
VERSION = 1
# Directories a sweep moved aside, to delete: garbage whatever they hold.
GONE_PREFIX = ".gone-"


class SpecError(ValueError):
    """A specification file that cannot be read or is not one we know."""


def make(directory: Path) -> None:
    """Make the box directory, closed to others, and mark it as one."""
    with os_errors(f"making box directory {directory}"):
        directory.mkdir(mode=0o700)
        fd = os.open(directory / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)


def mark(directory: Path) -> None:
    """Mark an existing box directory (one made before markers existed)."""
    with os_errors(f"marking box directory {directory}"):
        fd = os.open(directory / MARKER, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)


def write_spec(directory: Path, record: BoxRecord, *, durable: bool = True) -> None:
    """Write the box's specification atomically (see the module's doc).
    ``durable=False`` skips the fsyncs, for a box that cannot outlive a
    power cut anyway: one that is not detached goes with its owner, which
    a power cut ends, so the next open deletes it whatever its file says."""
    spec = {
        "kind": KIND,
        "version": VERSION,
        "id": record.id,
        "name": record.name,
        "detached": record.detached,
        "created": record.created,
        "owner": record.owner.encode() if record.owner else None,
        "config": record.config,
    }
    data = json.dumps(spec, indent=1, sort_keys=True).encode()
    temp = directory / f".{SPEC}.{os.urandom(4).hex()}"
    with os_errors(f"writing the specification of box {record.id}"):
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, directory / SPEC)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if durable:
            _sync_dir(directory)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_spec(directory: Path) -> BoxRecord:
    """The record a specification describes (status ``configured``: the
    facts of a run are the directory's, settled afterwards).  ``SpecError``
    for one that is missing, malformed, of another box or of a later version."""
    try:
        spec: Any = json.loads((directory / SPEC).read_bytes())
    except (OSError, ValueError) as exc:
        raise SpecError(f"{directory / SPEC}: {exc}") from None
    if not isinstance(spec, dict) or spec.get("kind") != KIND:
        raise SpecError(f"{directory / SPEC} is not a box specification")
    version = spec.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise SpecError(f"{directory / SPEC}: version {version!r}, this runtime reads 1..{VERSION}")
    try:
        record = BoxRecord(
            _typed(spec, "id", str),
            spec.get("name"),
            _typed(spec, "config", dict),
            bool(spec.get("detached")),
            float(spec["created"]),
            owner=Proc.decode(spec.get("owner")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{directory / SPEC}: {exc!r}") from None
    if record.id != directory.name:
        raise SpecError(f"{directory / SPEC} describes box {record.id}, not {directory.name}")
    return record


def _typed(spec: dict[str, Any], key: str, kind: type) -> Any:
    value = spec[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


def has_spec(directory: Path) -> bool:
    return (directory / SPEC).exists()


def is_garbage(directory: Path) -> bool:
    """Whether a directory with no live record is provably no box's: moved
    aside already, or marked without a specification (module doc)."""
    if directory.name.startswith(GONE_PREFIX):
        return True
    return (directory / MARKER).is_file() and not (directory / SPEC).exists()


def discard(directory: Path) -> None:
    """Delete a removed box's directory: its specification first, so that a
    crash half-way leaves a directory the sweep knows for garbage."""
    with contextlib.suppress(FileNotFoundError):
        (directory / SPEC).unlink()
    remove_tree(directory)


def move_aside(directory: Path) -> Path:
    """Rename a garbage directory out of the ids' way, to delete later (a
    crash before that leaves it for the next sweep)."""
    aside = directory.with_name(f"{GONE_PREFIX}{os.urandom(4).hex()}-{directory.name}")
    with contextlib.suppress(FileNotFoundError):
        directory.rename(aside)
    return aside
