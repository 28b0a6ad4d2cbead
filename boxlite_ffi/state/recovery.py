"""``Runtime.recover`` / ``boxlite recover``: the way back from a lost or
damaged store, rebuilt from what the home itself holds.

- A store that is damaged (or empty, or not a file) is moved aside as
  ``boxlite.db.lost-<time>`` (its WAL and -shm with it), never deleted, and
  a new one made.  Names (tags) still readable from it are kept.
- Every box directory with a specification (``boxdir``) and no record gets
  one again, in the state its directory shows: running when a shim holds
  its lock (left running, its layer untouched), exited or failed from its
  ``exit`` file, stopped if it ran before, configured otherwise.  A creator
  still alive stays its owner; recovery itself deletes nothing.
- Every image whose manifest and parts are in the cache gets its record;
  tags only the store knew are reported lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AlreadyExistsError, BoxliteError, StoreCorruptError, StoreLostError
from ..home import holds_state, store_path
from ..image import Images
from ..image.reference import normalize
from . import boxdir
from .exits import read_exit
from .shim import shim_pid
from .status import BoxStatus
from .store import BoxRecord, Proc, Store


@dataclass(frozen=True)
class RecoveredBox:
    id: str
    name: str | None
    status: BoxStatus
    note: str | None = None  # what recovery changed or could not restore


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover`` did.  ``store_moved_to``: where the old store went
    (None when it was sound and kept); ``boxes``: records rebuilt;
    ``images``: image ids recorded again; ``lost_tags``: names that pointed
    at images but could not be restored (only the old store knew them);
    ``skipped``: box directories left as they are, and why."""

    store_moved_to: Path | None
    boxes: tuple[RecoveredBox, ...]
    images: tuple[str, ...]
    lost_tags: tuple[str, ...]
    skipped: tuple[tuple[Path, str], ...]


def recover(home: Path) -> RecoveryReport:
    path = store_path(home)
    moved = None
    try:
        store = Store(path, create=not holds_state(home))
    except (StoreLostError, StoreCorruptError):
        moved = _move_aside(path)
        store = Store(path, create=True)
    try:
        tags = _salvage_tags(moved) if moved else {}
        specs, skipped = _box_specs(home, store)
        known = {tag for image in store.images() for tag in image.tags}
        images, unplaced = Images(home / "images", store).rebuild(
            {t: i for t, i in tags.items() if t not in known}
        )
        known = {tag for image in store.images() for tag in image.tags}
        # A name a box was made from may since point elsewhere: not guessed.
        lost = set(unplaced) | {n for r in specs if (n := _image_name(r)) and n not in known}
        boxes = tuple(_restore(store, home / "boxes" / r.id, r) for r in specs)
    finally:
        store.close()
    return RecoveryReport(moved, boxes, tuple(images), tuple(sorted(lost)), tuple(skipped))


def _image_name(record: BoxRecord) -> str | None:
    """The image name a box was made from (not a path, not the host image)."""
    ref = record.config.get("image")
    if not record.config.get("image_id") or not isinstance(ref, str) or ref.startswith("/"):
        return None
    try:
        return normalize(ref)
    except BoxliteError:
        return None


def _move_aside(path: Path) -> Path | None:
    """Rename the store and its WAL and -shm files (kept together, so the
    old store stays readable) out of the way."""
    if not os.path.lexists(path):
        return None
    aside = path.with_name(f"{path.name}.lost-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    for suffix in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _salvage_tags(old: Path) -> dict[str, str]:
    """The names a damaged store still gives (name -> image id); none if it
    gives nothing.  Read-only: the old store is never written."""
    try:
        db = sqlite3.connect(f"{old.as_uri()}?mode=ro", uri=True)
        try:
            return {str(n): str(i) for n, i in db.execute("SELECT name, image FROM tags")}
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def _box_specs(home: Path, store: Store) -> tuple[list[BoxRecord], list[tuple[Path, str]]]:
    """The specifications of box directories that have no record."""
    known = store.ids()
    specs, skipped = [], []
    for directory in sorted((home / "boxes").iterdir()):
        if directory.name.startswith(boxdir.GONE_PREFIX) or directory.name in known:
            continue
        try:
            specs.append(boxdir.read_spec(directory))
        except boxdir.SpecError as exc:
            skipped.append((directory, str(exc)))
    return specs, skipped


def _restore(store: Store, directory: Path, spec: BoxRecord) -> RecoveredBox:
    record, notes = _as_found(spec, directory), []
    if spec.owner is not None and record.owner is None:
        notes.append("kept, though its creator is gone (it was not detached)")
    try:
        store.restore(record)
    except AlreadyExistsError:
        record = dataclasses.replace(record, name=None)
        notes.append(f"its name {spec.name!r} is taken: recorded without one")
        store.restore(record)
    return RecoveredBox(record.id, record.name, BoxStatus(record.status), "; ".join(notes) or None)


def _as_found(spec: BoxRecord, directory: Path) -> BoxRecord:
    """The spec's record in the state its directory shows."""
    owner = spec.owner if spec.owner is not None and spec.owner.alive() else None
    fields: dict[str, Any] = {"owner": owner}
    pid = shim_pid(directory)
    if pid is not None:
        fields |= {"status": BoxStatus.RUNNING, "shim": Proc.of(pid)}
    elif ended := read_exit(directory):
        fields |= ended
    elif (directory / "upper").exists() or (directory / "disk").exists():
        why = "recovered: how its last run ended is unknown"
        fields |= {"status": BoxStatus.STOPPED, "reason": why}
    return dataclasses.replace(spec, **fields)
