"""A writer of the kernel's initramfs format: cpio "newc" (SVR4 without
checksums), as Documentation/driver-api/early-userspace/buffer-format.rst
describes it.  Each entry is a 110-byte ASCII header of thirteen 8-digit hex
fields, the NUL-terminated name and the data, each padded to 4 bytes;
``TRAILER!!!`` ends the archive.  Owners are root and times 0, so the same
entries always make the same bytes."""

from __future__ import annotations

import stat
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


class NewcWriter:
    """Entries in the order added; a name's parent directories are added
    first when nobody added them (the kernel makes no parents)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._names: set[str] = set()

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer (the writer's file stays open)."""
        self._header(TRAILER, 0, 0, 0, (0, 0), ino=0)

    def _entry(self, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if not name or name in self._names or ".." in name.split("/"):
            raise ValueError(f"bad or repeated initramfs name {name!r}")
        parent = name.rpartition("/")[0]
        if parent and parent not in self._names:
            self.directory(parent)
        self._names.add(name)
        self._ino += 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        self._header(name, mode, nlink, len(data), rdev, ino=self._ino)
        self._out.write(data)
        self._out.write(_pad(len(data)))

    def _header(
        self, name: str, mode: int, nlink: int, size: int, rdev: tuple[int, int], ino: int
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = MAGIC + b"".join(b"%08X" % v for v in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
