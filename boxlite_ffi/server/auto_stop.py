"""The contract's AutoStop: a box idle for its ``auto_stop`` seconds (0:
never) is stopped.  Idle means: no request about it (``ServerState.touch``,
which every box route and exec does through ``state.box``) and no execution
of this server running in it, for that long.  Only running boxes are
looked at; a stopped box starts again at its next exec (AutoResume).

One asyncio task, owned by the app's lifespan (``running``): it wakes every
``auto_stop_interval_seconds``, stops idle boxes on a worker thread (a stop
blocks for up to the box's grace), and is cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from ..errors import BoxliteError
from ..state.status import BoxStatus
from .state import ServerState

log = logging.getLogger("boxlite_ffi.server")


def idle_boxes(state: ServerState, now: float) -> list[str]:
    """Running boxes whose auto_stop has passed with nothing going on."""
    idle = []
    for info in state.runtime.list(BoxStatus.RUNNING):
        limit = state.extras.get(info.id).auto_stop
        quiet = limit and now - state.idle_since(info.id) >= limit
        if quiet and state.exec_counts(info.id).running == 0:
            idle.append(info.id)
    return idle


def sweep(state: ServerState) -> list[str]:
    """Stop every idle box; the ids stopped."""
    stopped = []
    for box_id in idle_boxes(state, time.monotonic()):
        try:
            state.runtime.get(box_id).stop()
        except BoxliteError as exc:  # removed or stopped meanwhile: nothing to do
            log.info("auto_stop of %s: %s", box_id, exc.message)
            continue
        state.counters.add("boxes_stopped")
        log.info("auto_stop: stopped idle box %s", box_id)
        stopped.append(box_id)
    return stopped


async def loop(state: ServerState) -> None:
    interval = state.settings.auto_stop_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(sweep, state)
        except Exception:  # the sweep runs on: one bad pass is logged
            log.exception("auto_stop sweep failed")


@contextlib.asynccontextmanager
async def running(state: ServerState) -> AsyncIterator[None]:
    task = asyncio.create_task(loop(state), name="boxlite auto_stop")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
