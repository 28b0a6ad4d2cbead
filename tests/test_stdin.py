"""stdin: writes with backpressure, EOF, and typed errors once it is gone."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome, aio

pytestmark = pytest.mark.parity


def test_input_round_trips_byte_exact(box: boxlite_ffi.Box) -> None:
    data = os.urandom(3 << 20) + b"\0\xff\n"
    result = box.run(["cat"], input=data)
    assert result.ok and result.stdout == data
    digest = box.run(["sha256sum"], input=data).stdout.split()[0].decode()
    assert digest == hashlib.sha256(data).hexdigest()


def test_write_then_close_gives_eof(box: boxlite_ffi.Box) -> None:
    execution = box.exec(
        ["sh", "-c", "while read line; do echo got $line; done; echo eof"], stdin=True
    )
    execution.write_stdin(b"one\n")
    execution.write_stdin(b"two\n")
    execution.close_stdin()
    execution.close_stdin()  # closing twice is harmless
    assert execution.wait(timeout=10).stdout == b"got one\ngot two\neof\n"


def test_without_stdin_the_process_reads_dev_null(box: boxlite_ffi.Box) -> None:
    assert box.run(["cat"]).stdout == b""  # returns at once: EOF
    # Still running, so the refusal is about stdin, not about the end.
    with box.exec(["sleep", "5"]) as execution, pytest.raises(boxlite_ffi.InvalidStateError):
        execution.write_stdin(b"x")


def test_writes_after_close_or_exit_are_refused(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["cat"], stdin=True)
    execution.close_stdin()
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.write_stdin(b"late")
    execution.wait(timeout=10)
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.write_stdin(b"after exit")
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.close_stdin()


def test_a_process_that_does_not_read_holds_the_writer_back(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sleep", "60"], stdin=True)
    outcome: list[BaseException | None] = []

    def writer() -> None:
        try:
            # Far more than a pipe holds, and than the sockets and the
            # server's bounded stdin queue between a remote client and it.
            execution.write_stdin(b"x" * (64 << 20))
            outcome.append(None)
        except boxlite_ffi.BoxliteError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and outcome == []  # backpressure: still blocked
    execution.kill()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], boxlite_ffi.ExecClosedError)
    assert execution.wait().outcome is Outcome.SIGNALED


def test_a_process_that_stops_reading_early(box: boxlite_ffi.Box) -> None:
    result = box.run(["head", "-c", "5"], input=b"y" * (4 << 20))
    assert result.ok and result.stdout == b"yyyyy"
    execution = box.exec(["head", "-c", "1"], stdin=True)
    with pytest.raises(boxlite_ffi.ExecClosedError):
        for _ in range(64):  # stdin goes away once head exits
            execution.write_stdin(b"z" * (1 << 20))
    assert execution.wait().stdout == b"z"


def test_async_stdin(home: Path, rootfs: Path) -> None:
    async def main() -> None:
        async with aio.Runtime(home) as rt, await rt.create(rootfs=rootfs) as box:
            assert (await box.run(["wc", "-c"], input=b"12345")).stdout.strip() == b"5"
            execution = await box.exec(["cat"], stdin=True)
            await asyncio.gather(execution.write_stdin(b"a" * 100_000))
            execution.close_stdin()
            assert len((await execution.wait()).stdout) == 100_000

    asyncio.run(main())
