"""Apply OCI layer tars onto one root filesystem directory.

Whiteouts (``.wh.NAME``) delete NAME from the layers below; an opaque marker
(``.wh..wh..opq``) empties its directory of what the layers below put there.
Paths are resolved *inside* the root, the way the box will see them: a
symlink an earlier entry placed (``lib -> /usr/lib``) is followed relative to
the root, never to the host, so no entry can write outside the root.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

from .errors import ImageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINK_HOPS = 40


def resolve_in_root(root: Path, relpath: str) -> str:
    """``relpath`` with every symlink component resolved inside ``root``.

    Returns a normalised path relative to root; ``..`` never climbs above it.
    """
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageError(f"too many levels of symbolic links in {relpath!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return "/".join(resolved)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _apply_whiteouts(root: Path, members: list[tarfile.TarInfo]) -> None:
    """Whiteouts act on the layers below only, so they run before extraction."""
    for m in members:
        parent, base = posixpath.split(m.name)
        if base == OPAQUE:
            directory = root / resolve_in_root(root, parent)
            if directory.is_dir():
                for child in directory.iterdir():
                    _remove(child)
        elif base.startswith(WHITEOUT):
            target = resolve_in_root(root, parent) + "/" + base[len(WHITEOUT) :]
            _remove(root / target.lstrip("/"))


class _Extractor:
    """A tarfile filter placing each member at its in-root resolved path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.skipped_devices = 0

    def __call__(self, member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo | None:
        if member.isdev() or member.isfifo():
            self.skipped_devices += 1  # no device nodes in a box's image
            return None
        parent, base = posixpath.split(member.name.rstrip("/"))
        if not base or base in (".", ".."):
            return None
        name = posixpath.join(resolve_in_root(self.root, parent), base).lstrip("/")
        target = self.root / name
        # Replace what a lower layer left there, unless both are directories;
        # this also means the final component is never a symlink followed.
        if target.is_symlink() or (target.exists() and not (target.is_dir() and member.isdir())):
            _remove(target)
        linkname = (
            resolve_in_root(self.root, member.linkname) if member.islnk() else member.linkname
        )
        return member.replace(
            name=name,
            linkname=linkname,
            uid=self.uid,
            gid=self.gid,
            uname="",
            gname="",
            mode=stat.S_IMODE(member.mode) | (0o700 if member.isdir() else 0),
            deep=False,
        )


def apply_layer(root: Path, layer: tarfile.TarFile) -> int:
    """Apply one layer; returns how many device nodes were skipped."""
    members = layer.getmembers()
    _apply_whiteouts(root, members)
    extractor = _Extractor(root)
    for m in members:
        if posixpath.basename(m.name.rstrip("/")).startswith(WHITEOUT):
            continue
        try:
            layer.extract(m, root, set_attrs=True, filter=extractor)
        except (OSError, tarfile.TarError, KeyError) as exc:
            # KeyError: a hard link whose target is not in the root.
            raise ImageError(f"cannot unpack {m.name!r}: {exc}") from exc
    return extractor.skipped_devices
