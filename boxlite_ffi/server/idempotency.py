"""``Idempotency-Key``: a repeated key gets the first result, not a second run.

A key names one request: its method, path and body (the fingerprint).  The
first success is kept in the server's database (so it survives a restart)
for ``Settings.idempotency_ttl_seconds``; the same key with another
request is refused (422, the contract's answer).  Failures are not kept: a
client retries them with the same key.  Two requests with one key at once
are run one after the other (a lock per key), so the second replays the
first's result.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..boxapi import IDEMPOTENCY_HEADER
from ..errors import InvalidArgumentError
from .db import ServerDb

HEADER = IDEMPOTENCY_HEADER
MAX_KEY = 255


class IdempotencyKeyReusedError(InvalidArgumentError):
    """The key was used for another request (422)."""


@dataclass(frozen=True)
class Reply:
    """A route's result, as kept for a replay."""

    status: int
    body: Any = None  # JSON-able; None: no body
    headers: dict[str, str] = field(default_factory=dict)


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY or not key.isascii() or not key.isprintable():
        raise InvalidArgumentError(f"{HEADER}: 1 to {MAX_KEY} printable ASCII characters")
    return key


class Idempotency:
    def __init__(self, db: ServerDb, ttl: float) -> None:
        self._db = db
        self._ttl = ttl
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def run(self, key: str | None, print_: str, call: Callable[[], Reply]) -> Reply:
        """``call()``'s reply; for a key seen before with this fingerprint,
        the reply it had then."""
        if key is None:
            return call()
        key = check_key(key)
        lock = self._hold(key)
        try:
            with lock:
                kept = self._lookup(key, print_)
                if kept is not None:
                    return kept
                reply = call()
                if 200 <= reply.status < 300:
                    self._keep(key, print_, reply)
                return reply
        finally:
            self._release(key)

    def _hold(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
            return lock

    def _release(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def _lookup(self, key: str, print_: str) -> Reply | None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM idempotency WHERE created < ?", (time.time() - self._ttl,))
            row = db.execute(
                "SELECT fingerprint, status, body, headers FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        if row[0] != print_:
            raise IdempotencyKeyReusedError(f"{HEADER} {key!r} was used for another request")
        body = json.loads(row[2]) if row[2] is not None else None
        return Reply(row[1], body, json.loads(row[3]))

    def _keep(self, key: str, print_: str, reply: Reply) -> None:
        body = json.dumps(reply.body) if reply.body is not None else None
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (key, print_, reply.status, body, json.dumps(reply.headers), time.time()),
            )
