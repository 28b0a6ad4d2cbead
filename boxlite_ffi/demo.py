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


PROBE = (
    "echo $$; hostname; id -u; ls /proc | grep -c '^[0-9]'; "
    "tail -n +3 /proc/net/dev | cut -d: -f1; printf 'this went to stderr' >&2"
)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="boxlite-demo-") as tmp:
        rootfs = Path(argv[0]) if argv else busybox_rootfs(Path(tmp) / "rootfs")
        with (
            boxlite_ffi.Runtime(Path(tmp) / "home") as rt,
            rt.create(rootfs=rootfs, name="demo") as box,
        ):
            probe = box.run(["sh", "-c", PROBE])
            pid, hostname, uid, procs, interfaces = probe.stdout.decode().split("\n", 4)
            print(f"box {box.id} started from {rootfs}")
            print(f"  a shell in it is pid {pid}, uid {uid}, on host {hostname!r}")
            print(f"  processes it can see: {procs}; network interfaces: {interfaces.split()}")
            print(f"  stdout and stderr arrive apart: {probe.stderr!r}")
            execution = box.exec(["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done"])
            for chunk in execution.stdout:
                print(f"  streamed as it happened: {chunk!r}")
            result = box.run(["sh", "-c", "printf 'a\\000b\\377'; kill -TERM $$"])
            print(
                f"  byte-exact {result.stdout!r}, ended by {result.outcome.value} "
                f"signal {result.signal} (exit code {result.exit_code})"
            )
            return 0 if probe.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
