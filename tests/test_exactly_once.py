"""Exactly one Exit per execution, after all of its output, also when the
runtime closes in the middle; and byte-exactness over random bytes."""

from __future__ import annotations

import gc
import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import boxlite_ffi

# A second completion of one Future would raise inside a callback, which the
# callback layer reports as an unraisable exception: make that fail the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def printf_script(data: bytes) -> str:
    return "printf '" + "".join(f"\\{b:03o}" for b in data) + "'"


# One box serves every example: that is the point of reusing the fixture.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(out=st.binary(max_size=300), err=st.binary(max_size=300))
def test_random_bytes_arrive_exactly(box: boxlite_ffi.Box, out: bytes, err: bytes) -> None:
    script = f"{printf_script(out)}; {printf_script(err)} >&2"
    result = box.run(["sh", "-c", script])
    assert (result.stdout, result.stderr) == (out, err)


def test_no_output_after_the_exit(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    violations: list[int] = []
    boxes = [rt.create(rootfs=rootfs) for _ in range(2)]
    executions: list[boxlite_ffi.Execution] = []

    def watch(index: int):
        def on_chunk(_: bytes) -> None:
            # Output may beat exec_now's return, before the list has it.
            if index < len(executions) and executions[index].done:
                violations.append(index)

        return on_chunk

    script = "for i in $(seq 300); do echo out$i; echo err$i >&2; done"
    for i in range(30):
        box = boxes[i % 2]
        box.start()
        executions.append(
            box.exec_now(["sh", "-c", script], on_stdout=watch(i), on_stderr=watch(i))
        )
    for e in executions:
        assert e.wait(timeout=60).ok
    assert violations == []
    for b in boxes:
        b.close()


def test_close_racing_executions_completes_each_once(home: Path, rootfs: Path) -> None:
    rng = random.Random(7)
    for round_ in range(8):
        rt = boxlite_ffi.Runtime(home / str(round_), queue_capacity=rng.choice([2, 16, 4096]))
        box = rt.create(rootfs=rootfs)
        box.start()
        executions = [
            box.exec_now(["sh", "-c", f"head -c {rng.randrange(1, 2_000_000)} /dev/zero"])
            for _ in range(6)
        ]
        time.sleep(rng.random() * 0.05)
        closer = threading.Thread(target=rt.close)
        closer.start()
        for e in executions:
            try:
                result = e.wait(timeout=30)
            except boxlite_ffi.RuntimeClosedError:
                continue
            assert result.ok
        closer.join(timeout=30)
        assert not closer.is_alive()
        assert all(e.done for e in executions)


def test_dropping_a_running_execution_kills_it(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sleep", "100"])
    exited = execution.exited  # watching the end keeps nothing alive
    del execution
    gc.collect()
    end = exited.result(timeout=10)
    assert end.outcome is boxlite_ffi.Outcome.FORCE_CLOSED
    assert b"sleep 100" not in box.run(["ps", "-o", "args"]).stdout


def test_a_stream_keeps_its_execution_alive(box: boxlite_ffi.Box) -> None:
    stop = threading.Event()

    def collect_garbage() -> None:
        while not stop.is_set():
            gc.collect()
            time.sleep(0.01)

    collector = threading.Thread(target=collect_garbage)
    collector.start()
    try:
        # The Execution object is gone after `.stdout`; its stream is not.
        out = box.exec(["sh", "-c", "sleep 0.3; echo still here"]).stdout.read()
    finally:
        stop.set()
        collector.join()
    assert out == b"still here\n"
