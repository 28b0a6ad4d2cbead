"""The main command's logs in a box directory (``stdout.log``,
``stderr.log``), as the shim keeps them (native/shim/logs.c): NAME holds
the newest half, NAME.1 the older one, and a rotation replaces NAME.1."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def read_log(path: Path) -> bytes:
    """The log at path: NAME.1, the older half, then NAME.  If NAME.1 is
    still the file read first once NAME is read, the two were consecutive.  The first stays open
    meanwhile, so its inode cannot be freed and reused by a later NAME.1."""
    older = path.with_name(path.name + ".1")
    while True:
        with contextlib.ExitStack() as stack:
            try:
                first = stack.enter_context(open(older, "rb"))
                head, inode = first.read(), os.fstat(first.fileno()).st_ino
            except FileNotFoundError:
                head, inode = b"", None
            try:
                tail = path.read_bytes()
            except FileNotFoundError:
                tail = b""
            try:
                now = older.stat().st_ino
            except FileNotFoundError:
                now = None
            if now == inode:
                return head + tail
