"""The disk image a box's writable layer of limited size lives in
(``<box dir>/disk.img``, mounted by the shim: native/shim/disk.c)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineError
from . import boxdir


def make_disk(box_dir: Path, size: int) -> None:
    """The ext4 image the box's writable layer will live in (sparse: it
    takes only what is written)."""
    import subprocess  # on use: few boxes have a disk limit

    image = box_dir / boxdir.DISK_IMAGE
    with open(image, "xb") as f:
        f.truncate(size)
    owner = f"{os.geteuid()}:{os.getegid()}"
    try:
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={owner}", str(image)],
            check=True,
            capture_output=True,
        )
    except FileNotFoundError:
        raise EngineError("a disk limit needs mkfs.ext4 (apt-get install e2fsprogs)") from None
    except subprocess.CalledProcessError as exc:
        raise EngineError(
            f"mkfs.ext4 failed: {exc.stderr.decode(errors='replace').strip()}"
        ) from exc
