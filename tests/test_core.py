"""The core layer: drain thread, backpressure, claim-once close, registry."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi._core.tokens import TOKENS


def test_callbacks_run_only_on_the_drain_thread(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    threads: set[int] = set()
    lock = threading.Lock()

    def record(_: bytes) -> None:
        with lock:
            threads.add(threading.get_ident())

    boxes = [rt.create(rootfs=rootfs) for _ in range(3)]
    executions = [
        b.exec(
            ["sh", "-c", f"for i in $(seq 200); do echo {n}-$i; echo e$i >&2; done"],
            on_stdout=record,
            on_stderr=record,
        )
        for n, b in enumerate(boxes)
        for _ in range(4)
    ]
    done_threads: set[int] = set()
    for e in executions:
        e.exited.add_done_callback(lambda _: done_threads.add(threading.get_ident()))
        assert e.wait(timeout=60).ok
    drain = rt.native.drain_thread.ident
    assert threads == {drain}
    # Exits resolve their futures from the drain thread too (or at once here
    # if it had resolved before the callback was added).
    assert done_threads <= {drain, threading.get_ident()}
    for b in boxes:
        b.close()


def test_tiny_queue_and_slow_drainer_lose_nothing(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home, queue_capacity=2) as rt, rt.create(rootfs=rootfs) as box:
        digests = {"out": hashlib.sha256(), "err": hashlib.sha256()}
        sizes = {"out": 0, "err": 0}

        def slow(name: str):
            def consume(chunk: bytes) -> None:
                time.sleep(0.002)  # a drainer far slower than the producer
                digests[name].update(chunk)
                sizes[name] += len(chunk)

            return consume

        script = (
            "head -c 8000000 /dev/urandom > /tmp/o; head -c 3000000 /dev/urandom > /tmp/e; "
            "cat /tmp/e >&2 & cat /tmp/o; wait; sha256sum /tmp/o /tmp/e > /tmp/sums"
        )
        result = box.exec(["sh", "-c", script], on_stdout=slow("out"), on_stderr=slow("err")).wait(
            120
        )
        assert result.ok
        sums = box.run(["cat", "/tmp/sums"]).stdout.decode().split()
        assert sizes == {"out": 8_000_000, "err": 3_000_000}
        assert digests["out"].hexdigest() == sums[0]
        assert digests["err"].hexdigest() == sums[2]


def test_close_completes_everything_in_flight_once(home: Path, rootfs: Path) -> None:
    rt = boxlite_ffi.Runtime(home, workers=1)  # starts queue up behind each other
    running = rt.create(rootfs=rootfs)
    executions = [running.exec(["sleep", "60"]) for _ in range(5)]
    starting = [rt.create(rootfs=rootfs) for _ in range(4)]
    starts = [b.start_future() for b in starting]
    stop_pending = starting[-1].stop_future()  # waits for that start first
    rt.close()
    for e in executions:
        with pytest.raises(boxlite_ffi.RuntimeClosedError):
            e.wait(timeout=10)
    outcomes = []
    for f in [*starts, stop_pending]:
        exc = f.exception(timeout=10)
        outcomes.append(type(exc).__name__ if exc else "ok")
    # A start may have finished before close; everything else is closed.
    assert set(outcomes) <= {"RuntimeClosedError", "ok"}
    assert "RuntimeClosedError" in outcomes
    assert TOKENS.count(rt.native) == 0
    with pytest.raises(boxlite_ffi.RuntimeClosedError):
        rt.create(rootfs=rootfs)
    rt.close()  # idempotent
    assert list((home / "boxes").iterdir()) == []


def test_close_from_inside_a_callback(home: Path, rootfs: Path) -> None:
    rt = boxlite_ffi.Runtime(home)
    box = rt.create(rootfs=rootfs)
    closed = threading.Event()

    def close_now(_: bytes) -> None:
        if not closed.is_set():
            closed.set()
            rt.native.close()  # on the drain thread: must not deadlock

    execution = box.exec(["sh", "-c", "echo go; sleep 60"], on_stdout=close_now)
    with pytest.raises(boxlite_ffi.RuntimeClosedError):
        execution.wait(timeout=20)
    rt.close()


def test_registry_claims_exactly_once() -> None:
    owner = object()
    token = TOKENS.register(owner, "sink")
    results = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(TOKENS.claim(token))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("sink") == 1 and results.count(None) == 7


@pytest.mark.parametrize("error", [ValueError, SystemExit])
def test_a_failing_callback_is_reported_and_harms_nothing(
    rt: boxlite_ffi.Runtime,
    box: boxlite_ffi.Box,
    monkeypatch: pytest.MonkeyPatch,
    error: type[BaseException],
) -> None:
    reported: list[BaseException] = []
    monkeypatch.setattr("sys.unraisablehook", lambda args: reported.append(args.exc_value))

    def explode(_: bytes) -> None:
        raise error("user bug")

    result = box.exec(["sh", "-c", "echo a; echo b >&2"], on_stdout=explode).wait(timeout=10)
    assert result.ok and result.stderr == b"b\n"
    assert [(type(e), str(e)) for e in reported] == [(error, "user bug")]
    assert rt.native.drain_thread.is_alive()
    assert box.run(["echo", "still fine"]).stdout == b"still fine\n"
