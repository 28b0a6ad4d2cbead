"""Unpack one layer tar into its own directory, in overlayfs's format, so a
box's root is its image's layer directories stacked by overlayfs.

A layer's entries are resolved against the *merged* view of the layers
below plus what this layer has written so far, exactly as the box will see
them: ``lib/x`` over a lower ``lib -> usr/lib`` lands in ``usr/lib/x``;
``..`` never climbs above the root; absolute symlinks are followed relative
to the root, never to the host.  Directories that an entry needs are copied
up from the lower layers (mode and time), as overlayfs itself would.

Whiteouts (``.wh.NAME``) delete NAME, in tar order as docker applies them;
what is below becomes hidden by an overlayfs whiteout (a 0:0 character
device, which unprivileged users may create); an opaque marker
(``.wh..wh..opq``) becomes the ``user.overlay.opaque`` attribute, which the
box's overlay reads (it is mounted with ``userxattr``).

Policy for special files: FIFOs are kept; character and block devices are
skipped (counted), since a box gets its own /dev and an unprivileged user
cannot create them.  Owners are not kept: every file belongs to the runtime's
user, which is root inside the box.  Extended attributes are not kept.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from ..errors import DigestMismatchError, ImageError

try:
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
MAX_SYMLINK_HOPS = 40
CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Hashing:
    """A read-only stream that hashes what passes through it (the diff_id)."""

    def __init__(self, raw: io.BufferedIOBase, on_read: Callable[[int], None]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.on_read(len(data))
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def decompressed(raw: io.BufferedReader) -> io.BufferedIOBase:
    """gzip, zstd or plain, told by the stream's first bytes (docker-archive
    and some registries label compressed layers as plain tars)."""
    head = raw.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == _ZSTD_MAGIC:
        return zstd.ZstdFile(raw, mode="rb")  # type: ignore[no-any-return, unused-ignore]
    return raw


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LayerWriter:
    """Writes one layer into ``top`` over ``lowers`` (top-most first)."""

    def __init__(self, top: Path, lowers: list[Path]) -> None:
        self.top = top
        self.layers = [top, *lowers]
        self.skipped_devices = 0
        self._dirs: dict[str, list[Path]] = {}  # rel dir -> layers showing it
        self._dir_times: list[tuple[Path, int]] = []

    # -- the merged view ---------------------------------------------------

    def _visible_dirs(self, rel: str) -> list[Path]:
        """The layers (top first) whose directory ``rel`` shows through."""
        if not rel:
            return self.layers
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        out = []
        for layer in self._visible_dirs(posixpath.dirname(rel)):
            st = _lstat(layer / rel)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-directory hides the layers below
            out.append(layer)
            if _opaque(layer / rel):
                break
        self._dirs[rel] = out
        return out

    def _find(self, rel: str) -> tuple[Path, os.stat_result] | None:
        """The file that shows at ``rel`` in the merged view, if any."""
        for layer in self._visible_dirs(posixpath.dirname(rel)):
            st = _lstat(layer / rel)
            if st is not None:
                return None if _is_whiteout(st) else (layer / rel, st)
        return None

    def resolve(self, name: str) -> str:
        """``name`` with every symlink in it resolved inside the root."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            found = self._find("/".join([*resolved, part]))
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ImageError(f"too many levels of symbolic links in {name!r}")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if found is not None and parts and not stat.S_ISDIR(found[1].st_mode):
                raise ImageError(f"{name!r}: {'/'.join([*resolved, part])} is not a directory")
            resolved.append(part)
        return "/".join(resolved)

    def _make_dir(self, rel: str) -> None:
        """Make directory ``rel`` in the top layer, copying the lower one's
        mode and time when there is one (copy-up)."""
        parent = posixpath.dirname(rel)
        if parent:
            self._ensure_dir(parent)
        hid = self._remove_top(rel)
        below = self._find(rel)
        lower_dir = below is not None and stat.S_ISDIR(below[1].st_mode)
        shown = self._visible_dirs(rel) if lower_dir else []
        path = self.top / rel
        path.mkdir(mode=0o700)
        if below is not None and lower_dir:
            path.chmod(stat.S_IMODE(below[1].st_mode) | 0o700)
            self._dir_times.append((path, below[1].st_mtime_ns))
        else:
            path.chmod(0o755)
        if hid:  # this layer deleted what was below: only what it adds shows
            os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
            shown = []
        self._dirs[rel] = [self.top, *shown]

    def _ensure_dir(self, rel: str) -> None:
        st = _lstat(self.top / rel)
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._make_dir(rel)

    def _remove_top(self, rel: str) -> bool:
        """Clear what this layer itself put at ``rel`` (never a lower one);
        True if that was a whiteout."""
        path = self.top / rel
        st = _lstat(path)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
        self._dirs.clear()
        return _is_whiteout(st)

    # -- entries -----------------------------------------------------------

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parent, base = posixpath.split(member.name.rstrip("/"))
        if base in ("", ".", ".."):
            return  # the root itself, or a name that is no entry
        parent = self.resolve(parent)
        if base == OPAQUE:
            self._ensure_dir(parent)
            os.setxattr(self.top / parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
            self._dirs.clear()
            return
        rel = posixpath.join(parent, base).lstrip("/")
        if base.startswith(WHITEOUT):
            self._whiteout(parent, base[len(WHITEOUT) :])
            return
        if member.ischr() or member.isblk():
            self.skipped_devices += 1
            return
        if parent:
            self._ensure_dir(parent)
        if member.isdir():
            self._ensure_dir(rel)
        else:
            self._remove_top(rel)
            self._write(tar, member, rel)
        self._attributes(member, rel)

    def _whiteout(self, parent: str, name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ImageError(f"malformed whiteout for {name!r} in {parent!r}")
        rel = posixpath.join(parent, name).lstrip("/")
        # In tar order, as docker applies layers: what this layer put there
        # before goes too.
        self._remove_top(rel)
        if self._find(rel) is None:
            return  # nothing below to hide
        if parent:
            self._ensure_dir(parent)
        os.mknod(self.top / rel, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        self._dirs.clear()

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> None:
        path = self.top / rel
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(self._link_source(member.linkname), path)
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        elif member.isfile():
            source = tar.extractfile(member)
            assert source is not None  # a regular file has data
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        else:
            raise ImageError(f"{member.name!r}: unsupported tar entry type {member.type!r}")
        if rel in self._dirs:  # a directory below is hidden now, and all in it
            self._dirs.clear()

    def _link_source(self, linkname: str) -> Path:
        """The top-layer file a hard link names (copied up from a lower
        layer first: a link never spans layers)."""
        parent, base = posixpath.split(linkname)
        rel = posixpath.join(self.resolve(parent), base).lstrip("/")
        found = self._find(rel)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            raise ImageError(f"hard link to {linkname!r}, which is no regular file")
        if found[0] != self.top / rel:
            parent = posixpath.dirname(rel)
            if parent:
                self._ensure_dir(parent)
            shutil.copy2(found[0], self.top / rel, follow_symlinks=False)
        return self.top / rel

    def _attributes(self, member: tarfile.TarInfo, rel: str) -> None:
        path = self.top / rel
        if member.issym():
            os.utime(path, ns=(int(member.mtime * 10**9),) * 2, follow_symlinks=False)
            return
        mode = stat.S_IMODE(member.mode)
        if member.isdir():
            path.chmod(mode | 0o700)  # we must be able to write into it
            self._dir_times.append((path, int(member.mtime * 10**9)))
        else:
            path.chmod(mode)
            os.utime(path, ns=(int(member.mtime * 10**9),) * 2)

    def finish(self) -> None:
        """Directory times last: writing into a directory changes its time."""
        for path, mtime in reversed(self._dir_times):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # deleted since
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def unpack_layer(
    blob: io.BufferedReader,
    top: Path,
    lowers: list[Path],
    diff_id: str,
    on_read: Callable[[int], None] = lambda n: None,
) -> int:
    """Unpack a layer blob into the empty directory ``top``; verifies the
    uncompressed tar against ``diff_id``.  Returns the devices skipped."""
    writer = LayerWriter(top, lowers)
    try:
        stream = _Hashing(decompressed(blob), on_read)
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                writer.add(tar, member)
        writer.finish()
        actual = stream.drain()
    except (OSError, tarfile.TarError, EOFError, zstd.ZstdError) as exc:
        raise ImageError(f"cannot unpack layer {diff_id}: {exc}") from exc
    if actual != diff_id:
        raise DigestMismatchError(f"layer {diff_id} unpacks to {actual}")
    return writer.skipped_devices
