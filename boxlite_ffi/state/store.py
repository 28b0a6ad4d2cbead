"""The runtime home's box records: SQLite (WAL), shared by every process
that opens the same home.

A record says how to rebuild a box (its configuration), where it is in its
life (status, outcome, times) and which processes it depends on: its shim,
its owner (a box that is not detached dies with it) and the actor of an
unfinished step (a start or remove in progress).  Each is named by pid,
process start time and boot id together: a pid alone may have been reused,
and after a reboot none of them is alive.

Every change is one ``BEGIN IMMEDIATE`` transaction that reads the record
and writes what a pure function of it says, so two processes changing the
same box serialise instead of losing an update.

The store is never created over a home that holds boxes or images (a lost
store: ``StoreLostError``), never written when it is damaged
(``StoreCorruptError``), and its failures are typed (``errors.StoreError``,
``DiskFullError``), never ``sqlite3``'s.  A full disk must not keep a box
from being stopped or removed: beside the store lies a reserve file, given
up the first time such a write finds no room (see ``change``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import (
    RECOVER_HINT,
    AlreadyExistsError,
    BoxliteTimeoutError,
    DiskFullError,
    ImageInUseError,
    ImageNotFoundError,
    InvalidArgumentError,
    NotFoundError,
    RuntimeClosedError,
    StoreCorruptError,
    StoreError,
    StoreLostError,
)

_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE boxes (
            id TEXT PRIMARY KEY,
            name TEXT UNIQUE,
            config TEXT NOT NULL,
            detached INTEGER NOT NULL,
            shim_pid INTEGER,
            shim_start INTEGER,
            boot_id TEXT,
            created REAL NOT NULL
        )""",
    ],
    [
        "ALTER TABLE boxes ADD COLUMN status TEXT NOT NULL DEFAULT 'configured'",
        "ALTER TABLE boxes ADD COLUMN reason TEXT",
        "ALTER TABLE boxes ADD COLUMN exit_code INTEGER",
        "ALTER TABLE boxes ADD COLUMN exit_signal INTEGER",
        "ALTER TABLE boxes ADD COLUMN started REAL",
        "ALTER TABLE boxes ADD COLUMN finished REAL",
        "ALTER TABLE boxes ADD COLUMN shim TEXT",
        "ALTER TABLE boxes ADD COLUMN owner TEXT",
        "ALTER TABLE boxes ADD COLUMN actor TEXT",
        "ALTER TABLE boxes ADD COLUMN removed REAL",
        """UPDATE boxes SET status = 'running',
               shim = shim_pid || ':' || shim_start || ':' || boot_id
           WHERE shim_pid IS NOT NULL""",
        "ALTER TABLE boxes DROP COLUMN shim_pid",
        "ALTER TABLE boxes DROP COLUMN shim_start",
        "ALTER TABLE boxes DROP COLUMN boot_id",
    ],
    [
        """CREATE TABLE images (
            id TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            layers TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE TABLE tags (name TEXT PRIMARY KEY, image TEXT NOT NULL)",
        "CREATE INDEX tags_by_image ON tags (image)",
    ],
]
_COLUMNS = (
    "id, name, config, detached, created, status, reason, exit_code, exit_signal,"
    " started, finished, shim, owner, actor, removed"
)
BUSY_TIMEOUT_S = 10.0
# Room kept for the writes that free space (stop, remove, settle) when the
# disk is full: a few hundred WAL frames, the -shm file, a checkpoint's growth.
RESERVE_BYTES = 1 << 20
# A removed box's record stays this long, hidden, so a waiter learns its end.
TOMBSTONE_S = 600.0


@dataclass(frozen=True)
class Proc:
    """A process, named so that a reused pid or a reboot is told apart."""

    pid: int
    start_ticks: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        """The running process ``pid``, None if it is gone."""
        ticks = start_ticks(pid)
        return cls(pid, ticks, boot_id()) if ticks else None

    @classmethod
    def me(cls) -> Proc:
        me = cls.of(os.getpid())
        assert me is not None  # we are running
        return me

    def alive(self) -> bool:
        return self.boot_id == boot_id() and start_ticks(self.pid) == self.start_ticks

    def encode(self) -> str:
        return f"{self.pid}:{self.start_ticks}:{self.boot_id}"

    @classmethod
    def decode(cls, text: str | None) -> Proc | None:
        if not text:
            return None
        pid, ticks, boot = text.split(":", 2)
        return cls(int(pid), int(ticks), boot)


@dataclass(frozen=True)
class BoxRecord:
    id: str
    name: str | None
    config: dict[str, Any]
    detached: bool
    created: float
    status: str = "configured"
    reason: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    started: float | None = None
    finished: float | None = None
    shim: Proc | None = None
    owner: Proc | None = None
    actor: Proc | None = None
    removed: float | None = None  # when it was removed: hidden from lookups


@dataclass(frozen=True)
class ImageRecord:
    """An image in the cache: its manifest digest (``id``), its config
    digest, its layers (blob digest, diff_id, ChainID, size each) and its
    names."""

    id: str
    config: str
    layers: tuple[tuple[str, str, str, int], ...]
    size: int
    created: float
    tags: tuple[str, ...] = ()


# What a change returns: the fields to set; with DELETE in them, the box is
# removed as well (``change | DELETE``).
Change = dict[str, Any]
DELETE: Change = {"__delete__": True}


def removes(fields: Change | None) -> TypeGuard[Change]:
    return fields is not None and "__delete__" in fields


_LIVE_ROWS = "removed IS NULL"
# A warm pool's box (started, not yet taken by a create) has this key in
# its configuration: it is the runtime's, not the user's, so lookups and
# listings do not see it; reconciling does (pool.py).
POOLED = "pool"
_VISIBLE = f"{_LIVE_ROWS} AND json_extract(config, '$.{POOLED}') IS NULL"


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The name (field 2) may hold spaces and parentheses: count after the last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


class Store:
    """Box records of one home.  Thread-safe; every write is one transaction.

    ``create``: whether an absent or empty store may be made afresh; the
    caller knows whether the home holds anything a lost store described."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self._reserve = path.with_name("boxlite.reserve")
        self._lock = threading.Lock()
        self._closed = False
        empty = _absent_or_empty(path)
        if empty and not create:
            raise _lost(path)
        with self._errors():
            uri = f"{path.as_uri()}?mode={'rwc' if empty else 'rw'}"
            self._db = sqlite3.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        try:
            try:
                self._open(create)
            except DiskFullError:
                # A -shm or WAL to make again (the last close deleted them).
                if not self._release_reserve():
                    raise
                self._open(create)
        except BaseException:
            self._db.close()
            raise
        self.replenish()

    def _open(self, create: bool) -> None:
        with self._errors():
            # Read before anything is written: a damaged store stays as it is.
            check = self._db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError("; ".join(str(row[0]) for row in check[:3]))
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if not tables and not create:
                raise _lost(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Commits reach the WAL without an fsync each: a power cut may lose
            # the last few, never consistency, and after one every box is dead
            # anyway and reconciled at the next open.  Saves ~0.4 ms per write.
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as db:  # one migrator at a time
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for sql in statements:
                    db.execute(sql)
                db.execute(f"PRAGMA user_version = {step}")

    def replenish(self) -> None:
        """Make the reserve file if it is missing and there is room for it."""
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # there already, or a read-only home: nothing to keep
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            self._reserve.unlink(missing_ok=True)  # no room for it now: the next open tries
        finally:
            os.close(fd)

    def _release_reserve(self) -> bool:
        """Give the reserve's room to the store; False if there was none."""
        try:
            self._reserve.unlink()
        except OSError:
            return False
        return True

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with _typed_errors(self.path):
            yield

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, ours alone meanwhile, its errors typed."""
        with self._lock, self._errors():
            if self._closed:
                raise RuntimeClosedError("the runtime is closed")
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # Its last checkpoint may find no room: the WAL keeps the data.
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[BoxRecord]:
        with self._connection() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM boxes {sql}", args).fetchall()
        return [_record(row) for row in rows]

    def add(self, record: BoxRecord, also: Callable[[], None]) -> None:
        """Insert record; ``also`` (making its directory) runs in the same
        transaction, so a record and its directory appear together."""
        try:
            with self._transaction() as db:
                image = record.config.get("image_id")
                if (
                    image
                    and not db.execute("SELECT 1 FROM images WHERE id = ?", (image,)).fetchone()
                ):
                    raise ImageNotFoundError(f"image {image} was removed")
                _insert(db, record)
                also()
        except sqlite3.IntegrityError:
            raise AlreadyExistsError(f"a box named {record.name!r} exists") from None

    def restore(self, record: BoxRecord) -> None:
        """Insert a record rebuilt by recovery (its image may be gone: the
        box's layers are what it runs on).  ``AlreadyExistsError`` when its
        id or name is taken."""
        try:
            with self._transaction() as db:
                _insert(db, record)
        except sqlite3.IntegrityError:
            taken = f"box {record.id} or its name {record.name!r} is taken"
            raise AlreadyExistsError(taken) from None

    def ids(self) -> set[str]:
        """The id of every record, removed (a tombstone) or not."""
        with self._connection() as db:
            return {row[0] for row in db.execute("SELECT id FROM boxes")}

    @contextmanager
    def exclusive(self) -> Iterator[dict[str, bool]]:
        """Every box's id (whether removed: a tombstone), with every writer
        held off (no box is being created meanwhile)."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, removed IS NOT NULL FROM boxes").fetchall()
            yield {row[0]: bool(row[1]) for row in rows}

    def change(
        self,
        box_id: str,
        change: Callable[[BoxRecord], Change | None],
        *,
        frees: bool = False,
    ) -> BoxRecord:
        """Apply ``change`` (a function of the current record, which may
        raise) atomically; returns the record as it is afterwards.
        ``NotFoundError`` when there is none.  ``frees``: a write on the way
        to freeing space (a stop, a removal, a run's end), which a full disk
        must not refuse: the reserve's room is given up for it.
        ``AlreadyExistsError`` for a name another box has."""
        try:
            return self._named(box_id, change)
        except DiskFullError:
            if not frees or not self._release_reserve():
                raise
        return self._named(box_id, change)

    def _named(self, box_id: str, change: Callable[[BoxRecord], Change | None]) -> BoxRecord:
        asked: list[Change | None] = []

        def remembered(record: BoxRecord) -> Change | None:
            asked.append(change(record))
            return asked[-1]

        try:
            return self._change(box_id, remembered)
        except sqlite3.IntegrityError:  # the one unique column a change can set
            name = (asked[-1] or {}).get("name") if asked else None
            raise AlreadyExistsError(f"a box named {name!r} exists") from None

    def _change(self, box_id: str, change: Callable[[BoxRecord], Change | None]) -> BoxRecord:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM boxes WHERE id = ?", (box_id,)).fetchall()
            if not rows:
                raise NotFoundError(f"box {box_id} no longer exists")
            record = _record(rows[0])
            fields = change(record)
            if removes(fields):
                fields = {k: v for k, v in fields.items() if k != "__delete__"}
                fields |= {"removed": time.time(), "name": None}  # the name is free again
                db.execute("DELETE FROM boxes WHERE removed < ?", (time.time() - TOMBSTONE_S,))
            if not fields:
                return record
            values = _columns(fields)
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE boxes SET {assignments} WHERE id = ?", (*values.values(), box_id))
            return dataclasses.replace(record, **fields)

    def get(self, box_id: str) -> BoxRecord:
        """By full id, removed (within TOMBSTONE_S) or not."""
        records = self._query("WHERE id = ?", (box_id,))
        if not records:
            raise NotFoundError(f"box {box_id} no longer exists")
        return records[0]

    def find(self, id_or_name: str) -> BoxRecord:
        """By name, full id, or a prefix of exactly one id."""
        if not id_or_name or not isinstance(id_or_name, str):
            raise InvalidArgumentError("an empty box id")
        where = f"WHERE {_VISIBLE} AND"
        records = self._query(f"{where} (name = ? OR id = ?)", (id_or_name, id_or_name))
        if not records:
            pattern = id_or_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            records = self._query(f"{where} id LIKE ? ESCAPE '\\'", (pattern + "%",))
        if len(records) != 1:
            what = "matches several boxes" if records else "is no box"
            raise NotFoundError(f"{id_or_name!r} {what}")
        return records[0]

    def all(self, *, pooled: bool = False) -> list[BoxRecord]:
        """Every box that is not removed, oldest first; warm pools' boxes
        only when ``pooled``."""
        return self._query(f"WHERE {_LIVE_ROWS if pooled else _VISIBLE} ORDER BY created, id")

    # -- images ----------------------------------------------------------------

    def add_image(self, image: ImageRecord, tags: list[str]) -> None:
        """Record an image (again) and point ``tags`` at it (from wherever
        they pointed before)."""
        layers = json.dumps(image.layers)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO images (id, config, layers, size, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (image.id, image.config, layers, image.size, image.created),
            )
            for tag in tags:
                db.execute(
                    "INSERT OR REPLACE INTO tags (name, image) VALUES (?, ?)", (tag, image.id)
                )

    def images(self) -> list[ImageRecord]:
        """Every image, newest first."""
        with self._transaction() as db:
            return _images(db, "ORDER BY created DESC, id")

    def find_image(self, ref: str, name: str | None = None) -> ImageRecord:
        """By name (``name``, default ``ref``), else by full id (sha256:…)
        or a prefix of exactly one id (``ref``)."""
        with self._transaction() as db:
            return _find_image(db, ref, name or ref)

    def lowers_in_use(self) -> set[str]:
        """Every layer directory a box (not removed) is made of."""
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT value FROM boxes, json_each(boxes.config, '$.lowers') WHERE {_LIVE_ROWS}"
            ).fetchall()
        return {row[0] for row in rows}

    def remove_image(self, ref: str, name: str | None = None) -> tuple[str, bool]:
        """Untag ``name`` (found as by ``find_image``), and delete the image
        when it was its last name or ``ref`` named it by id: (id, deleted).
        ``ImageInUseError`` when a box (not removed) uses an image to delete."""
        name = name or ref
        with self._transaction() as db:
            image = _find_image(db, ref, name)
            if name in image.tags and len(image.tags) > 1:
                db.execute("DELETE FROM tags WHERE name = ?", (name,))
                return image.id, False
            users = db.execute(
                f"SELECT id FROM boxes WHERE {_LIVE_ROWS}"
                " AND json_extract(config, '$.image_id') = ? ORDER BY created",
                (image.id,),
            ).fetchall()
            if users:
                boxes = ", ".join(row[0] for row in users)
                raise ImageInUseError(f"image {ref!r} is used by box(es) {boxes}")
            db.execute("DELETE FROM tags WHERE image = ?", (image.id,))
            db.execute("DELETE FROM images WHERE id = ?", (image.id,))
            return image.id, True


def _images(db: sqlite3.Connection, where: str, args: tuple[Any, ...] = ()) -> list[ImageRecord]:
    rows = db.execute(
        "SELECT id, config, layers, size, created,"
        " (SELECT json_group_array(name) FROM (SELECT name FROM tags"
        "  WHERE tags.image = images.id ORDER BY name))"
        f" FROM images {where}",
        args,
    ).fetchall()
    return [
        ImageRecord(i, c, tuple(tuple(x) for x in json.loads(ls)), size, t, tuple(json.loads(tags)))
        for i, c, ls, size, t, tags in rows
    ]


def _find_image(db: sqlite3.Connection, ref: str, name: str) -> ImageRecord:
    if not ref or not isinstance(ref, str):
        raise InvalidArgumentError("an empty image reference")
    images = _images(
        db, "WHERE id IN (SELECT image FROM tags WHERE name = ?) OR id = ?", (name, ref)
    )
    if not images:
        hexdigits = ref.removeprefix("sha256:")
        if hexdigits and all(c in "0123456789abcdef" for c in hexdigits):
            images = _images(db, "WHERE id LIKE ?", ("sha256:" + hexdigits + "%",))
    if len(images) != 1:
        what = "matches several images" if images else "is no image here"
        raise ImageNotFoundError(f"{ref!r} {what}")
    return images[0]


def _insert(db: sqlite3.Connection, record: BoxRecord) -> None:
    values = _columns({f.name: getattr(record, f.name) for f in dataclasses.fields(record)})
    marks = ", ".join("?" * len(values))
    db.execute(f"INSERT INTO boxes ({', '.join(values)}) VALUES ({marks})", tuple(values.values()))


def _absent_or_empty(path: Path) -> bool:
    """No store at path, or a file of nothing (its WAL empty too).  Anything
    else there that is not a file is a damaged store, never replaced."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StoreError(f"the store {path} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise StoreCorruptError(
            f"the store {path} is not a file: nothing was changed; {RECOVER_HINT}"
        )
    if st.st_size:
        return False
    wal = path.with_name(path.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def _lost(path: Path) -> StoreLostError:
    return StoreLostError(
        f"the store {path} is missing or empty, but the home holds boxes or images:"
        f" nothing was deleted; {RECOVER_HINT}"
    )


# SQLite's primary result codes that say what is wrong with the store.
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_FULL = 13  # SQLITE_FULL
_DAMAGED = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


@contextmanager
def _typed_errors(path: Path) -> Iterator[None]:
    """SQLite's errors as boxlite's: busy past the timeout, a full disk, a
    damaged store (the way back named), or one that cannot be used."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise  # a caller's to interpret (a duplicate name)
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # Python 3.11+; primary code
        if code in _BUSY:
            raise BoxliteTimeoutError(f"the store {path} stayed busy: {exc}") from exc
        if code == _FULL:
            raise DiskFullError(f"the store {path}: the disk is full ({exc})") from exc
        damaged = type(exc) is sqlite3.DatabaseError  # not Operational: the file's content
        if code in _DAMAGED or damaged:
            raise StoreCorruptError(
                f"the store {path} is damaged ({exc}): nothing was changed; {RECOVER_HINT}"
            ) from exc
        raise StoreError(f"the store {path} cannot be used: {exc}") from exc


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """Record fields as column values."""
    out = {}
    for name, value in fields.items():
        if name == "config":
            value = json.dumps(value)
        elif name in ("shim", "owner", "actor") and value is not None:
            value = value.encode()
        out[name] = value
    return out


def _record(row: tuple[Any, ...]) -> BoxRecord:
    (box_id, name, config, detached, created, status, reason, code, sig) = row[:9]
    started, finished, shim, owner, actor, removed = row[9:]
    return BoxRecord(
        box_id,
        name,
        json.loads(config),
        bool(detached),
        created,
        status,
        reason,
        code,
        sig,
        started,
        finished,
        Proc.decode(shim),
        Proc.decode(owner),
        Proc.decode(actor),
        removed,
    )
