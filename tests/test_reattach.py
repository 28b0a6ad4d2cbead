"""Durable execution ids: detached boxes and executions found again by id
from another process, after the first one let go, died, or was killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import aio
from boxlite_ffi.execution import Outcome

from procscan import box_processes


def in_other_process(home: Path, code: str) -> dict[str, object]:
    """Run code with `rt` open on home in a fresh interpreter; its `out` dict."""
    program = "import json, boxlite_ffi\n"
    program += f"with boxlite_ffi.Runtime({str(home)!r}) as rt:\n    out = {{}}\n"
    program += textwrap.indent(textwrap.dedent(code), "    ")
    program += "\nprint(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def detached_home(home: Path) -> Iterator[Path]:
    yield home
    # Whatever a test left running in its detached boxes goes with it.
    with boxlite_ffi.Runtime(home) as rt:
        for entry in (home / "boxes").iterdir():
            with contextlib.suppress(boxlite_ffi.NotFoundError):
                rt.remove(entry.name, force=True)


SCRIPT = 'echo start; read x; echo "got $x"; echo bye >&2; exit 7'


def test_detached_execution_is_resumed_from_another_process(
    detached_home: Path, rootfs: Path
) -> None:
    with boxlite_ffi.Runtime(detached_home) as rt:
        box = rt.create(rootfs=rootfs, name="job", detach=True)
        execution = box.exec(["sh", "-c", SCRIPT], stdin=True)
        assert next(iter(execution.stdout)) == b"start\n"
        exec_id, cursor = execution.id, execution.cursor
        assert len(exec_id) == 16 and cursor == (6, 0)
        execution.detach()
        assert execution.wait().outcome is Outcome.DETACHED
    assert len(box_processes()) == 2  # the runtime closed; the detached box runs on

    out = in_other_process(
        detached_home,
        f"""
        box = rt.get("job")
        ex = box.execution({exec_id!r}, cursor={cursor!r})
        out["start"] = ex.replay_start
        ex.write_stdin(b"hello\\n")
        result = ex.wait()
        out["result"] = [result.outcome.value, result.exit_code,
                         result.stdout.decode(), result.stderr.decode()]
        """,
    )
    assert out == {"start": [6, 0], "result": ["exited", 7, "got hello\n", "bye\n"]}

    # Ended: its output and result stay queryable, replayed from any cursor.
    with boxlite_ffi.Runtime(detached_home) as rt:
        box = rt.get(rt.get("job").id[:5])  # a unique prefix finds it too
        again = box.execution(exec_id)
        result = again.wait()
        assert again.replay_start == (0, 0)
        assert (result.outcome, result.exit_code) == (Outcome.EXITED, 7)
        assert (result.stdout, result.stderr) == (b"start\ngot hello\n", b"bye\n")
        rt.remove("job", force=True)
    assert box_processes() == []


def test_a_killed_owner_leaves_a_detached_box_and_its_executions_running(
    detached_home: Path, rootfs: Path
) -> None:
    program = textwrap.dedent(
        f"""
        import os, sys, boxlite_ffi
        rt = boxlite_ffi.Runtime({str(detached_home)!r})
        box = rt.create(rootfs={str(rootfs)!r}, name="survivor", detach=True)
        ex = box.exec(["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); "
                       "sleep 0.01; done"])
        print(ex.id, flush=True)
        next(iter(ex.stdout))
        os.kill(os.getpid(), 9)
        """
    )
    owner = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert owner.returncode == -signal.SIGKILL
    exec_id = owner.stdout.split()[0]
    with boxlite_ffi.Runtime(detached_home) as rt:
        box = rt.get("survivor")
        execution = box.execution(exec_id)
        result = execution.wait(timeout=30)
        lines = result.stdout.decode().split()
        # Replayed from the first byte (all of it is within the replay buffer), then live.
        assert lines == [f"line{i}" for i in range(400)]
        assert result.outcome is Outcome.EXITED
        rt.remove("survivor", force=True)


def test_a_box_that_is_not_detached_still_dies_with_its_owner(home: Path, rootfs: Path) -> None:
    program = textwrap.dedent(
        f"""
        import os, boxlite_ffi
        rt = boxlite_ffi.Runtime({str(home)!r})
        box = rt.create(rootfs={str(rootfs)!r}, name="bound")
        box.start()
        os.kill(os.getpid(), 9)
        """
    )
    owner = subprocess.run([sys.executable, "-c", program], timeout=60)
    assert owner.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box_processes() == []
    with boxlite_ffi.Runtime(home) as rt, pytest.raises(boxlite_ffi.NotFoundError):
        rt.get("bound")


def test_attaching_to_an_ended_execution_again_and_again(detached_home: Path, rootfs: Path) -> None:
    """The answer, the replay and the Exit of an ended execution arrive at
    once; the answer must be learned before the Exit releases the handle."""
    with boxlite_ffi.Runtime(detached_home) as rt:
        box = rt.create(rootfs=rootfs, name="ended", detach=True)
        execution = box.exec(["sh", "-c", "echo done"])
        exec_id = execution.id
        execution.detach()
    for _ in range(40):
        with boxlite_ffi.Runtime(detached_home) as rt:
            again, answered = rt.get("ended").execution_future(exec_id)
            answered.result(timeout=10)  # a lost answer used to hang here
            assert again.wait(timeout=10).stdout == b"done\n"
    with boxlite_ffi.Runtime(detached_home) as rt:
        rt.remove("ended", force=True)


def test_attach_refusals(detached_home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(detached_home) as rt:
        box = rt.create(rootfs=rootfs, detach=True)
        held = box.exec(["sleep", "30"])
        with pytest.raises(boxlite_ffi.InvalidStateError) as busy:
            box.execution(held.id)  # another handle holds it
        assert busy.value.reason == "exec_busy"
        with pytest.raises(boxlite_ffi.NotFoundError):
            box.execution("00000000000000ff")
        for bad in ("", "xyz", "0" * 16, "1" * 17):
            with pytest.raises(boxlite_ffi.InvalidArgumentError):
                box.execution(bad)
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.execution(held.id, cursor=(-1, 0))
        held.detach()
        assert held.wait().outcome is Outcome.DETACHED
        with pytest.raises(boxlite_ffi.ExecClosedError):
            held.detach()  # let go of already
        again = box.execution(held.id)  # signals reach it through the new handle
        again.kill()
        assert again.wait().outcome is Outcome.SIGNALED
        rt.remove(box.id, force=True)


def test_asyncio_reattach_in_the_same_program(detached_home: Path, rootfs: Path) -> None:
    async def main() -> tuple[bytes, tuple[int, int]]:
        async with aio.Runtime(detached_home) as rt:
            box = await rt.create(rootfs=rootfs, detach=True)
            first = await box.exec(["sh", "-c", "echo one; sleep 0.3; echo two"])
            assert await anext(aiter(first.stdout)) == b"one\n"
            cursor = first.cursor
            await first.detach()
            second = await box.execution(first.id, cursor=cursor)
            result = await second.wait()
            await rt.remove(box.id, force=True)
            return result.stdout, second.replay_start

    assert asyncio.run(main()) == (b"two\n", (4, 0))


def test_box_records_survive_in_the_store(detached_home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(detached_home) as rt:
        rt.create(rootfs=rootfs, name="kept", detach=True).start()
        with pytest.raises(boxlite_ffi.AlreadyExistsError):
            rt.create(rootfs=rootfs, name="kept")
        ephemeral = rt.create(rootfs=rootfs, name="gone")
        ephemeral.close()
        with pytest.raises(boxlite_ffi.NotFoundError):
            rt.get("gone")
    out = in_other_process(detached_home, 'out["pid"] = rt.get("kept").shim_pid')
    assert isinstance(out["pid"], int) and os.path.exists(f"/proc/{out['pid']}")
