"""Exactly one Exit per execution, after all of its output, also when the
runtime closes in the middle; and byte-exactness over random bytes."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
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


# Boxes whose main command ends while threads keep starting executions in
# them: each execution ends once, with a typed outcome (signaled: the end of
# the box killed it) or error.  This once
# freed an EXEC frame twice in the reactor (the execution started after the
# agent's connection was gone) and aborted the whole program, so the race
# runs in a child process whose death is the failure.
RACING_EXECS = """
import sys, threading
import boxlite_ffi

def hammer(box, stop, outcomes):
    while not stop.is_set():
        try:
            outcomes.append(box.exec(["true"]).wait().outcome)
        except (boxlite_ffi.InvalidStateError, boxlite_ffi.ExecClosedError):
            outcomes.append("refused")

with boxlite_ffi.Runtime(home=sys.argv[1]) as rt:
    for _ in range(int(sys.argv[2])):
        box = rt.create("host", cmd=["sleep", "0.1"])
        box.start()
        stop, outcomes = threading.Event(), []
        threads = [threading.Thread(target=hammer, args=(box, stop, outcomes)) for _ in range(3)]
        for t in threads:
            t.start()
        box.wait()
        stop.set()
        for t in threads:
            t.join()
        box.remove()
        assert outcomes and set(outcomes) <= {
            boxlite_ffi.Outcome.EXITED, boxlite_ffi.Outcome.SIGNALED, boxlite_ffi.Outcome.LOST,
            boxlite_ffi.Outcome.FAILED_TO_START, "refused"}, outcomes
print("done")
"""


def test_executions_racing_the_end_of_their_box(home: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", RACING_EXECS, str(home), "40"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0 and child.stdout == "done\n", child.stderr[-2000:]
