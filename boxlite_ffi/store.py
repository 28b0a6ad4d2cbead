"""The runtime home's box records: SQLite (WAL), shared by every process
that opens the same home.

A record says how to rebuild a box (its configuration) and which shim runs
it, so another process, or this one after a restart, can find the box by id
or name and connect to it.  The shim is named by pid, process start time and
boot id together: a pid alone may have been reused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, RuntimeClosedError

_MIGRATIONS = [
    """
    CREATE TABLE boxes (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        config TEXT NOT NULL,
        detached INTEGER NOT NULL,
        shim_pid INTEGER,
        shim_start INTEGER,
        boot_id TEXT,
        created REAL NOT NULL
    )
    """,
]
BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Shim:
    pid: int
    start_ticks: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> Shim | None:
        """The running process ``pid`` as a fingerprint, None if it is gone."""
        ticks = start_ticks(pid)
        return cls(pid, ticks, boot_id()) if ticks else None

    def alive(self) -> bool:
        return self.boot_id == boot_id() and start_ticks(self.pid) == self.start_ticks


@dataclass(frozen=True)
class BoxRecord:
    id: str
    name: str | None
    config: dict[str, Any]
    detached: bool
    shim: Shim | None
    created: float


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
    """Box records of one home.  Thread-safe; every write is one transaction."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one migrator at a time
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                for step, sql in enumerate(_MIGRATIONS[version:], start=version + 1):
                    self._db.execute(sql)
                    self._db.execute(f"PRAGMA user_version = {step}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("the runtime is closed")
            return self._db.execute(sql, args).fetchall()

    def add(self, box_id: str, name: str | None, config: dict[str, Any], detached: bool) -> None:
        try:
            self._run(
                "INSERT INTO boxes (id, name, config, detached, created) VALUES (?,?,?,?,?)",
                (box_id, name, json.dumps(config), int(detached), time.time()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExistsError(f"a box named {name!r} exists") from None

    def set_shim(self, box_id: str, shim: Shim) -> None:
        self._run(
            "UPDATE boxes SET shim_pid = ?, shim_start = ?, boot_id = ? WHERE id = ?",
            (shim.pid, shim.start_ticks, shim.boot_id, box_id),
        )

    def remove(self, box_id: str) -> None:
        self._run("DELETE FROM boxes WHERE id = ?", (box_id,))

    def find(self, id_or_name: str) -> BoxRecord:
        """By name, full id, or a prefix of exactly one id."""
        if not id_or_name:
            raise InvalidArgumentError("an empty box id")
        rows = self._run("SELECT * FROM boxes WHERE name = ? OR id = ?", (id_or_name, id_or_name))
        if not rows:
            pattern = id_or_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._run("SELECT * FROM boxes WHERE id LIKE ? ESCAPE '\\'", (pattern + "%",))
        if len(rows) != 1:
            what = "matches several boxes" if rows else "is no box"
            raise NotFoundError(f"{id_or_name!r} {what}")
        return _record(rows[0])


def _record(row: tuple[Any, ...]) -> BoxRecord:
    box_id, name, config, detached, pid, ticks, boot, created = row
    shim = Shim(pid, ticks, boot) if pid else None
    return BoxRecord(box_id, name, json.loads(config), bool(detached), shim, created)
