"""A real box, end to end: ``python -m boxlite_ffi.demo [ROOTFS]``.

Without an argument it builds a tiny root filesystem from Debian's
busybox-static (``/bin/busybox``), starts a box from it, and shows what the
box sees: its own pid namespace, hostname, network and streams.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boxlite_ffi

BUSYBOX = Path("/bin/busybox")


def busybox_rootfs(dest: Path) -> Path:
    """A root filesystem: busybox, every applet as a symlink, a passwd file."""
    if not BUSYBOX.is_file():
        sys.exit("demo: /bin/busybox is missing (apt-get install busybox-static)")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    listing = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    for applet in listing.stdout.split():
        if applet != "busybox":
            (dest / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "dev", "tmp", "etc", "root", "usr/bin", "sbin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return dest


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="boxlite-demo-") as tmp:
        rootfs = Path(argv[0]) if argv else busybox_rootfs(Path(tmp) / "rootfs")
        with (
            boxlite_ffi.Runtime(Path(tmp) / "home") as rt,
            rt.create(rootfs=rootfs, name="demo") as box,
        ):
            script = "echo pid=$$ host=$(hostname) id=$(id -u); ls /proc | grep -c '^[0-9]'; "
            script += "cat /proc/net/dev | tail -n +3 | cut -d: -f1; printf 'to stderr' >&2"
            result = box.run(["sh", "-c", script])
            print(f"box {box.id}: outcome={result.outcome.value} exit_code={result.exit_code}")
            print(f"stdout: {result.stdout!r}")
            print(f"stderr: {result.stderr!r}")
            execution = box.exec(["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.1; done"])
            for chunk in execution.stdout:
                print(f"streamed: {chunk!r}")
            print(f"then: {execution.wait().outcome.value}")
            return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
