"""The server's own SQLite file, ``<home>/serve.db`` (WAL), beside the
runtime's store: what only a server knows (idempotent results, a box's
contract settings).  Kept apart so the runtime's store and its recovery
never depend on the server.

Each call opens a short-lived connection: routes run on a thread pool, and
sqlite3 connections are not to be shared across threads.  Commits do not
wait for the disk (``synchronous=NORMAL`` under WAL): a crash of the server
loses nothing, a power cut may lose the last answers kept, which only makes
a retry of those requests run again (an idempotent request's fsync cost
half of an exec's time on this server).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError

BUSY_TIMEOUT_S = 10.0
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT,
        headers TEXT NOT NULL,
        created REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS box_settings (
        box_id TEXT PRIMARY KEY,
        settings TEXT NOT NULL
    )""",
)


class ServerDb:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self.transaction(journal="WAL") as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def transaction(self, journal: str | None = None) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; sqlite3's errors as ``StoreError``."""
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"the server's database {self.path}: {exc}") from None
        try:
            if journal is not None:  # not within a transaction
                db.execute(f"PRAGMA journal_mode={journal}")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"the server's database {self.path}: {exc}") from None
        finally:
            db.close()
