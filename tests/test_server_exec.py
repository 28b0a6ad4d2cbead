"""Executions over HTTP and the attach WebSocket, on a real server on
loopback with real boxes: the contract's routes and frames, and our cursor."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_fixture import TOKEN, ServerProcess
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import boxlite_ffi
from boxlite_ffi.server.attach import MAX_FRAME
from boxlite_ffi.server.sessions import STREAM_WINDOW

WINDOW = 2 * STREAM_WINDOW  # the reaping server's: the smallest allowed
GRACE = 2.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def box_id(server: ServerProcess, rootfs: Path) -> Iterator[str]:
    yield from a_box(server, rootfs)


@pytest.fixture(scope="module")
def reaping(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Iterator[ServerProcess]:
    """A server with a small window and a short orphan grace."""
    home = tmp_path_factory.mktemp("reaping") / "home"
    flags = ("--attach-window", str(WINDOW), "--orphan-grace", str(GRACE))
    process = ServerProcess(home, rootfs.parent, *flags)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def reaping_box(reaping: ServerProcess, rootfs: Path) -> Iterator[str]:
    yield from a_box(reaping, rootfs)


def a_box(server: ServerProcess, rootfs: Path) -> Iterator[str]:
    """A detached box on the server's home (made here: the boxes routes are
    the other half's), found by the server in its store."""
    with boxlite_ffi.Runtime(server.home) as rt:
        made = rt.create(rootfs=rootfs, detach=True)
        made.start()  # now: the tests each check nothing of theirs is left running
        box = made.id
    yield box
    with boxlite_ffi.Runtime(server.home) as rt:
        rt.remove(box, force=True)


def start(server: ServerProcess, box: str, command: str, *args: str, **extra: Any) -> str:
    with server.client() as c:
        r = c.post(f"/v1/boxes/{box}/exec", json={"command": command, "args": list(args), **extra})
    assert r.status_code == 201, r.text
    exec_id = r.json()["execution_id"]
    assert r.headers["Location"] == f"/v1/boxes/{box}/executions/{exec_id}"
    return str(exec_id)


def sh(server: ServerProcess, box: str, script: str, **extra: Any) -> str:
    return start(server, box, "sh", "-c", script, **extra)


def ws_url(server: ServerProcess, box: str, exec_id: str, cursor: str | None = None) -> str:
    url = server.url.replace("http", "ws") + f"/v1/boxes/{box}/executions/{exec_id}/attach"
    return url + (f"?cursor={cursor}" if cursor is not None else "")


def attach(server: ServerProcess, box: str, exec_id: str, cursor: str | None = None) -> Any:
    return connect(ws_url(server, box, exec_id, cursor), additional_headers=AUTH)


