"""(auto_stop: to come.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from .state import ServerState


@contextlib.asynccontextmanager
async def running(state: ServerState) -> AsyncIterator[None]:
    yield
