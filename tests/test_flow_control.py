"""Flow control: a stream nobody reads stops its own writers, and only them.

Each stream of an execution has a window of bytes the box may deliver before
a reader takes them.  These tests stall one reader and check that everything
else keeps moving, that the host holds no more than the window, and that
nothing is lost once the reader comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

import boxlite_ffi
from boxlite_ffi import Outcome, aio

WINDOW = 64 << 10


def buffered(stream: boxlite_ffi.OutputStream) -> int:
    """Bytes delivered into a stream and not yet taken by a reader."""
    with stream._cond:
        return sum(map(len, stream._chunks))


def settle(stream: boxlite_ffi.OutputStream, seconds: float = 0.5) -> int:
    """Wait until nothing more arrives for a while; the bytes held then."""
    held, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        now = buffered(stream)
        if now == held:
            return held
        held = now
        time.sleep(seconds)
    raise AssertionError("the stream kept growing")


def test_an_unread_stream_stops_its_writer_at_the_window(box: boxlite_ffi.Box) -> None:
    # stderr says when stdout's 8 MB went through: not while nobody reads it.
    script = "head -c 8000000 /dev/zero; echo wrote-all >&2"
    execution = box.exec(["sh", "-c", script], output_window=WINDOW)
    held = settle(execution.stdout)
    assert 0 < held <= WINDOW
    assert buffered(execution.stderr) == 0 and not execution.done
    # The reader comes back: everything arrives, then the rest of the script.
    assert execution.stdout.read() == bytes(8_000_000)
    assert execution.stderr.read() == b"wrote-all\n"
    assert execution.wait(timeout=10).ok


def test_a_stalled_reader_holds_up_nobody_else(
    rt: boxlite_ffi.Runtime, box: boxlite_ffi.Box, rootfs: Path
) -> None:
    stalled = box.exec(["yes", "stalled"], output_window=WINDOW)
    with rt.create(rootfs=rootfs) as other:
        digests = {}

        def stream(name: str, target: boxlite_ffi.Box) -> None:
            execution = target.exec(["sh", "-c", "head -c 50000000 /dev/urandom | tee /tmp/o"])
            digest = hashlib.sha256()
            for chunk in execution.stdout:
                digest.update(chunk)
            expected = target.run(["sha256sum", "/tmp/o"]).stdout.split()[0].decode()
            digests[name] = (digest.hexdigest(), expected)

        threads = [
            threading.Thread(target=stream, args=("same box", box)),
            threading.Thread(target=stream, args=("other box", other)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(digests) == 2
        assert all(got == want for got, want in digests.values())
    # The stalled one stayed within its window the whole time.
    assert buffered(stalled.stdout) <= WINDOW and not stalled.done
    stalled.close()
    assert stalled.wait(timeout=10).outcome is Outcome.FORCE_CLOSED


def test_wait_collects_what_nobody_reads(box: boxlite_ffi.Box) -> None:
    script = "head -c 20000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo end"
    result = box.exec(["sh", "-c", script], output_window=WINDOW).wait(timeout=30)
    assert result.ok
    assert result.stdout == bytes(20_000_000) + b"end\n"
    assert result.stderr == bytes(3_000_000)


def test_run_with_input_larger_than_the_window_does_not_deadlock(box: boxlite_ffi.Box) -> None:
    # cat writes its output before it has read all its input.
    data = bytes(range(256)) * (40 << 10)  # 10 MiB
    result = box.run(["cat"], input=data)
    assert result.ok and result.stdout == data


def test_output_before_a_timeout_waits_for_its_reader(box: boxlite_ffi.Box) -> None:
    script = "head -c 1000000 /dev/zero; sleep 100"
    execution = box.exec(["sh", "-c", script], timeout=0.3, output_window=WINDOW)
    time.sleep(1.0)  # the timeout struck while the reader was away
    assert not execution.done  # its Exit comes after the output it owes
    assert execution.stdout.read() == bytes(1_000_000)
    assert execution.wait(timeout=10).outcome is Outcome.TIMED_OUT


def test_ordered_output_acknowledges_each_stream(box: boxlite_ffi.Box) -> None:
    script = (
        "for i in 1 2 3 4 5 6 7 8; do head -c 100000 /dev/zero; head -c 100000 /dev/zero >&2; done"
    )
    execution = box.exec(["sh", "-c", script], ordered_output=True, output_window=WINDOW)
    assert execution.output._chunks is not None
    time.sleep(0.5)
    with execution.output._cond:
        held = sum(len(c.data) for c in execution.output._chunks)
    assert held <= 2 * WINDOW
    totals = {"stdout": 0, "stderr": 0}
    for chunk in execution.output:
        totals[chunk.stream] += len(chunk.data)
    assert totals == {"stdout": 800_000, "stderr": 800_000}
    assert execution.wait(timeout=10).ok


def test_a_terminal_is_flow_controlled_too(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["head", "-c", "2000000", "/dev/zero"], tty=True, output_window=WINDOW)
    assert 0 < settle(execution.stdout) <= WINDOW
    assert len(execution.stdout.read()) == 2_000_000
    assert execution.wait(timeout=10).ok


def test_asyncio_readers_acknowledge_as_they_go(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    async def main() -> tuple[int, boxlite_ffi.ExecResult]:
        async with aio.Runtime(rt.home) as art, await art.create(rootfs=rootfs) as abox:
            execution = await abox.exec(
                ["head", "-c", "5000000", "/dev/zero"], output_window=WINDOW
            )
            total = 0
            async for chunk in execution.stdout:
                total += len(chunk)
                await asyncio.sleep(0)
            return total, await execution.wait()

    total, result = asyncio.run(main())
    assert total == 5_000_000 and result.ok


class _CountingSink:
    """A sink without acknowledgements: the core acknowledges each chunk once
    the drain thread releases the batch it came in (boxlite_runtime_release)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.exit: tuple[int, int] | None = None
        self.ended = threading.Event()

    def on_output(self, stream: int, data: bytes) -> None:
        self.bytes += len(data)

    def on_exit(self, outcome: int, code: int, signal: int, error: int, os_error: int) -> None:
        self.exit = (outcome, code)
        self.ended.set()

    def on_closed(self) -> None:
        self.ended.set()


def test_the_core_acknowledges_what_the_drain_releases(box: boxlite_ffi.Box) -> None:
    box.start()
    sink = _CountingSink()
    native = box._svc.native
    handle = native.exec_start(
        box._live_handle(),
        ["head", "-c", "10000000", "/dev/zero"],
        ["PATH=/bin"],
        None,
        sink,
        window=WINDOW,
        ack_output=False,
    )
    assert sink.ended.wait(20)
    native.exec_free(handle)
    assert sink.exit == (1, 0) and sink.bytes == 10_000_000


def test_a_stream_dropped_unread_holds_nothing_back(box: boxlite_ffi.Box) -> None:
    # Only stdout is kept: stderr goes with the Execution object, unread.
    script = "head -c 3000000 /dev/zero >&2; echo done"
    stdout = box.exec(["sh", "-c", script], output_window=WINDOW).stdout
    assert stdout.read() == b"done\n"
