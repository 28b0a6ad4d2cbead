"""An unprivileged user runs a box through a user namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxlite_ffi.home import libexec_dir

from imagebuild import Entry, busybox_rootfs, tar_bytes, tar_directory, write_layout

NOBODY = 65534

# Each child imports boxlite_ffi while still root (the interpreter may live
# in root's home), then drops every id for good before creating anything.
PRELUDE = f"""
import os, sys
import boxlite_ffi
boxlite_ffi.preload()  # what it imports on use, too
os.setgroups([])
os.setresgid({NOBODY}, {NOBODY}, {NOBODY})
os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
"""

SCRIPT = textwrap.dedent(
    """
    assert os.geteuid() != 0
    with boxlite_ffi.Runtime({home!r}) as rt, rt.create(rootfs={rootfs!r}) as box:
        r = box.run(["sh", "-c", "id -u; cat /proc/1/comm; echo data > /root/f; cat /root/f"])
        sys.stdout.write(r.stdout.decode())
        box.copy_out("/root/f", {home!r} + "/out")  # files travel both ways too
        box.copy_in({home!r} + "/out/f", "/copied")
        sys.stdout.write(box.run(["cat", "/copied/f"]).stdout.decode())
        # The default pids limit is left out here (v1; and no right to make cgroups).
        print("the default limit is not set" in (box.directory / "shim.log").read_text())
        try:  # one id: no users but root
            box.run(["true"], user="nobody")
        except boxlite_ffi.InvalidArgumentError as e:
            print("unprivileged runtime" in str(e))
        sys.exit(r.exit_code)
    """
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the user nobody can reach (root's pytest tmp is not)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"boxlite-unpriv-{os.getpid()}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(base: Path, script: str) -> subprocess.CompletedProcess[str]:
    libexec = base / "libexec"
    shutil.copytree(libexec_dir(), libexec)
    for path in [base, *base.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    env = {**os.environ, "BOXLITE_LIBEXEC": str(libexec)}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


IMAGES = textwrap.dedent(
    """
    with boxlite_ffi.Runtime({home!r}) as rt:
        rt.images.load({layout!r}, tag="layers:1")
        with rt.create("layers:1") as box:
            r = box.run(["sh", "-c", "ls /etc /opt/app; cat /opt/keep"])
            sys.stdout.write(r.stdout.decode())
        with rt.create("host") as box:
            r = box.run(["python3", "-c", "import os; print(os.getuid())"])
            sys.stdout.write(r.stdout.decode() + r.stderr.decode())
        with rt.create("host", network=True) as box:
            try:
                r = box.run(["grep", "-c", "tap0", "/proc/net/dev"])
                sys.stdout.write(r.stdout.decode() + r.stderr.decode())
            except boxlite_ffi.EngineError as exc:
                print(exc.message.split(" (")[0])
        rt.images.remove("layers:1")
        rt.images.prune()
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unprivileged_user_loads_images(base: Path, rootfs: Path) -> None:
    """Whiteouts (0:0 devices) and opaque markers (user.* xattrs) are made
    without privilege, the host image mounts in a user namespace, and the
    user-mode network comes up for an unprivileged user too."""
    lower = tar_bytes([Entry("etc/removed", data=b"x"), Entry("opt/app/old", data=b"o")])
    upper = tar_bytes(
        [
            Entry("etc/.wh.removed"),
            Entry("opt/app/.wh..wh..opq"),
            Entry("opt/app/new", data=b"n"),
            Entry("opt/keep", data=b"kept\n"),
        ]
    )
    layout = write_layout(base / "layout", [tar_directory(rootfs), lower, upper])
    home = base / "home"
    home.mkdir()
    proc = _as_nobody(base, IMAGES.format(home=str(home), layout=str(layout)))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    # The user-mode network needs /dev/net/tun, which some machines (this
    # one) keep root's: then the start says so.
    tun = os.stat("/dev/net/tun").st_mode & 0o006 == 0o006
    network = "1\n" if tun else "slirp4netns gave up before the box's network was up\n"
    assert proc.stdout == "/etc:\npasswd\n\n/opt/app:\nnew\nkept\n0\n" + network
    assert list((home / "images" / "layers").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unprivileged_user_runs_a_box(base: Path) -> None:
    rootfs = busybox_rootfs(base / "rootfs")
    home = base / "home"
    home.mkdir()
    # As it would be had the user unpacked the image: theirs, so root
    # in the box (their uid outside) owns it.
    proc = _as_nobody(base, SCRIPT.format(home=str(home), rootfs=str(rootfs)))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout == "0\nboxlite-agent\ndata\ndata\nTrue\nTrue\n"
    assert list((home / "boxes").iterdir()) == []
    # The box's writable layer never reached the image.
    assert not (rootfs / "root" / "f").exists()


LIMITS = textwrap.dedent(
    """
    with boxlite_ffi.Runtime({home!r}) as rt:
        for limit in ({{"memory": "64m"}}, {{"disk": "32m"}}):
            box = rt.create(rootfs={rootfs!r}, **limit)
            try:
                box.start()
            except boxlite_ffi.EngineError as exc:
                print(exc.message)
            else:
                print("started without its limit")
            box.remove(force=True)
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_a_limit_that_cannot_be_enforced_is_reported(base: Path) -> None:
    """No cgroup delegation, no loop devices for this user: the start
    fails, saying why."""
    rootfs = busybox_rootfs(base / "rootfs")
    home = base / "home"
    home.mkdir()
    proc = _as_nobody(base, LIMITS.format(home=str(home), rootfs=str(rootfs)))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    memory, disk = proc.stdout.splitlines()
    assert memory.startswith("limit memory: ") and "denied" in memory
    assert disk.startswith("disk limit: ") and "not permitted" in disk
