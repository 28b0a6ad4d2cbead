"""Box lifecycle and persistence: statuses, the main command and its
outcome, restart, auto_remove, lookups, and recovery at open, with real
boxes, real processes and the real SQLite store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import boxlite_ffi
import boxlite_ffi.state.store
from boxlite_ffi import BoxStatus, Outcome, StateReason
from boxlite_ffi.state.boxdir import MARKER

from imagebuild import tar_directory, write_layout
from procscan import box_processes


def other_process(home: Path, code: str, timeout: float = 60) -> str:
    """Run code with `rt` open on home in a fresh interpreter; its stdout."""
    program = "import boxlite_ffi\n"
    program += f"with boxlite_ffi.Runtime({str(home)!r}) as rt:\n"
    program += textwrap.indent(textwrap.dedent(code), "    ")
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_main_command_exit_is_the_box_outcome(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert box.status == BoxStatus.CONFIGURED
    box.start()
    end = box.wait(timeout=20)
    assert (end.status, end.outcome, end.exit_code, end.signal) == (
        BoxStatus.EXITED,
        Outcome.EXITED,
        3,
        None,
    )
    assert end.finished is not None and end.finished <= time.time()
    assert box.logs() == boxlite_ffi.BoxLogs(b"out\n", b"err\n")
    info = box.info()
    assert info.status == BoxStatus.EXITED and info.exit_code == 3 and info.started is not None
    with pytest.raises(boxlite_ffi.InvalidStateError) as refused:
        box.exec(["true"])
    assert refused.value.reason == StateReason.BOX_EXITED
    assert box.wait() == end  # asked again: the same answer
    box.remove()  # an exited box needs no force
    with pytest.raises(boxlite_ffi.NotFoundError):
        rt.get(box.id)
    assert not box.directory.exists()


def test_a_main_command_that_ends_at_once(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs, cmd=["true"])
    for _ in range(15):  # the box may be gone before its start is recorded
        box.start()
        end = box.wait(timeout=20)
        assert (end.status, end.exit_code) == (BoxStatus.EXITED, 0)
    box.remove()


def test_entrypoint_and_cmd_make_one_command(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(
        rootfs=rootfs,
        entrypoint=["sh", "-c"],
        cmd=['echo "$0 $GREETING"', "hi"],
        env={"GREETING": "there"},
    )
    box.start()
    assert box.wait(timeout=20).exit_code == 0
    assert box.logs().stdout == b"hi there\n"
    box.remove()


def test_a_cmd_alone_runs_after_the_image_entrypoint(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path
) -> None:
    config = {"Entrypoint": ["sh", "-c"], "Cmd": ["echo image default"]}
    image = write_layout(tmp_path / "layout", [tar_directory(rootfs)], config=config)
    box = rt.create(image, cmd=["echo mine; exit 6"])
    box.start()
    assert box.wait(timeout=20).exit_code == 6
    assert box.logs().stdout == b"mine\n"
    replaced = rt.create(image, entrypoint=["echo"], cmd=["only", "mine"])
    replaced.start()
    replaced.wait(timeout=20)
    assert replaced.logs().stdout == b"only mine\n"
    idle = rt.create(image)  # neither: no main command, the box idles
    assert idle.run(["echo", "idle"]).stdout == b"idle\n"
    for b in (box, replaced, idle):
        b.remove(force=True)


def test_signaled_and_unstartable_main_commands(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    killed = rt.create(rootfs=rootfs, cmd=["sh", "-c", "kill -9 $$"])
    killed.start()
    end = killed.wait(timeout=20)
    assert (end.outcome, end.exit_code, end.signal) == (Outcome.SIGNALED, 137, 9)

    missing = rt.create(rootfs=rootfs, cmd=["/no/such/program"])
    missing.start()
    end = missing.wait(timeout=20)
    assert end.status == BoxStatus.FAILED and end.outcome is Outcome.FAILED_TO_START
    assert end.exit_code == 127 and "No such file" in (end.reason or "")
    with pytest.raises(boxlite_ffi.InvalidStateError) as refused:
        missing.run(["true"])
    assert refused.value.reason == StateReason.BOX_FAILED
    assert box_processes() == []


def test_a_box_without_main_command_idles_until_stopped(box: boxlite_ffi.Box) -> None:
    box.start()
    with pytest.raises(boxlite_ffi.BoxliteTimeoutError):
        box.wait(timeout=0.3)
    box.stop()
    end = box.wait()
    assert end.status == BoxStatus.STOPPED and end.outcome is None
    box.stop()  # stopping a stopped box is a no-op


def test_stopping_a_main_command_is_stopped_not_exited(
    rt: boxlite_ffi.Runtime, rootfs: Path
) -> None:
    box = rt.create(rootfs=rootfs, cmd=["sleep", "600"])
    box.start()
    box.start()  # a no-op on a running box
    assert box.status == BoxStatus.RUNNING
    box.stop()
    assert box.status == BoxStatus.STOPPED and box.info().exit_code is None


def test_a_stop_right_after_start_is_not_lost(home: Path, rootfs: Path) -> None:
    """The agent, the box's init, starts with the signals it reads blocked:
    a SIGTERM in its first microseconds used to be dropped, and the stop
    then waited out the whole grace period before the SIGKILL."""
    with boxlite_ffi.Runtime(home, stop_grace=30) as rt:
        for _ in range(30):
            box = rt.create(rootfs=rootfs, cmd=["sleep", "600"])
            box.start()
            began = time.monotonic()
            box.stop()
            assert time.monotonic() - began < 20  # not the 30 s grace: SIGTERM arrived
            assert box.status == BoxStatus.STOPPED
            box.remove()


def test_restart_keeps_the_writable_layer(box: boxlite_ffi.Box) -> None:
    assert box.run(["sh", "-c", "echo kept > /root/file; rm /bin/true"]).ok
    box.restart()
    assert box.run(["cat", "/root/file"]).stdout == b"kept\n"
    assert box.run(["ls", "/bin/true"]).exit_code != 0  # deletions stay deleted too
    box.stop()
    box.start()
    assert box.run(["cat", "/root/file"]).stdout == b"kept\n"


def test_remove_needs_force_while_running(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs, name="busy")
    box.start()
    with pytest.raises(boxlite_ffi.InvalidStateError) as refused:
        rt.remove("busy")
    assert refused.value.reason == StateReason.BOX_RUNNING
    assert box.run(["true"]).ok  # refused: nothing happened to it
    rt.remove("busy", force=True)
    assert box_processes() == [] and not box.directory.exists()
    assert rt.list() == []
    again = rt.create(rootfs=rootfs, name="busy")  # the name is free again
    again.remove()


def test_auto_remove_deletes_record_and_directory(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs, cmd=["sh", "-c", "exit 5"], auto_remove=True)
    box.start()
    assert box.wait(timeout=20).exit_code == 5  # the waiter still learns the end
    assert not box.directory.exists()
    assert rt.list() == []
    stopped = rt.create(rootfs=rootfs, auto_remove=True)
    stopped.start()
    stopped.stop()
    assert not stopped.directory.exists() and rt.list() == []


def test_list_filters_by_status(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    configured = rt.create(rootfs=rootfs, name="a")
    running = rt.create(rootfs=rootfs, name="b")
    running.start()
    exited = rt.create(rootfs=rootfs, name="c", cmd=["true"])
    exited.start()
    exited.wait(timeout=20)
    assert [i.name for i in rt.list()] == ["a", "b", "c"]
    assert [i.name for i in rt.list("running")] == ["b"]
    assert [i.name for i in rt.list([BoxStatus.CONFIGURED, BoxStatus.EXITED])] == ["a", "c"]
    assert rt.list("exited")[0].exit_code == 0
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.list("sleeping")
    for b in (configured, running, exited):
        b.close()


def test_an_inheritable_fd_of_the_program_never_reaches_a_box(home: Path, rootfs: Path) -> None:
    """fd 5 carries the main command to the shim; without one, it must be
    closed like every other fd of the embedding program."""
    code = textwrap.dedent(f"""
        import os, boxlite_ffi
        r, w = os.pipe()
        os.dup2(w, 5)  # inheritable, exactly where the main command would go
        leak = os.readlink("/proc/self/fd/5")
        with boxlite_ffi.Runtime({str(home)!r}) as rt:
            for cmd in (None, ["sleep", "60"]):
                box = rt.create(rootfs={str(rootfs)!r}, cmd=cmd)
                box.start()
                pids = [box.shim_pid] + [
                    int(p) for p in os.listdir("/proc") if p.isdigit()
                    and open(f"/proc/{{p}}/comm").read().strip() == "boxlite-agent"
                ]
                for pid in pids:
                    for fd in os.listdir(f"/proc/{{pid}}/fd"):
                        try:
                            assert os.readlink(f"/proc/{{pid}}/fd/{{fd}}") != leak, (pid, fd)
                        except FileNotFoundError:
                            pass
                box.remove(force=True)
        print("clean")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "clean", done.stderr


