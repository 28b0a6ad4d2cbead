"""Per-box limits in cgroups: a memory hog is killed in its box with outcome
oom, a fork bomb is contained, CPU is capped, and the host and other boxes
stay responsive.  Bad limits are refused; the cgroups go with the box."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import InvalidArgumentError, Outcome

HOG = "x = bytearray(512 << 20); print('survived')"
BOMB = "bomb() { bomb | bomb & }; bomb"


def cgroups_of(box: boxlite_ffi.Box) -> list[Path]:
    listing = (box.directory / "cgroups").read_text().splitlines()
    return [Path(line.split(" ", 1)[1]) for line in listing]


def test_a_memory_hog_is_killed_in_its_box(rt: boxlite_ffi.Runtime) -> None:
    with rt.create("host", memory="64m") as box:
        result = box.run(["python3", "-c", HOG])
        assert (result.outcome, result.exit_code, result.signal) == (Outcome.OOM, 137, 9)
        assert result.stdout == b""
        assert box.run(["echo", "still here"]).stdout == b"still here\n"
        killed = box.run(["sh", "-c", "kill -KILL $$"])  # a SIGKILL that is not the OOM killer's
        assert killed.outcome is Outcome.SIGNALED
        dirs = cgroups_of(box)
        assert dirs and all(d.is_dir() for d in dirs)
    assert not any(d.exists() for d in dirs)  # removed with the box


def test_the_oom_killer_takes_box_processes_before_the_agent(rt: boxlite_ffi.Runtime) -> None:
    """The agent's death would end the box: its processes go first."""
    main = ["sh", "-c", "cat /proc/self/oom_score_adj; exec sleep 60"]
    with rt.create("host", memory="64m", cmd=main) as box:
        box.start()
        # The agent lends its spawns 500 until posix_spawn returns: wait that out.
        script = "cat /proc/self/oom_score_adj; sleep 0.2; cat /proc/1/oom_score_adj"
        assert box.run(["sh", "-c", script]).stdout == b"500\n0\n"
        box.stop()
        assert box.logs().stdout == b"500\n"  # the main command too
        assert int(Path(f"/proc/{os.getpid()}/oom_score_adj").read_text()) == 0


def pids_in_v2() -> bool:
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        controllers = Path(root, "cgroup.controllers")
        if controllers.exists() and "pids" in controllers.read_text().split():
            return True
    return False


def test_a_box_that_asks_for_no_pids_limit_gets_the_default(rt: boxlite_ffi.Runtime) -> None:
    """2048 where the pids controller is in cgroup v2 (the guest of
    test_cgroup_layouts.py checks that); none on v1, as on this machine,
    where joining a cgroup would cost each start ~5 ms: the log says so."""
    with rt.create("host") as box, rt.create("host", pids=0) as unlimited:
        box.start()
        unlimited.start()
        log = (box.directory / "shim.log").read_text()
        if pids_in_v2():
            (pids,) = cgroups_of(box)
            assert (pids / "pids.max").read_text() == "2048\n"
        else:
            assert not (box.directory / "cgroups").exists()
            assert "the default limit is not set: pids: a v1 controller here" in log
        assert not (unlimited.directory / "cgroups").exists()
        assert "default" not in (unlimited.directory / "shim.log").read_text()


def test_a_fork_bomb_is_contained(rt: boxlite_ffi.Runtime) -> None:
    with rt.create("host", pids=64) as box, rt.create("host") as other:
        result = box.run(["sh", "-c", BOMB + "; sleep 2"], timeout=10)
        assert result.outcome in (Outcome.EXITED, Outcome.TIMED_OUT, Outcome.SIGNALED)
        started = time.monotonic()
        assert other.run(["echo", "responsive"]).stdout == b"responsive\n"
        assert time.monotonic() - started < 2
        (pids,) = [d for d in cgroups_of(box) if "pids" in str(d)]
        assert int((pids / "pids.current").read_text()) <= 64  # the box is full, and only it
        started = time.monotonic()
        box.stop()  # everything in it goes, bomb included
        assert time.monotonic() - started < 10


def test_cpu_is_capped(rt: boxlite_ffi.Runtime) -> None:
    spin = (
        "import time\nt = time.time()\nwhile time.time() - t < 1: pass\nprint(time.process_time())"
    )
    with rt.create("host", cpus=0.25) as box:
        used = float(box.run(["python3", "-c", spin]).stdout)
    assert used < 0.45  # a quarter of a CPU over one second, with slack for the scheduler


