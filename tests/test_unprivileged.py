"""An unprivileged user runs a box through a user namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boxlite_ffi.home import libexec_dir

from imagebuild import busybox_rootfs

NOBODY = 65534

# The child imports boxlite_ffi while still root (the interpreter may live in
# root's home), then drops every id for good before creating anything.
SCRIPT = textwrap.dedent(
    """
    import os, sys
    import boxlite_ffi
    os.setgroups([])
    os.setresgid({uid}, {uid}, {uid})
    os.setresuid({uid}, {uid}, {uid})
    assert os.geteuid() == {uid}
    with boxlite_ffi.Runtime({home!r}) as rt, rt.create(rootfs={rootfs!r}) as box:
        r = box.run(["sh", "-c", "id -u; cat /proc/1/comm; echo data > /root/f; cat /root/f"])
        sys.stdout.write(r.stdout.decode())
        box.copy_out("/root/f", {home!r} + "/out")  # files travel both ways too
        box.copy_in({home!r} + "/out/f", "/copied")
        sys.stdout.write(box.run(["cat", "/copied/f"]).stdout.decode())
        sys.exit(r.exit_code)
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unprivileged_user_runs_a_box(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"boxlite-unpriv-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        libexec = base / "libexec"
        shutil.copytree(libexec_dir(), libexec)
        rootfs = busybox_rootfs(base / "rootfs")
        home = base / "home"
        home.mkdir()
        # As it would be had the user unpacked the image: theirs, so root
        # in the box (their uid outside) owns it.
        for path in [home, rootfs, *rootfs.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)
        script = SCRIPT.format(uid=NOBODY, home=str(home), rootfs=str(rootfs))
        env = {**os.environ, "BOXLITE_LIBEXEC": str(libexec)}
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert proc.stdout == "0\nboxlite-agent\ndata\ndata\n"
        assert list((home / "boxes").iterdir()) == []
        # The box's writable layer never reached the image.
        assert not (rootfs / "root" / "f").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
