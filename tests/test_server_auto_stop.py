"""The contract's AutoStop, on a server state in this process (no HTTP:
the sweep the server's background task runs every few seconds)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from boxlite_ffi.server import auto_stop
from boxlite_ffi.server.extras import BoxExtras
from boxlite_ffi.server.settings import Settings
from boxlite_ffi.server.state import ExecCounts, ServerState
from boxlite_ffi.state.status import BoxStatus


class OneRunning:
    """Sessions that say one execution runs in ``busy``."""

    def __init__(self, busy: str) -> None:
        self.busy = busy

    def count(self, box_id: str | None) -> ExecCounts:
        return ExecCounts(running=1 if box_id == self.busy else 0)

    def close(self) -> None:
        pass


def test_idle_boxes_are_stopped(tmp_path: Path, rootfs: Path) -> None:
    state = ServerState(Settings(home=tmp_path / "home", token="t"))
    try:
        idle, used, never, busy = (
            state.runtime.create(rootfs=rootfs, detach=True) for _ in range(4)
        )
        for box, seconds in ((idle, 1), (used, 1), (never, 0), (busy, 1)):
            box.start()
            state.extras.put(box.id, BoxExtras(auto_stop=seconds))
        state.sessions = OneRunning(busy.id)
        assert auto_stop.sweep(state) == []  # nobody idle for a second yet
        time.sleep(1.2)
        state.touch(used.id)
        assert auto_stop.sweep(state) == [idle.id]
        assert idle.status == BoxStatus.STOPPED
        assert {b.status for b in (used, never, busy)} == {BoxStatus.RUNNING}
        assert state.counters.boxes_stopped == 1
        for box in (idle, used, never, busy):
            box.remove(force=True)
    finally:
        state.close()


def test_the_task_is_cancelled_at_shutdown(tmp_path: Path) -> None:
    state = ServerState(
        Settings(home=tmp_path / "home", token="t", auto_stop_interval_seconds=0.01)
    )
    try:

        async def run() -> None:
            async with auto_stop.running(state):
                await asyncio.sleep(0.1)  # a few sweeps, of nothing
            assert not [t for t in asyncio.all_tasks() if t.get_name() == "boxlite auto_stop"]

        asyncio.run(run())
    finally:
        state.close()
