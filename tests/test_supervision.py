"""Supervision: orphans are reaped, pipes held open do not hold an Exit,
and a box never outlives its shim or its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boxlite_ffi
from boxlite_ffi import Outcome

from procscan import box_processes


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_orphans_are_reaped_by_the_agent(box: boxlite_ffi.Box) -> None:
    # Grandchildren whose parent exits are re-parented to PID 1, the agent.
    assert box.run(["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.05 &) ; done"]).ok
    time.sleep(0.5)
    states = box.run(["sh", "-c", "cat /proc/[0-9]*/stat"]).stdout.decode()
    zombies = [line for line in states.splitlines() if line.split(") ")[1].startswith("Z")]
    assert zombies == []


def test_exit_is_reported_while_a_grandchild_holds_the_pipes(box: boxlite_ffi.Box) -> None:
    # Without the drain window this would wait for the 60 s sleep.
    result = box.exec(["sh", "-c", "sleep 60 & echo hi"]).wait(timeout=10)
    assert result.ok and result.stdout == b"hi\n"


def shim_of(box: boxlite_ffi.Box) -> int:
    for pid, name in box_processes():
        if name == "boxlite-shim":
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(box.directory).encode() in cmdline:
                return pid
    raise AssertionError("no shim found for the box")


def test_killing_the_shim_ends_the_box(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs) as box:
        execution = box.exec(["sh", "-c", "echo up; sleep 60"])
        assert next(iter(execution.stdout)) == b"up\n"
        os.kill(shim_of(box), signal.SIGKILL)
        assert execution.wait(timeout=10).outcome is Outcome.LOST
        assert wait_until(lambda: box_processes() == [])
        # Its record says so (lost, not a clean stop), and it can be started again.
        end = box.wait(timeout=10)
        assert end.status == boxlite_ffi.BoxStatus.LOST and end.outcome is Outcome.LOST
        assert end.reason and "boxlite-shim" in end.reason and "without being asked" in end.reason
        box.start()
        assert box.run(["echo", "back"]).stdout == b"back\n"


OWNER = textwrap.dedent(
    """
    import sys, boxlite_ffi
    rt = boxlite_ffi.Runtime({home!r})
    box = rt.create(rootfs={rootfs!r})
    execution = box.exec(["sh", "-c", "echo up; sleep 600"])
    sys.stdout.write(next(iter(execution.stdout)).decode())
    sys.stdout.flush()
    sys.stdin.read()  # until killed
    """
)


def test_a_box_dies_with_its_owner(home: Path, rootfs: Path) -> None:
    script = OWNER.format(home=str(home), rootfs=str(rootfs))
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline() == b"up\n"
            assert box_processes() != []
            owner.kill()  # SIGKILL: no atexit, no close
            owner.wait()
            assert wait_until(lambda: box_processes() == [])
        finally:
            owner.kill()


FORGETFUL = textwrap.dedent(
    """
    import boxlite_ffi
    rt = boxlite_ffi.Runtime({home!r})
    box = rt.create(rootfs={rootfs!r})
    print(box.run(["echo", "ran"]).stdout.decode(), end="")
    # no close(): the interpreter's exit must still leave nothing behind
    """
)


def test_a_program_that_forgets_close_leaves_nothing(home: Path, rootfs: Path) -> None:
    script = FORGETFUL.format(home=str(home), rootfs=str(rootfs))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ran\n"
    assert box_processes() == []
    assert list((home / "boxes").iterdir()) == []
