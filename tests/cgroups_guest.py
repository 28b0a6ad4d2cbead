"""Limits on the cgroup layouts this machine does not have: run as root in
the guest of test_cgroup_layouts.py.

    python cgroups_guest.py v2       # cgroup v2 only, every controller there
    python cgroups_guest.py hybrid   # memory in its v1 hierarchy, the rest in v2

(and, as its own child, `rootless`: see check_rootless).

Each check prints "ok <name>"; any failure raises, and the exit code says so."""

from __future__ import annotations

import faulthandler
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import boxlite_ffi
from boxlite_ffi import EngineError, Outcome
from boxlite_ffi.home import libexec_dir
from boxlite_ffi.image.busybox import build

HOG = "x=$(head -c 200m /dev/zero | tr '\\0' x); echo survived"
BOMB = "bomb() { bomb | bomb & }; bomb"
SPIN = "timeout 3 sh -c 'while :; do :; done'"

LAYOUT = sys.argv[1] if len(sys.argv) > 1 else "v2"
MEMORY_V1 = LAYOUT == "hybrid"
V2 = Path("/sys/fs/cgroup/unified") if MEMORY_V1 else Path("/sys/fs/cgroup")
NOBODY = 65534
# What systemd's user@.service is to a user: a subtree of theirs, the
# controllers handed down to it, their programs in a leaf of it.
DELEGATED = V2 / "user.slice" / "nobody"
SESSION = DELEGATED / "session"
ROOTLESS = Path("/tmp/rootless")


def cgroups_of(box: boxlite_ffi.Box, v2_parent: Path = V2 / "boxlite") -> dict[str, Path]:
    """The box's cgroup of each controller, each where the layout puts it:
    v2 boxes under v2_parent, v1 ones under the shim's cgroup."""
    listing = (box.directory / "cgroups").read_text().splitlines()
    found = {c: Path(p) for c, _, p in (line.partition(" ") for line in listing)}
    for controller, path in found.items():
        if controller == "memory" and MEMORY_V1:
            assert path.parent == Path("/sys/fs/cgroup/memory"), path
        else:
            assert path.parent == v2_parent, path
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


def check_the_default_pids_limit(rt: boxlite_ffi.Runtime, image: str) -> None:
    """Without pids=, 2048: the box's init starts in its v2 cgroup."""
    with rt.create(image) as box, rt.create(image, pids=0) as unlimited:
        cgroups = started(box)
        assert set(cgroups) == {"pids"}, cgroups
        assert (cgroups["pids"] / "pids.max").read_text() == "2048\n"
        assert (cgroups["pids"] / "cgroup.procs").read_text().split()
        unlimited.start()
        assert not (unlimited.directory / "cgroups").exists()
    # Informational (software emulation): what the default costs a cold start.
    for options in ({}, {"pids": 0}) * 3:
        began = time.monotonic()
        with rt.create(image, **options) as box:  # type: ignore[arg-type]
            box.run(["true"])
        print(f"cold start {options or 'default'}: {(time.monotonic() - began) * 1e3:.0f} ms")


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
        with rt.create(image) as default:  # a default limit is left out instead
            default.start()
            assert not (default.directory / "cgroups").exists()
            assert "the default limit is not set" in (default.directory / "shim.log").read_text()
    finally:
        squatter.kill()
        squatter.wait()
    with rt.create(image, pids=64) as box:  # the parent is usable again
        assert started(box)["pids"].is_dir()


def check_rootless(rt: boxlite_ffi.Runtime, image: str) -> None:
    """An unprivileged runtime in a subtree delegated to its user: its
    boxes' cgroups go beside its own, and the limits hold.  Its user-mode
    network too, /dev/net/tun open to users as on most machines (this one
    keeps it root's): a server on the guest's loopback is reached with
    host_loopback=True only."""
    del rt, image  # the child has its own
    os.chmod("/dev/net/tun", 0o666)  # as udev's default rules make it; the kernel's is 0600
    server = http.server.HTTPServer(("127.0.0.1", 0), Greeter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SESSION.mkdir(parents=True)
    for above in (V2, DELEGATED.parent):
        (above / "cgroup.subtree_control").write_text("+memory +pids +cpu")
    for cgroup in (DELEGATED, SESSION):
        for path in (cgroup, *(cgroup / f for f in ("cgroup.procs", "cgroup.subtree_control"))):
            os.chown(path, NOBODY, NOBODY)
    ROOTLESS.mkdir()
    build(ROOTLESS / "layout", ROOTLESS / "staging")
    shutil.copytree(libexec_dir(), ROOTLESS / "libexec")
    for path in [ROOTLESS, *ROOTLESS.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    child = f"echo $$ > {SESSION}/cgroup.procs && exec {sys.executable} {__file__} rootless"
    env = {
        **os.environ,
        "BOXLITE_LIBEXEC": str(ROOTLESS / "libexec"),
        "SERVER_PORT": str(server.server_address[1]),
    }
    done = subprocess.run(["sh", "-c", child], env=env, capture_output=True, text=True)
    server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout, end="")


class Greeter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the host\n")


def rootless() -> None:
    """The child of check_rootless: drops to nobody."""
    boxlite_ffi.preload()  # what the package imports on use, while still root
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    with boxlite_ffi.Runtime(ROOTLESS / "home") as rt:
        (image,) = rt.images.load(ROOTLESS / "layout")
        with rt.create(image.id, memory="32m", pids=32) as box:
            result = box.run(["sh", "-c", HOG], timeout=300)
            assert (result.outcome, result.exit_code) == (Outcome.OOM, 137), result
            cgroups = cgroups_of(box, DELEGATED / "boxlite")
            assert (cgroups["pids"] / "pids.max").read_text() == "32\n"
        assert not any(c.exists() for c in cgroups.values())
        print("rootless: limits held in", cgroups["memory"])
        url = f"http://10.0.2.2:{os.environ['SERVER_PORT']}/"
        # busybox's static wget crashes in its libc's NSS: the host's python3 is the client.
        get = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).read().decode())"
        fetch = ["python3", "-c", get]
        with rt.create("host", network=True, host_loopback=True) as box:
            fetched = box.run(fetch, timeout=60)
            assert fetched.stdout == b"hello from the host\n\n", fetched
        with rt.create("host", network=True) as box:
            refused = box.run(fetch, timeout=60)
            assert refused.exit_code != 0 and refused.stdout == b"", refused
        print("rootless: the user-mode network came up")


def main() -> None:
    faulthandler.dump_traceback_later(120, repeat=True)  # a hang shows where
    if LAYOUT == "rootless":
        rootless()
        return
    assert Path("/sys/fs/cgroup/memory").exists() == MEMORY_V1
    checks = [
        check_the_default_pids_limit,
        check_a_limit_that_cannot_be_set_fails_the_start,
        check_memory,
        check_pids,
        check_cpu,
        check_all_limits_in_one_box,
    ]
    if not MEMORY_V1:
        checks.append(check_rootless)
    with boxlite_ffi.Runtime(Path("/tmp/home")) as rt:
        (image,) = rt.images.load(build(Path("/tmp/layout"), Path("/tmp/staging")))
        for check in checks:
            check(rt, image.id)
            print("ok", check.__name__, flush=True)


if __name__ == "__main__":
    main()