async def reattach(
    server: ServerProcess, box: str, exec_id: str, cursor: str | None = None
) -> ClientConnection:
    """Attach again after a client vanished: 409 until the server noticed."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await attach(server, box, exec_id, cursor)
        except InvalidStatus as refused:
            if refused.response.status_code != 409 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class Received:
    """What one attach received: bytes per channel, their order, control frames."""

    def __init__(self) -> None:
        self.out = {1: b"", 2: b""}
        self.order: list[int] = []
        self.control: list[dict[str, Any]] = []

    @property
    def exit(self) -> dict[str, Any]:
        return next(f for f in self.control if f["type"] == "exit")

    def take(self, frame: str | bytes) -> bool:
        """Record one frame; whether it was the exit."""
        if isinstance(frame, bytes):
            self.out[frame[0]] += frame[1:]
            self.order.append(frame[0])
            return False
        self.control.append(json.loads(frame))
        return bool(self.control[-1]["type"] == "exit")


async def until_exit(ws: ClientConnection, got: Received | None = None) -> Received:
    got = got or Received()
    async for frame in ws:
        if got.take(frame):
            break
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1000
    return got


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


def info(server: ServerProcess, box: str, exec_id: str) -> dict[str, Any]:
    with server.client() as c:
        r = c.get(f"/v1/boxes/{box}/executions/{exec_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_ended(server: ServerProcess, box: str, exec_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (now := info(server, box, exec_id))["status"] == "running":
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    return now


# ---- routes -----------------------------------------------------------------------


def test_exec_output_ordered_byte_exact_and_the_exit(server: ServerProcess, box_id: str) -> None:
    script = "printf 'a\\377\\0'; sleep 0.05; printf 'b\\n' >&2; sleep 0.05; printf c; exit 7"
    exec_id = sh(server, box_id, script)

    async def main() -> Received:
        async with attach(server, box_id, exec_id) as ws:
            return await until_exit(ws)

    got = run(main())
    assert got.out == {1: b"a\xff\x00c", 2: b"b\n"} and got.order == [1, 2, 1]
    assert got.exit["exit_code"] == 7 and got.exit["boxlite_outcome"] == "exited"
    assert got.exit["boxlite_cursor"] == [4, 2]
    done = info(server, box_id, exec_id)
    assert (done["status"], done["exit_code"], done["boxlite_cursor"]) == ("completed", 7, [4, 2])
    assert done["duration_ms"] >= 100 and done["started_at"]


def test_stdin_and_stdin_eof(server: ServerProcess, box_id: str) -> None:
    exec_id = sh(server, box_id, "cat; echo end >&2")

    async def main() -> Received:
        async with attach(server, box_id, exec_id) as ws:
            await ws.send(b"\x00in\xff")
            await ws.send(b"put")
            await ws.send(json.dumps({"type": "stdin_eof"}))
            return await until_exit(ws)

    got = run(main())
    assert got.out == {1: b"\x00in\xffput", 2: b"end\n"} and got.exit["exit_code"] == 0


def test_signals_whitelisted_and_refused(server: ServerProcess, box_id: str) -> None:
    exec_id = sh(server, box_id, "trap 'echo usr1' USR1; echo ready; while :; do sleep 0.05; done")
    with server.client() as c:
        path = f"/v1/boxes/{box_id}/executions/{exec_id}"
        for refused in (9, 19, 0, 99):
            r = c.post(path + "/signal", json={"signal": refused})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_argument"
        assert c.post(path + "/signal", json={"signal": "x"}).status_code == 400

    async def main() -> Received:
        got = Received()
        async with attach(server, box_id, exec_id) as ws:
            while not got.out[1].endswith(b"ready\n"):  # the trap is set
                got.take(await ws.recv())
            with server.client() as c:
                assert c.post(path + "/signal", json={"signal": 10}).status_code == 204
            while b"usr1" not in got.out[1]:
                got.take(await ws.recv())
            await ws.send(json.dumps({"type": "signal", "sig": 9}))
            refused = json.loads(await ws.recv())
            assert refused["type"] == "error" and "signal 9" in refused["message"]
            for bad in ("{", "[]", '{"type":"nope"}', '{"type":"signal","sig":"15"}'):
                await ws.send(bad)
                assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(json.dumps({"type": "signal", "sig": 15}))
            return await until_exit(ws, got)

    got = run(main())
    assert got.out[1] == b"ready\nusr1\n"
    assert got.exit["boxlite_outcome"] == "signaled" and got.exit["boxlite_signal"] == 15
    assert got.exit["exit_code"] == 143
    assert info(server, box_id, exec_id)["status"] == "killed"
    with server.client() as c:  # the execution ended: a conflict, not a 500
        assert c.post(path + "/signal", json={"signal": 15}).status_code == 409


def test_resize_on_a_tty_only(server: ServerProcess, box_id: str) -> None:
    exec_id = sh(server, box_id, "read x; stty size", tty=True)
    plain = sh(server, box_id, "sleep 30")
    with server.client() as c:
        base = f"/v1/boxes/{box_id}/executions/"
        r = c.post(base + plain + "/resize", json={"cols": 10, "rows": 10})
        assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
        assert c.post(base + exec_id + "/resize", json={"cols": 0, "rows": 5}).status_code == 400
        assert c.post(base + exec_id + "/resize", json={"cols": 100, "rows": 30}).status_code == 204
        assert c.delete(base + plain).status_code == 204

    async def main() -> Received:
        async with attach(server, box_id, exec_id) as ws:
            await ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 50}))
            await ws.send(b"go\n")
            return await until_exit(ws)

    got = run(main())
    assert b"50 132" in got.out[1] and got.out[2] == b"" and set(got.order) == {1}


def test_exec_errors(server: ServerProcess, box_id: str) -> None:
    with server.client() as c:
        base = f"/v1/boxes/{box_id}"
        assert c.post("/v1/boxes/no-such-box/exec", json={"command": "true"}).status_code == 404
        for bad in ({}, {"command": ""}, {"command": "true", "timeout_seconds": 0}):
            assert c.post(base + "/exec", json=bad).status_code == 400
        assert c.post(base + "/exec", json={"command": "true", "bogus": 1}).status_code == 400
        assert c.post(base + "/exec", content=b"{not json").status_code == 400
        assert c.get(base + "/executions/0123456789abcdef").status_code == 404
        assert c.get(base + "/executions/..%2F..").status_code == 404
        assert c.delete(base + "/executions/nope").status_code == 404
    with httpx.Client(base_url=server.url) as anonymous:
        assert (
            anonymous.post(f"/v1/boxes/{box_id}/exec", json={"command": "true"}).status_code == 401
        )
    failed = start(server, box_id, "/no/such/program")
    end = wait_ended(server, box_id, failed)
    assert (end["status"], end["exit_code"], end["boxlite_outcome"]) == (
        "completed",
        127,
        "failed_to_start",
    )
    assert end["error_message"]
    timed = sh(server, box_id, "sleep 30", timeout_seconds=0.3)
    assert wait_ended(server, box_id, timed)["status"] == "timed_out"


def test_idempotent_exec(server: ServerProcess, box_id: str) -> None:
    key = str(uuid.uuid4())
    body = {"command": "echo", "args": ["once"]}
    with server.client() as c:
        first = c.post(f"/v1/boxes/{box_id}/exec", json=body, headers={"Idempotency-Key": key})
        again = c.post(f"/v1/boxes/{box_id}/exec", json=body, headers={"Idempotency-Key": key})
        other = c.post(
            f"/v1/boxes/{box_id}/exec", json={"command": "true"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and first.headers["Location"] == again.headers["Location"]
    assert other.status_code == 422


def test_kill_evicts_and_the_attached_client_sees_exit_then_close(
    server: ServerProcess,
    box_id: str,
) -> None:
    exec_id = start(server, box_id, "cat", "/dev/zero")

    async def main() -> Received:
        got = Received()
        async with attach(server, box_id, exec_id) as ws:
            got.take(await ws.recv())
            with server.client() as c:
                assert c.delete(f"/v1/boxes/{box_id}/executions/{exec_id}").status_code == 204
            return await until_exit(ws, got)

    got = run(main())
    assert got.exit["exit_code"] == 137 and got.exit["boxlite_signal"] == 9
    with server.client() as c:
        assert c.get(f"/v1/boxes/{box_id}/executions/{exec_id}").status_code == 404
        assert c.delete(f"/v1/boxes/{box_id}/executions/{exec_id}").status_code == 404


def test_a_second_attacher_gets_409_before_the_upgrade(server: ServerProcess, box_id: str) -> None:
    exec_id = start(server, box_id, "sleep", "30")

    async def main() -> None:
        async with attach(server, box_id, exec_id):
            with pytest.raises(InvalidStatus) as refused:
                async with attach(server, box_id, exec_id):
                    pass
            response = refused.value.response
            assert response.status_code == 409
            assert json.loads(response.body)["error"]["boxlite_code"] == "exec_busy"
        for wrong in (None, "wrong"):
            headers = {"Authorization": f"Bearer {wrong}"} if wrong else {}
            with pytest.raises(InvalidStatus) as denied:
                async with connect(ws_url(server, box_id, exec_id), additional_headers=headers):
                    pass
            assert denied.value.response.status_code == 401
        for cursor in ("x", "1", "-1,0", "999999999,0"):
            with pytest.raises(InvalidStatus) as bad:
                async with attach(server, box_id, exec_id, cursor):
                    pass
            assert bad.value.response.status_code == 400
        with pytest.raises(InvalidStatus) as unknown:
            async with attach(server, box_id, "0123456789abcdef"):
                pass
        assert unknown.value.response.status_code == 404
        async with attach(server, box_id, exec_id):  # the first one's gone: free again
            pass

    run(main())
    with server.client() as c:
        assert c.delete(f"/v1/boxes/{box_id}/executions/{exec_id}").status_code == 204


def test_reconnect_with_and_without_a_cursor(server: ServerProcess, box_id: str) -> None:
    lines = 1500
    script = f"i=0; while [ $i -lt {lines} ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"
    exec_id = sh(server, box_id, script)
    expected = {
        1: b"".join(b"o%d\n" % i for i in range(lines)),
        2: b"".join(b"e%d\n" % i for i in range(lines)),
    }

    async def main() -> tuple[Received, Received, Received]:
        first = Received()
        async with attach(server, box_id, exec_id, "0,0") as ws:
            assert json.loads(await ws.recv()) == {
                "type": "boxlite_cursor",
                "stdout": 0,
                "stderr": 0,
            }
            while len(first.order) < 5:
                assert not first.take(await ws.recv())
        # The client went away mid-stream; it comes back with what it counted.
        cursor = f"{len(first.out[1])},{len(first.out[2])}"
        async with await reattach(server, box_id, exec_id, cursor) as ws:
            start = json.loads(await ws.recv())
            assert [start["stdout"], start["stderr"]] == [len(first.out[1]), len(first.out[2])]
            rest = await until_exit(ws)
        async with await reattach(server, box_id, exec_id) as ws:  # a contract client
            again = await until_exit(ws)
        return first, rest, again

    first, rest, again = run(main())
    assert {
        s: first.out[s] + rest.out[s] for s in (1, 2)
    } == expected  # not a byte lost or repeated
    assert again.out == expected  # the whole window: all of it, here
    assert rest.exit["boxlite_cursor"] == [len(expected[1]), len(expected[2])]


def test_huge_and_invalid_frames(server: ServerProcess, box_id: str) -> None:
    exec_id = start(server, box_id, "cat")

    async def main() -> None:
        async with attach(server, box_id, exec_id) as ws:
            await ws.send("\xff not json")
            assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(b"x" * (MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009
        async with attach(server, box_id, exec_id) as ws:  # the execution lives on
            await ws.send(b"still here")
            got = Received()
            got.take(await ws.recv())
            assert got.out[1] == b"still here"

    run(main())
    with server.client() as c:
        assert c.delete(f"/v1/boxes/{box_id}/executions/{exec_id}").status_code == 204


# ---- the window, a vanished client, reaping (a server of its own) ------------------


def test_no_client_blocks_the_process_until_one_comes(
    reaping: ServerProcess,
    reaping_box: str,
) -> None:
    total = 8 * WINDOW
    exec_id = start(reaping, reaping_box, "head", "-c", str(total), "/dev/zero")

    async def main() -> Received:
        # Attached within the grace, counted: the process waited for us.
        async with attach(reaping, reaping_box, exec_id, "0,0") as ws:
            return await until_exit(ws)

    produced = []
    for _ in range(3):
        time.sleep(0.25)
        produced.append(info(reaping, reaping_box, exec_id)["boxlite_cursor"][0])
    assert produced[0] == produced[-1] and WINDOW <= produced[0] <= WINDOW + STREAM_WINDOW
    got = run(main())
    assert got.out[1] == b"\0" * total and got.exit["exit_code"] == 0


def vanish_after(server: ServerProcess, box: str, exec_id: str, frames: int) -> int:
    """A client that reads ``frames`` frames, then drops its connection
    (no close handshake, its buffers unread); what it had of stdout."""

    async def main() -> int:
        got = Received()
        ws = await attach(server, box, exec_id)
        while len(got.order) < frames:
            got.take(await ws.recv())
        ws.transport.abort()
        return len(got.out[1])

    return int(run(main()))


@pytest.mark.parametrize("with_cursor", [True, False])
def test_a_client_that_vanishes_mid_stream(
    server: ServerProcess,
    box_id: str,
    with_cursor: bool,
) -> None:
    count = 2_000_000
    exec_id = start(server, box_id, "seq", str(count))
    expected = b"".join(b"%d\n" % i for i in range(1, count + 1))
    had = vanish_after(server, box_id, exec_id, 20)

    async def main() -> Received:
        cursor = f"{had},0" if with_cursor else None
        async with await reattach(server, box_id, exec_id, cursor) as ws:
            return await until_exit(ws)

    got = run(main())
    assert got.exit["exit_code"] == 0
    if with_cursor:  # exactly the rest
        assert expected[:had] + got.out[1] == expected
    else:  # a suffix covering what the vanished client had: repeats, no gap
        assert expected.endswith(got.out[1]) and len(expected) - len(got.out[1]) <= had


def test_orphans_are_reaped_after_the_grace(reaping: ServerProcess, reaping_box: str) -> None:
    hup = sh(reaping, reaping_box, "sleep 60")
    term = sh(reaping, reaping_box, "trap '' HUP; sleep 60")
    attached = sh(reaping, reaping_box, "sleep 3")

    async def hold() -> Received:
        async with attach(reaping, reaping_box, attached) as ws:
            return await until_exit(ws)

    held = run(hold())  # attached: not reaped, it runs to its end
    assert held.exit["exit_code"] == 0
    assert wait_ended(reaping, reaping_box, hup)["boxlite_signal"] == 1
    assert wait_ended(reaping, reaping_box, term)["boxlite_signal"] == 15