@pytest.mark.parametrize(
    "limits",
    [
        {"memory": "lots"},
        {"memory": 1024},
        {"memory": -5},
        {"memory": True},
        {"cpus": 0},
        {"cpus": "1"},
        {"pids": -1},
        {"pids": 1.5},
        {"tmp_size": "lots"},
        {"tmp_size": "512k"},
        {"tmp_size": 0},
        {"tmp_size": True},
    ],
)
def test_bad_limits_are_refused(rt: boxlite_ffi.Runtime, limits: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        rt.create("host", **limits)  # type: ignore[arg-type]
    assert rt.list() == []


def test_limits_are_kept_across_restarts(rt: boxlite_ffi.Runtime) -> None:
    box = rt.create("host", memory="2g", pids=100, detach=True)
    box.start()
    box.stop()
    box.start()
    limits = {d.parent.name.split("/")[-1]: d for d in cgroups_of(box)}
    assert len(limits) == 2
    box.remove(force=True)


def loop_devices_of(image: Path) -> list[str]:
    import subprocess

    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if str(image) in line]


def test_the_writable_layer_cannot_fill_the_host_disk(rt: boxlite_ffi.Runtime) -> None:
    box = rt.create("host", disk="32m", detach=True)
    image = box.directory / "disk.img"
    box.start()
    fill = box.run(["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=100 2>&1; ls -l /big"])
    assert b"No space left on device" in fill.stdout
    written = int(fill.stdout.split(b"\n")[-2].split()[4])
    assert 16 << 20 < written <= 32 << 20
    assert image.stat().st_blocks * 512 <= 40 << 20  # the host holds the image, no more
    assert box.run(["sh", "-c", "rm /big && echo kept > /kept"]).ok
    box.stop()
    assert loop_devices_of(image) == []  # the box's end let go of its disk
    box.start()  # the layer, on its disk, is kept across runs
    assert box.run(["cat", "/kept"]).stdout == b"kept\n"
    box.remove(force=True)
    assert loop_devices_of(image) == [] and not box.directory.exists()


@pytest.mark.parametrize("disk", ["1k", "0", "tiny", True])
def test_bad_disk_limits(rt: boxlite_ffi.Runtime, disk: object) -> None:
    with pytest.raises(InvalidArgumentError):
        rt.create("host", disk=disk)  # type: ignore[arg-type]
    assert rt.list() == []


@pytest.mark.parametrize(
    "options",
    [{"network": "yes"}, {"host_loopback": 1, "network": True}, {"image": 123}],
)
def test_bad_isolation_arguments(rt: boxlite_ffi.Runtime, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        rt.create(**{"image": "host", **options})  # type: ignore[arg-type]
    assert rt.list() == []


FILL = textwrap.dedent(
    """
    import errno, os, sys
    for where in sys.argv[1:]:
        total = os.statvfs(where).f_blocks * os.statvfs(where).f_frsize
        written, chunk = 0, b"x" * (1 << 20)
        with open(os.path.join(where, "fill"), "wb", buffering=0) as f:
            try:
                while written < 64 << 20:
                    written += f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        os.unlink(os.path.join(where, "fill"))
        print(where, total >> 20, written >> 20)
    """
)


def tmpfs_sizes(box: boxlite_ffi.Box) -> dict[str, tuple[int, int]]:
    """MiB of /tmp and /dev/shm: their size, and what a file filling them got."""
    result = box.run(["python3", "-c", FILL, "/tmp", "/dev/shm"])
    assert result.ok, result.stderr
    lines = (line.split() for line in result.stdout.decode().splitlines())
    return {where: (int(size), int(written)) for where, size, written in lines}


def test_tmp_and_shm_are_bounded(rt: boxlite_ffi.Runtime) -> None:
    """/tmp and /dev/shm are tmpfs of tmp_size each: filling one ends in
    ENOSPC at about that, not in the host's memory."""
    with rt.create("host", tmp_size="8m") as box:
        assert tmpfs_sizes(box) == {"/tmp": (8, 8), "/dev/shm": (8, 8)}
        assert box.run(["sh", "-c", "echo still > /tmp/f && cat /tmp/f"]).stdout == b"still\n"


def test_tmp_size_defaults_to_a_gib_and_never_exceeds_memory(rt: boxlite_ffi.Runtime) -> None:
    sizes = (
        "import os; print(*(os.statvfs(p).f_blocks * os.statvfs(p).f_frsize >> 20"
        " for p in ('/tmp', '/dev/shm')))"
    )
    with rt.create("host") as box:
        assert box.run(["python3", "-c", sizes]).stdout == b"1024 1024\n"
    with rt.create("host", memory="48m", tmp_size="1g") as box:
        assert box.run(["python3", "-c", sizes]).stdout == b"48 48\n"
