"""``ServerState``: what one server holds while it runs (one per app, made
by the app's lifespan): the settings, the ``Runtime`` on the home, the
server's database (idempotency, box extras), its counters, when each box
was last used, and the executions half's ``sessions``.

The hook for the executions half: ``sessions`` is None until
``app.create_app`` finds ``boxlite_ffi.server.sessions`` and sets it to
``sessions.open_sessions(state)``.  What this half asks of it is
``SessionsView``: ``count(box_id)`` for the metrics and for auto_stop (a box
with a running execution is never idle), and ``close()`` at shutdown.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request

from ..box import Box
from ..errors import InvalidArgumentError, NotFoundError
from ..runtime import Runtime
from .db import ServerDb
from .extras import ExtrasTable
from .idempotency import Idempotency
from .settings import Settings

MAX_BOX_ID = 128  # the contract's bound on a box_id


@dataclass(frozen=True)
class ExecCounts:
    """Executions of one box (or, for ``box_id=None``, of every box)."""

    started: int = 0  # monotonic
    failed: int = 0  # monotonic: failed to start, lost, or ended by a server error
    running: int = 0
    stdin_bytes: int = 0  # monotonic
    output_bytes: int = 0  # monotonic


class SessionsView(Protocol):
    def count(self, box_id: str | None) -> ExecCounts: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class Counters:
    """The runtime metrics' monotonic counters, since this server started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.boxes_created = 0
        self.boxes_failed = 0
        self.boxes_stopped = 0

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class ServerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings.home, engine=settings.engine)  # makes the home
        try:
            self.db = ServerDb(settings.serve_db)
        except BaseException:
            self.runtime.close()
            raise
        self.idempotency = Idempotency(self.db, settings.idempotency_ttl_seconds)
        self.extras = ExtrasTable(self.db, settings.auto_stop_default_seconds)
        self.counters = Counters()
        self.sessions: SessionsView | None = None
        self._used: dict[str, float] = {}
        self._used_lock = threading.Lock()
        self.started = time.monotonic()

    def close(self) -> None:
        if self.sessions is not None:
            self.sessions.close()
        self.runtime.close()

    def box(self, box_id: str) -> Box:
        """The box of this id or name (exactly: no id prefixes over HTTP),
        marked as used now; ``NotFoundError`` when there is none."""
        if not 1 <= len(box_id) <= MAX_BOX_ID or not box_id.isprintable():
            raise InvalidArgumentError(f"box id {box_id!r}: 1 to {MAX_BOX_ID} characters")
        box = self.runtime.get(box_id)
        if box_id not in (box.id, box.name):
            raise NotFoundError(f"box not found: {box_id}")
        self.touch(box.id)
        return box

    def touch(self, box_id: str) -> None:
        with self._used_lock:
            self._used[box_id] = time.monotonic()

    def idle_since(self, box_id: str) -> float:
        """When the box was last used through this server (monotonic; the
        server's start for a box it has not seen used)."""
        with self._used_lock:
            return self._used.get(box_id, self.started)

    def forget(self, box_id: str) -> None:
        with self._used_lock:
            self._used.pop(box_id, None)
        self.extras.drop(box_id)

    def exec_counts(self, box_id: str | None) -> ExecCounts:
        return self.sessions.count(box_id) if self.sessions is not None else ExecCounts()


def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the app's state."""
    state: ServerState = request.app.state.server
    return state


# A route's parameter ``state: State`` is the app's ServerState.
State = Annotated[ServerState, Depends(get_state)]
