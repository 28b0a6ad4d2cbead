"""A small real image from Debian's busybox-static, for tests and demos:

    python3 -m boxlite_ffi.image.busybox ./busybox-oci

writes an OCI image layout named ``busybox:latest`` (``apt-get install
busybox-static`` first); ``rt.images.load("./busybox-oci")`` imports it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .oci_writer import write_layout

BUSYBOX = Path("/bin/busybox")
NAME = "busybox:latest"


def busybox_rootfs(dest: Path) -> Path:
    """A root filesystem: busybox, every applet as a symlink, a passwd file."""
    if not BUSYBOX.is_file():
        raise FileNotFoundError("/bin/busybox is missing (apt-get install busybox-static)")
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


def tar_of(root: Path) -> bytes:
    """An uncompressed layer tar of a directory tree, names relative to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def build(layout: Path, staging: Path) -> Path:
    rootfs = busybox_rootfs(staging / "rootfs")
    config = {"Env": ["PATH=/bin:/sbin:/usr/bin"], "Cmd": ["sh"]}
    return write_layout(layout, [tar_of(rootfs)], config=config, name=NAME)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory(prefix="boxlite-busybox-") as tmp:
        layout = build(Path(argv[0]), Path(tmp))
    print(f"{layout}: OCI image layout {NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
