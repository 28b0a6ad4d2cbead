"""Directory trees the runtime owns (box directories, unpacked layers):
their size on disk, and deleting them whatever modes are inside."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def remove_tree(path: Path) -> None:
    """Delete a tree, including directories nobody may list (the mode-000
    ones overlayfs leaves in a box's work/, any a box or an image made).
    Another process removing it at the same time is no error."""

    def unlock(directory: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            directory.chmod(0o700)
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    unlock(child)

    def gone_already(_func: Any, _path: str, exc_info: Any) -> None:
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    unlock(path)
    shutil.rmtree(path, onerror=gone_already)


def tree_size(path: Path) -> int:
    """Bytes the tree's files occupy on disk (hard links counted once)."""
    total = 0
    seen: set[int] = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
    return total


def make_dir_once(final: Path, fill: Callable[[Path], None]) -> Path:
    """``final``, made by ``fill`` in a staging directory beside it and
    renamed into place, so nobody ever sees it half made; when a concurrent
    maker got there first, theirs is kept.  A crash leaves a staging
    directory (``.make-*``) for its owner's clean-up to find."""
    if final.is_dir():
        return final
    staging = final.with_name(f".make-{os.urandom(6).hex()}")
    staging.mkdir(parents=True, mode=0o755)
    try:
        fill(staging)
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if staging.exists():
            remove_tree(staging)
    return final
