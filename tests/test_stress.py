"""Exactly one Exit per execution while natural exit, kill, timeout, close
and runtime close race each other with random timing."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

# A second completion of one execution would raise inside a callback and be
# reported as unraisable: that fails the test.
pytestmark = [
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

ALLOWED = {
    "none": {Outcome.EXITED},
    "kill": {Outcome.EXITED, Outcome.SIGNALED},
    "free": {Outcome.EXITED, Outcome.FORCE_CLOSED},
    "timeout": {Outcome.EXITED, Outcome.TIMED_OUT},
}


def test_random_races_give_exactly_one_exit_each(home: Path, rootfs: Path) -> None:
    rng = random.Random(20261123)
    for round_ in range(25):
        rt = boxlite_ffi.Runtime(home / str(round_), queue_capacity=rng.choice([4, 64, 4096]))
        boxes = [rt.create(rootfs=rootfs) for _ in range(2)]
        plans = []
        for i in range(50):
            action = rng.choice(list(ALLOWED))
            delay = rng.random() * 0.05
            sleep = rng.choice(["0", "0.01", "0.05", "0.2"])
            timeout = rng.choice([0.01, 0.05]) if action == "timeout" else None
            script = f"echo {i}; sleep {sleep}; head -c {rng.randrange(0, 300_000)} /dev/zero"
            execution = boxes[i % 2].exec(["sh", "-c", script], timeout=timeout)
            plans.append((execution, action, delay))

        def act(execution: boxlite_ffi.Execution, action: str, delay: float, closing: bool) -> None:
            time.sleep(delay)
            try:
                end(execution, action)
            except boxlite_ffi.RuntimeClosedError:
                assert closing  # only a closing runtime may refuse

        close_runtime = round_ % 3 == 2
        threads = [threading.Thread(target=act, args=(*plan, close_runtime)) for plan in plans]
        for t in threads:
            t.start()
        if close_runtime:
            time.sleep(rng.random() * 0.1)
            rt.close()
        for t in threads:
            t.join()
        for execution, action, _ in plans:
            try:
                result = execution.wait(timeout=30)
            except boxlite_ffi.RuntimeClosedError:
                assert close_runtime
                continue
            assert result.outcome in ALLOWED[action], (action, result)
        rt.close()


def test_fifty_executions_in_five_boxes_with_random_endings(
    rt: boxlite_ffi.Runtime, rootfs: Path
) -> None:
    """Random kills, timeouts, frees, stdin and slow readers at once; every
    byte checked against what the process wrote, no process left behind."""
    boxes = [rt.create(rootfs=rootfs) for _ in range(5)]
    for b in boxes:
        b.start()
    failures: list[str] = []
    seen: list[Outcome] = []

    def one(i: int) -> None:
        rng = random.Random(1123 + i)
        box, action = boxes[i % 5], rng.choice(list(ALLOWED))
        size, pause = rng.randrange(0, 500_000), rng.choice(["0", "0.02", "0.1"])
        window = rng.choice([16 << 10, 256 << 10, 2 << 20])
        with_stdin = rng.random() < 0.5
        data = rng.randbytes(size) if with_stdin else b""
        script = (
            f"sleep {pause}; cat"
            if with_stdin
            else f"head -c {size} /dev/urandom > /tmp/o{i}; sleep {pause}; cat /tmp/o{i}"
        )
        execution = box.exec(
            ["sh", "-c", script],
            stdin=with_stdin,
            timeout=rng.choice([0.02, 0.1]) if action == "timeout" else None,
            output_window=window,
        )
        if with_stdin:
            threading.Thread(target=feed, args=(execution, data, rng.randrange(1, 100_000))).start()
        ender = threading.Timer(rng.random() * 0.1, end, args=(execution, action))
        ender.start()
        received = bytearray()
        for chunk in execution.stdout:  # a reader that dawdles now and then
            received += chunk
            if rng.random() < 0.05:
                time.sleep(0.005)
        result = execution.wait(timeout=60)
        ender.join()
        written = data if with_stdin else box.run(["cat", f"/tmp/o{i}"]).stdout
        complete = result.outcome is Outcome.EXITED
        seen.append(result.outcome)
        if result.outcome not in ALLOWED[action]:
            failures.append(f"{i}: {action} ended {result.outcome}")
        elif complete and (result.exit_code != 0 or bytes(received) != written):
            failures.append(f"{i}: {action} exited {result.exit_code}, output differs")
        elif not written.startswith(received):
            failures.append(f"{i}: {action} delivered bytes the process never wrote")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert len(seen) == 50
    assert set(seen) >= set(ALLOWED["kill"] | ALLOWED["free"] | ALLOWED["timeout"])
    for b in boxes:
        assert processes_besides_the_agent(b) == []


def processes_besides_the_agent(box: boxlite_ffi.Box) -> list[str]:
    lines = box.run(["ps", "-o", "pid,args"]).stdout.decode().splitlines()[1:]
    return [line for line in lines if line.split()[0] != "1" and "ps -o" not in line]


def feed(execution: boxlite_ffi.Execution, data: bytes, piece: int) -> None:
    """Write data in pieces, then EOF, until the execution stops taking it."""
    try:
        for offset in range(0, len(data), piece):
            execution.write_stdin(data[offset : offset + piece])
        execution.close_stdin()
    except boxlite_ffi.ExecClosedError:
        pass  # killed, timed out or freed meanwhile


def end(execution: boxlite_ffi.Execution, action: str) -> None:
    try:
        if action == "kill":
            execution.kill()
        elif action == "free":
            execution.close()
    except boxlite_ffi.ExecClosedError:
        pass  # it ended first: the race may go either way