def test_hostile_arguments_are_refused_before_anything_is_recorded(
    rt: boxlite_ffi.Runtime, rootfs: Path
) -> None:
    for bad in (
        {"cmd": "sh -c true"},  # a string, not an argv
        {"cmd": ["ok", "nul\0byte"]},
        {"entrypoint": [b"bytes"]},
        {"cmd": ["x" * 70_000] * 20},  # larger than one protocol frame
        {"name": "-leading-dash"},
        {"name": "x" * 65},
        {"name": "../escape"},
    ):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            rt.create(rootfs=rootfs, **bad)  # type: ignore[arg-type]
    for status in ("sleeping", 123, [None]):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            rt.list(status)  # type: ignore[arg-type]
    assert rt.list() == [] and list((rt.home / "boxes").iterdir()) == []
    box = rt.create(rootfs=rootfs)
    box.remove()
    with pytest.raises(boxlite_ffi.InvalidStateError) as closed:
        box.remove()  # the handle went with it
    assert closed.value.reason == StateReason.BOX_CLOSED
    with pytest.raises(boxlite_ffi.NotFoundError):
        rt.remove(box.id)


def test_wait_from_another_process_after_the_fact(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(rootfs=rootfs, name="batch", detach=True, cmd=["sh", "-c", "exit 42"])
        box.start()
    # Its owner is gone; the box finished with nobody watching.
    deadline = time.monotonic() + 20
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = other_process(
        home,
        """
        box = rt.get("batch")
        end = box.wait(timeout=20)
        print(box.status, end.exit_code, box.logs().stdout == b"")
        box.remove()
        """,
    )
    assert out.split() == ["exited", "42", "True"]


def test_wait_from_another_process_while_it_runs(home: Path, rootfs: Path) -> None:
    waiter_code = textwrap.dedent(f"""
        import boxlite_ffi
        with boxlite_ffi.Runtime({str(home)!r}) as rt:
            box = rt.get("slow")
            print("waiting", flush=True)
            print(box.wait(timeout=30).exit_code, flush=True)
        """)
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(
            rootfs=rootfs, name="slow", detach=True, cmd=["sh", "-c", "sleep 1; exit 9"]
        )
        box.start()
        waiter = subprocess.Popen(
            [sys.executable, "-c", waiter_code], stdout=subprocess.PIPE, text=True
        )
        assert waiter.stdout is not None and waiter.stdout.readline() == "waiting\n"
        assert box.status == BoxStatus.RUNNING
        assert waiter.communicate(timeout=30)[0].strip() == "9"
        assert box.wait().exit_code == 9
        box.remove()


def test_a_detached_box_is_stopped_and_removed_from_another_process(
    home: Path, rootfs: Path
) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(rootfs=rootfs, name="kept", detach=True)
        box.run(["touch", "/root/mark"])
    assert len(box_processes()) == 2
    out = other_process(
        home,
        """
        box = rt.get("kept")
        print(box.status, box.run(["ls", "/root"]).stdout.decode().strip())
        box.stop()
        print(box.status)
        box.start()
        print(box.run(["ls", "/root"]).stdout.decode().strip())
        rt.remove("kept", force=True)
        print(len(rt.list()))
        """,
    )
    assert out.split() == ["running", "mark", "stopped", "mark", "0"]
    assert box_processes() == []


def test_start_from_another_process_then_exec_here(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(rootfs=rootfs, name="shared", detach=True)
        other_process(home, 'rt.get("shared").start()')
        assert box.status == BoxStatus.RUNNING
        assert box.run(["echo", "here"]).stdout == b"here\n"  # connects to that run
        box.start()  # running: a no-op, not a second shim
        assert len(box_processes()) == 2
        box.remove(force=True)


def test_processes_starting_one_box_at_once_share_one_run(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        rt.create(rootfs=rootfs, name="contended", detach=True)
    go = time.time() + 1.5  # all three past their imports: start at once
    code = textwrap.dedent(f"""
        import time, boxlite_ffi
        with boxlite_ffi.Runtime({str(home)!r}) as rt:
            box = rt.get("contended")
            time.sleep(max(0.0, {go!r} - time.time()))
            box.start()
            print(box.shim_pid, box.run(["true"]).exit_code)
        """)
    racers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    answers = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(answers) == 1 and answers.pop().endswith(" 0")  # one shim for all three
    assert len(box_processes()) == 2
    with boxlite_ffi.Runtime(home) as rt:
        rt.remove("contended", force=True)


def test_nothing_of_a_box_outlives_close_or_forced_remove(home: Path, rootfs: Path) -> None:
    rt = boxlite_ffi.Runtime(home)
    boxes = [rt.create(rootfs=rootfs) for _ in range(3)]
    for box in boxes:
        box.exec(["sh", "-c", "trap '' TERM; sleep 600 & sleep 600"])  # stubborn
    boxes[0].remove(force=True)
    assert len(box_processes()) == 4  # at once: no agent left dying
    boxes[1].close()  # owned: goes with its handle
    assert len(box_processes()) == 2
    rt.close()
    assert box_processes() == []  # at once, not eventually


def test_an_owner_killed_with_sigkill_takes_its_boxes_and_records(home: Path, rootfs: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, boxlite_ffi
            rt = boxlite_ffi.Runtime({str(home)!r})
            rt.create(rootfs={str(rootfs)!r}, name="mine").start()
            rt.create(rootfs={str(rootfs)!r}, name="idle")
            print("up", flush=True)
            sys.stdin.read()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None and owner.stdout.readline() == "up\n"
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 10
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box_processes() == []
    with boxlite_ffi.Runtime(home) as rt:  # recovery at open
        assert rt.list() == []
        assert list((home / "boxes").iterdir()) == []


def _tamper(home: Path, sql: str) -> None:
    db = sqlite3.connect(home / "boxlite.db")
    with db:
        db.execute(sql)
    db.close()


def test_recovery_after_a_reboot(home: Path, rootfs: Path) -> None:
    """A reboot: every process is gone and the boot id changed."""
    with boxlite_ffi.Runtime(home) as rt:
        done = rt.create(rootfs=rootfs, name="done", detach=True, cmd=["sh", "-c", "exit 4"])
        done.start()
        done.wait(timeout=20)
        up = rt.create(rootfs=rootfs, name="up", detach=True)
        up.start()
        shim = up.shim_pid
    os.kill(shim, signal.SIGKILL)  # the reboot took it
    deadline = time.monotonic() + 10
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Every fingerprint is from the old boot, and "done" still reads running,
    # its shim named by a pid that is alive now (ours) but is not its shim.
    me = os.getpid()
    _tamper(home, f"UPDATE boxes SET shim = '{me}:1:old-boot', status = 'running'")
    with boxlite_ffi.Runtime(home) as rt:
        states = {i.name: (i.status, i.exit_code) for i in rt.list()}
        assert states == {"done": ("exited", 4), "up": ("lost", None)}
        assert rt.get("up").info().reason == "the host restarted while it ran"
        rt.get("up").start()  # and it starts again
        assert rt.get("up").run(["true"]).ok
        rt.remove("up", force=True)
        rt.remove("done")


def test_recovery_of_interrupted_steps(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(rootfs=rootfs, name="half", detach=True)
    stray = home / "boxes" / "0123456789ab"  # a create that crashed before its record
    (stray / "upper").mkdir(parents=True)
    (stray / MARKER).touch()  # made first; its specification only after the commit
    dead = subprocess.run(["true"], check=True)  # a pid that is gone
    assert dead.returncode == 0
    _tamper(home, "UPDATE boxes SET status = 'starting', actor = '1:1:some-other-boot'")
    with boxlite_ffi.Runtime(home) as rt:
        info = rt.get("half").info()
        assert info.status == BoxStatus.FAILED and "died" in (info.reason or "")
        assert not stray.exists()
        rt.get("half").start()  # failed is not final: it starts again
        rt.remove("half", force=True)
    assert box.directory.exists() is False


def test_a_store_held_busy_is_a_typed_timeout(
    home: Path, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(boxlite_ffi.state.store, "BUSY_TIMEOUT_S", 0.2)
    with boxlite_ffi.Runtime(home) as rt:
        holder = sqlite3.connect(home / "boxlite.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process in a long write
        with pytest.raises(boxlite_ffi.BoxliteTimeoutError):
            rt.create(rootfs=rootfs, name="late")
        holder.execute("ROLLBACK")
        holder.close()
        assert list((home / "boxes").iterdir()) == []  # nothing half-made
        rt.create(rootfs=rootfs, name="late").remove()


def test_many_processes_one_home(home: Path, rootfs: Path) -> None:
    boxlite_ffi.Runtime(home).close()  # create the store once
    worker = textwrap.dedent(f"""
        import sys, boxlite_ffi
        n = sys.argv[1]
        with boxlite_ffi.Runtime({str(home)!r}) as rt:
            for i in range(4):
                box = rt.create(rootfs={str(rootfs)!r}, name=f"w{{n}}-{{i}}", detach=True)
                box.start()
                rt.list()
                box.run(["true"])
                box.stop()
                if i % 2:
                    box.remove()
        """)
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    with boxlite_ffi.Runtime(home) as rt:
        infos = rt.list()
        assert sorted(i.name for i in infos) == sorted(
            f"w{n}-{i}" for n in range(4) for i in (0, 2)
        )
        assert {i.status for i in infos} == {BoxStatus.STOPPED}
        for info in infos:
            rt.remove(info.id)
    assert box_processes() == []


def test_start_right_after_stop_starts_under_load(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    """stop() returns once the end is recorded and our handle knows of it
    too: a start right after must not take the old run for live (under load
    it did: the native core heard of the shim's exit after the monitor)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        for _ in range(25):
            with rt.create(rootfs=rootfs) as box:
                assert box.run(["true"]).ok
                box.restart()
                assert box.run(["true"]).ok
                box.stop()
                box.start()
                assert box.run(["true"]).ok
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
