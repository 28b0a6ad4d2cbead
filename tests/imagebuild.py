"""Build test images locally: a busybox root filesystem and OCI layouts."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from boxlite_ffi.image import oci_writer
from boxlite_ffi.image.busybox import busybox_rootfs, tar_of

__all__ = ["Entry", "busybox_rootfs", "tar_bytes", "tar_directory", "write_layout"]


@dataclass
class Entry:
    """One tar entry: kind is file, dir, symlink, hardlink, fifo or chardev."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            info.mtime = 1_700_000_000
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[e.kind]
            if e.kind == "dir":
                info.mode = e.mode if e.mode != 0o644 else 0o755
            info.linkname = e.target
            tar.addfile(info)
    return buf.getvalue()


def tar_directory(root: Path) -> bytes:
    return tar_of(root)


def write_layout(
    layout: Path,
    layers: list[bytes],
    *,
    compress: bool = True,
    config: dict[str, object] | None = None,
) -> Path:
    """An OCI image layout whose image applies ``layers`` in order."""
    return oci_writer.write_layout(
        layout, layers, config={"Env": ["PATH=/bin"], **(config or {})}, compress=compress
    )
