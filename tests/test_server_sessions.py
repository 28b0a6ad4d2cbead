"""Server sessions against real boxes, without HTTP: the window and its
backpressure, cursors, the exit, reaping, limits and shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi.errors import LimitExceededError
from boxlite_ffi.execution import STDERR, STDOUT
from boxlite_ffi.server.sessions import (
    STREAM_WINDOW,
    Attachment,
    Chunk,
    Exit,
    Policy,
    Session,
    Sessions,
)
from boxlite_ffi.state.exits import Outcome

WINDOW = 2 * STREAM_WINDOW  # the smallest the policy takes


def policy(**overrides: float) -> Policy:
    values: dict[str, float] = {
        "window": WINDOW,
        "orphan_grace": 60.0,
        "max_per_box": 8,
        "max_total": 16,
        "reap_step": 0.5,
    }
    values.update(overrides)
    return Policy(**values)  # type: ignore[arg-type]


def in_box(
    home: Path,
    rootfs: Path,
    body: Callable[[Sessions, boxlite_ffi.Box], Awaitable[None]],
    **p: float,
) -> None:
    """Run ``body`` on a fresh event loop with a box and sessions of ``policy(**p)``."""

    async def main() -> None:
        sessions = Sessions(policy(**p))
        try:
            await body(sessions, box)
        finally:
            await sessions.aclose()

    with boxlite_ffi.Runtime(home) as rt, rt.create(rootfs=rootfs) as box:
        asyncio.run(main())


async def drain(client: Attachment) -> tuple[dict[int, bytes], list[int], Exit]:
    """Everything a client gets until the exit: bytes per stream, stream order."""
    got = {STDOUT: b"", STDERR: b""}
    order: list[int] = []
    while True:
        item = await asyncio.wait_for(client.next(), 30)
        if isinstance(item, Exit):
            return got, order, item
        got[item.stream] += item.data
        order.append(item.stream)
        client.sent(item)


async def settle(session: Session, seconds: float = 0.5) -> tuple[int, int]:
    """What the session took once its output stopped growing for ``seconds``."""
    before = None
    while before != session.produced:
        before = session.produced
        await asyncio.sleep(seconds)
    return before


def test_output_in_order_exactly_and_the_exit(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        script = (
            "for i in 1 2 3; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done; exit 3"
        )
        session = await sessions.start(box, ["sh", "-c", script])
        got, order, end = await drain(session.attach())
        assert got[STDOUT] == b"out1\nout2\nout3\n" and got[STDERR] == b"err1\nerr2\nerr3\n"
        assert order == [STDOUT, STDERR] * 3
        assert (end.outcome, end.exit_code) == (Outcome.EXITED, 3)
        assert sessions.get(box.id, session.id).exit == end
        counts = sessions.count(box.id)
        assert (counts.started, counts.failed, counts.running) == (1, 1, 0)
        assert counts.output_bytes == 30

    in_box(home, rootfs, body)


def test_stdin_then_eof(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        session = await sessions.start(box, ["sh", "-c", "cat; echo done >&2"])
        await session.write(b"\x00binary\xff")
        session.close_stdin()
        got, _, end = await drain(session.attach())
        assert got == {STDOUT: b"\x00binary\xff", STDERR: b"done\n"} and end.exit_code == 0
        assert sessions.count(box.id).stdin_bytes == 8

    in_box(home, rootfs, body)


def test_no_client_holds_the_process_then_resumes_without_loss(home: Path, rootfs: Path) -> None:
    total = 4 * WINDOW

    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        script = f"head -c {total} /dev/urandom | tee /tmp/sent; sha256sum /tmp/sent >&2"
        session = await sessions.start(box, ["sh", "-c", script])
        held = await settle(session)
        # Blocked: the window and one chunk taken, nothing more; still running.
        assert WINDOW <= held[0] <= WINDOW + STREAM_WINDOW and not session.ended
        assert session.held == held[0] and session.window_start == (0, 0)
        got, _, end = await drain(session.attach())
        assert end.exit_code == 0 and len(got[STDOUT]) == total
        assert got[STDERR].split()[0].decode() == hashlib.sha256(got[STDOUT]).hexdigest()

    in_box(home, rootfs, body)


def test_reconnect_with_and_without_a_cursor(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        script = (
            "i=0; while [ $i -lt 400 ]; do echo line$i; echo e$i >&2; i=$((i+1)); sleep 0.002; done"
        )
        session = await sessions.start(box, ["sh", "-c", script])
        first = session.attach()
        with pytest.raises(boxlite_ffi.InvalidStateError) as busy:
            session.attach()
        assert busy.value.reason == "exec_busy"
        part = {STDOUT: b"", STDERR: b""}
        for _ in range(20):
            item = await first.next()
            assert isinstance(item, Chunk)
            part[item.stream] += item.data
            first.sent(item)
        cursor = first.cursor
        assert cursor == (len(part[STDOUT]), len(part[STDERR]))
        first.close()
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            session.attach((cursor[0] + 10**9, 0))
        # With its cursor: exactly the rest.
        second = session.attach(cursor)
        assert second.start == cursor
        rest, _, _ = await drain(second)
        whole = {s: part[s] + rest[s] for s in (STDOUT, STDERR)}
        assert whole[STDOUT] == b"".join(b"line%d\n" % i for i in range(400))
        assert whole[STDERR] == b"".join(b"e%d\n" % i for i in range(400))
        second.close()
        # Without one: from the window's start (all of it here), a repeat, no gap.
        third = session.attach()
        assert third.start == (0, 0)
        again, _, end = await drain(third)
        assert again == whole and end.exit_code == 0

    in_box(home, rootfs, body)


def test_the_window_keeps_the_reserve_for_a_cursorless_return(home: Path, rootfs: Path) -> None:
    total = 6 * WINDOW

    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        session = await sessions.start(box, ["head", "-c", str(total), "/dev/zero"])
        client = session.attach()
        got = 0
        while got < 3 * WINDOW:
            item = await client.next()
            assert isinstance(item, Chunk)
            got += len(item.data)
            client.sent(item)
        client.close()
        await settle(session)
        # What was sent last (the reserve) is still there for a client without a cursor.
        start = session.window_start[0]
        assert start <= got - session._policy.reserve and session.held <= WINDOW + STREAM_WINDOW
        back = session.attach()
        rest, _, end = await drain(back)
        assert back.start[0] == start and start + len(rest[STDOUT]) == total and end.exit_code == 0

    in_box(home, rootfs, body)


@pytest.mark.parametrize(
    ("trap", "signum"),
    [("", signal.SIGHUP), ("trap '' HUP;", signal.SIGTERM), ("trap '' HUP TERM;", signal.SIGKILL)],
)
def test_orphans_are_reaped_hup_term_kill(home: Path, rootfs: Path, trap: str, signum: int) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        # A full window too: the reaped process is blocked writing.
        session = await sessions.start(box, ["sh", "-c", f"{trap} cat /dev/zero"])
        end = await asyncio.wait_for(session.wait(), 20)
        assert (end.outcome, end.signal) == (Outcome.SIGNALED, signum)
        assert sessions.count(box.id).running == 0

    in_box(home, rootfs, body, orphan_grace=0.3)


def test_an_attached_client_is_not_reaped(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        session = await sessions.start(box, ["sleep", "1.5"])
        client = session.attach()
        end = await asyncio.wait_for(session.wait(), 20)
        assert (end.outcome, end.exit_code) == (Outcome.EXITED, 0)
        client.close()

    in_box(home, rootfs, body, orphan_grace=0.3)


def test_kill_evicts_and_the_client_sees_the_exit(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        session = await sessions.start(box, ["cat", "/dev/zero"])
        client = session.attach()
        await settle(session, 0.2)
        await sessions.kill(box.id, session.id)
        with pytest.raises(boxlite_ffi.NotFoundError):
            sessions.get(box.id, session.id)
        while not isinstance(item := await asyncio.wait_for(client.next(), 20), Exit):
            pass  # no client.sent: a killed session needs no reader to end
        assert (item.outcome, item.signal) == (Outcome.SIGNALED, signal.SIGKILL)

    in_box(home, rootfs, body)


def test_limits_per_box_and_in_all(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        first = await sessions.start(box, ["sleep", "30"])
        await sessions.start(box, ["sleep", "30"])
        with pytest.raises(LimitExceededError):
            await sessions.start(box, ["sleep", "30"])
        await sessions.kill(box.id, first.id)
        await asyncio.wait_for(first.wait(), 10)
        third = await sessions.start(box, ["true"])
        assert sessions.running(box.id) == 2
        await third.wait()
        with pytest.raises(boxlite_ffi.NotFoundError):
            sessions.get("another-box", third.id)

    in_box(home, rootfs, body, max_per_box=2)


def test_a_failed_start_is_an_exit(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        session = await sessions.start(box, ["/no/such/program"])
        end = await asyncio.wait_for(session.wait(), 10)
        assert end.outcome is Outcome.FAILED_TO_START and end.exit_code == 127
        assert end.error_message

    in_box(home, rootfs, body)


def test_shutdown_reaps_what_runs(home: Path, rootfs: Path) -> None:
    async def body(sessions: Sessions, box: boxlite_ffi.Box) -> None:
        running = await sessions.start(box, ["sh", "-c", "trap '' HUP; echo ready; sleep 60"])
        client = running.attach()
        assert isinstance(await client.next(), Chunk)  # the trap is set
        client.close()
        await sessions.aclose()
        end = running.exit
        assert end is not None and (end.outcome, end.signal) == (Outcome.SIGNALED, signal.SIGTERM)
        assert running.pump.done()
        with pytest.raises(boxlite_ffi.InvalidStateError):
            await sessions.start(box, ["true"])

    in_box(home, rootfs, body)
