"""Limits on the cgroup layouts this machine does not have: run as root in
the guest of test_cgroup_layouts.py.

    python cgroups_guest.py v2       # cgroup v2 only, every controller there
    python cgroups_guest.py hybrid   # memory in its v1 hierarchy, the rest in v2

Each check prints "ok <name>"; any failure raises, and the exit code says so."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import boxlite_ffi
from boxlite_ffi import EngineError, Outcome
from boxlite_ffi.image.busybox import build

HOG = "x=$(head -c 200m /dev/zero | tr '\\0' x); echo survived"
BOMB = "bomb() { bomb | bomb & }; bomb"
SPIN = "timeout 3 sh -c 'while :; do :; done'"

LAYOUT = sys.argv[1] if len(sys.argv) > 1 else "v2"
V2 = Path("/sys/fs/cgroup") if LAYOUT == "v2" else Path("/sys/fs/cgroup/unified")
MEMORY_V1 = LAYOUT == "hybrid"


def cgroups_of(box: boxlite_ffi.Box) -> dict[str, Path]:
    """The box's cgroup of each controller, each where the layout puts it:
    v2 boxes under <v2 root>/boxlite, v1 ones under the shim's cgroup."""
    listing = (box.directory / "cgroups").read_text().splitlines()
    found = {c: Path(p) for c, _, p in (line.partition(" ") for line in listing)}
    for controller, path in found.items():
        if controller == "memory" and MEMORY_V1:
            assert path.parent == Path("/sys/fs/cgroup/memory"), path
        else:
            assert path.parent == V2 / "boxlite", path
    return found


def started(box: boxlite_ffi.Box) -> dict[str, Path]:
    box.start()
    return cgroups_of(box)


def check_memory(rt: boxlite_ffi.Runtime, image: str) -> None:
    with rt.create(image, memory="32m") as box:
        result = box.run(["sh", "-c", HOG], timeout=300)
        assert (result.outcome, result.exit_code) == (Outcome.OOM, 137), result
        assert result.stdout == b""
        assert box.run(["echo", "still here"]).stdout == b"still here\n"
        cgroup = cgroups_of(box)["memory"]
        limit = cgroup / ("memory.limit_in_bytes" if MEMORY_V1 else "memory.max")
        assert limit.read_text() == f"{32 << 20}\n"
    assert not cgroup.exists()  # removed with the box


def check_pids(rt: boxlite_ffi.Runtime, image: str) -> None:
    with rt.create(image, pids=32) as box, rt.create(image) as other:
        result = box.run(["sh", "-c", BOMB + "; sleep 5"], timeout=120)
        assert result.outcome in (Outcome.EXITED, Outcome.TIMED_OUT, Outcome.SIGNALED)
        assert other.run(["echo", "responsive"]).stdout == b"responsive\n"
        cgroup = cgroups_of(box)["pids"]
        assert (cgroup / "pids.max").read_text() == "32\n"
        events = (cgroup / "pids.events").read_text()
        assert int(events.split()[1]) > 0, events  # forks were refused
        box.stop()
    assert not cgroup.exists()


def check_cpu(rt: boxlite_ffi.Runtime, image: str) -> None:
    with rt.create(image, cpus=0.25) as box:
        cgroup = started(box)["cpu"]
        began = time.monotonic()
        box.run(["sh", "-c", SPIN], timeout=120)
        elapsed = time.monotonic() - began
        stat = dict(line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
        assert (cgroup / "cpu.max").read_text() == "25000 100000\n"
        assert int(stat["nr_throttled"]) > 0, stat
        assert int(stat["usage_usec"]) / 1e6 < 0.45 * elapsed, (stat, elapsed)


def check_all_limits_in_one_box(rt: boxlite_ffi.Runtime, image: str) -> None:
    with rt.create(image, memory="64m", pids=50, cpus=1) as box:
        cgroups = started(box)
        assert set(cgroups) == {"memory", "pids", "cpu"}
        assert len(set(cgroups.values())) == (2 if MEMORY_V1 else 1)  # v2: one for all
        assert box.run(["true"]).ok
        for cgroup in cgroups.values():
            assert (cgroup / "cgroup.procs").read_text().split(), cgroup
        enabled = set((V2 / "boxlite" / "cgroup.subtree_control").read_text().split())
        assert enabled == ({"pids", "cpu"} if MEMORY_V1 else {"memory", "pids", "cpu"}), enabled


def check_a_limit_that_cannot_be_set_fails_the_start(rt: boxlite_ffi.Runtime, image: str) -> None:
    """v2 keeps processes out of cgroups that hand controllers down: a
    process in the boxes' parent makes a v2 limit impossible."""
    parent = V2 / "boxlite"
    parent.mkdir(exist_ok=True)
    squatter = subprocess.Popen(["sleep", "600"])
    try:
        (parent / "cgroup.procs").write_text(str(squatter.pid))
        box = rt.create(image, pids=64)
        try:
            box.start()
        except EngineError as e:
            assert "limit pids: " in str(e), e  # the kernel's refusal, at whichever step
            print("refused:", e)
        else:
            raise AssertionError("a limit that could not be set was not reported")
        box.remove()
    finally:
        squatter.kill()
        squatter.wait()
    with rt.create(image, pids=64) as box:  # the parent is usable again
        assert started(box)["pids"].is_dir()


def main() -> None:
    assert Path("/sys/fs/cgroup/memory").exists() == MEMORY_V1
    with boxlite_ffi.Runtime(Path("/tmp/home")) as rt:
        (image,) = rt.images.load(build(Path("/tmp/layout"), Path("/tmp/staging")))
        for check in (
            check_a_limit_that_cannot_be_set_fails_the_start,
            check_memory,
            check_pids,
            check_cpu,
            check_all_limits_in_one_box,
        ):
            check(rt, image.id)
            print("ok", check.__name__, flush=True)


if __name__ == "__main__":
    main()
