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

A layer is bounded (``UnpackLimits``) before anything is written: a tar's
headers declare each file's size, and a sparse member (GNU or PAX sparse)
declares the size it expands to, so a 10 KiB layer cannot become 1 GiB of
zeros on disk.  The number of entries is bounded too (inodes), and so is
the uncompressed stream (a decompression bomb, zeros after the end of the
tar, a huge PAX header): the files' budget plus ``HEADER_ALLOWANCE`` per
entry allowed.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DigestMismatchError, ImageError, ImageTooLargeError

if TYPE_CHECKING:
    import tarfile

# tarfile, gzip, zstd and hashlib load when a layer is unpacked: every box's
# specification imports this module for UnpackLimits, few boxes unpack.

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
MAX_SYMLINK_HOPS = 40
CHUNK = 1 << 20
HEADER_ALLOWANCE = 1024  # bytes of tar headers per entry (a PAX header and its own)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class UnpackLimits:
    """What one layer may unpack to: ``max_bytes`` bounds the sum of its
    files' declared sizes, ``max_entries`` the entries in it."""

    max_bytes: int = 16 << 30
    max_entries: int = 1 << 20

    @property
    def max_stream(self) -> int:
        """The uncompressed tar's bound: the files and their headers."""
        return self.max_bytes + HEADER_ALLOWANCE * self.max_entries


DEFAULT_LIMITS = UnpackLimits()


class _Hashing:
    """A read-only stream that hashes what passes through it (the diff_id)
    and refuses to give more than ``limit`` bytes."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self.raw = raw
        import hashlib

        self.hash = hashlib.sha256()
        self.length = 0
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.length += len(data)
        if self.length > self.limit:
            raise ImageTooLargeError(f"its uncompressed tar is larger than {self.limit} bytes")
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def decompressed(raw: io.BufferedReader) -> io.BufferedIOBase:
    """gzip, zstd or plain, told by the stream's first bytes (docker-archive
    and some registries label compressed layers as plain tars)."""
    import gzip

    head = raw.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == _ZSTD_MAGIC:
        return zstd_module().ZstdFile(raw, mode="rb")  # type: ignore[no-any-return, unused-ignore]
    return raw


def zstd_module() -> Any:
    """compression.zstd (Python 3.14) or its backport."""
    try:
        from compression import zstd  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]
    return zstd


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _ns(mtime: float) -> tuple[int, int]:
    return (int(mtime * 10**9),) * 2


class LayerWriter:
    """Writes one layer into ``top`` over ``lowers`` (top-most first).

    Paths are plain strings relative to a layer's root ("" is the root)."""

    def __init__(self, top: str, lowers: list[str], limits: UnpackLimits) -> None:
        self.top = top
        self.layers = [top, *lowers]
        self.limits = limits
        self.skipped_devices = 0
        self._entries = 0
        self._bytes = 0  # declared by the regular files so far
        self._dirs: dict[str, list[str]] = {}  # rel dir -> layers showing it
        self._resolved: dict[str, str] = {}  # an entry's parent as named -> resolved
        self._top_dirs: set[str] = set()  # directories this layer has
        self._dir_times: list[tuple[str, int]] = []

    def _at(self, rel: str, layer: str | None = None) -> str:
        return os.path.join(layer or self.top, rel) if rel else layer or self.top

    def _changed(self) -> None:
        """Something other than a new file or directory changed the view."""
        self._dirs.clear()
        self._resolved.clear()
        self._top_dirs.clear()

    # -- the merged view ---------------------------------------------------

    def _visible_dirs(self, rel: str) -> list[str]:
        """The layers (top first) whose directory ``rel`` shows through."""
        if not rel:
            return self.layers
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        out = []
        for layer in self._visible_dirs(posixpath.dirname(rel)):
            st = _lstat(self._at(rel, layer))
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-directory hides the layers below
            out.append(layer)
            if _opaque(self._at(rel, layer)):
                break
        self._dirs[rel] = out
        return out

    def _find(self, rel: str) -> tuple[str, os.stat_result] | None:
        """The file that shows at ``rel`` in the merged view, if any."""
        for layer in self._visible_dirs(posixpath.dirname(rel)):
            path = self._at(rel, layer)
            st = _lstat(path)
            if st is not None:
                return None if _is_whiteout(st) else (path, st)
        return None

    def resolve(self, name: str) -> str:
        """``name`` with every symlink in it resolved inside the root."""
        cached = self._resolved.get(name)
        if cached is None:
            cached = self._resolved[name] = self._resolve(name)
        return cached

    def _resolve(self, name: str) -> str:
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
        path = self._at(rel)
        os.mkdir(path, 0o700)
        if below is not None and lower_dir:
            os.chmod(path, stat.S_IMODE(below[1].st_mode) | 0o700)
            self._dir_times.append((path, below[1].st_mtime_ns))
        else:
            os.chmod(path, 0o755)
        if hid:  # this layer deleted what was below: only what it adds shows
            os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
            shown = []
        self._dirs[rel] = [self.top, *shown]
        self._top_dirs.add(rel)

    def _ensure_dir(self, rel: str) -> None:
        if rel in self._top_dirs:
            return
        st = _lstat(self._at(rel))
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._make_dir(rel)
        self._top_dirs.add(rel)

    def _remove_top(self, rel: str) -> bool:
        """Clear what this layer itself put at ``rel`` (never a lower one);
        True if that was a whiteout."""
        path = self._at(rel)
        st = _lstat(path)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        self._changed()
        return _is_whiteout(st)

    # -- entries -----------------------------------------------------------

    def _count(self, member: tarfile.TarInfo) -> None:
        """Refuse the entry that takes the layer over its limits, before
        it is written (a sparse member's size is what it expands to)."""
        self._entries += 1
        if self._entries > self.limits.max_entries:
            raise ImageTooLargeError(f"it has more than {self.limits.max_entries} entries")
        if member.isfile():
            self._bytes += member.size
            if self._bytes > self.limits.max_bytes:
                raise ImageTooLargeError(
                    f"its files exceed {self.limits.max_bytes} bytes"
                    f" ({member.name!r} declares {member.size})"
                )

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._count(member)
        parent, base = posixpath.split(member.name.rstrip("/"))
        if base in ("", ".", ".."):
            return  # the root itself, or a name that is no entry
        parent = self.resolve(parent)
        if base == OPAQUE:
            self._ensure_dir(parent)
            os.setxattr(self._at(parent), OPAQUE_XATTR, b"y", follow_symlinks=False)
            self._changed()
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
            os.chmod(self._at(rel), stat.S_IMODE(member.mode) | 0o700)  # we write into it
            self._dir_times.append((self._at(rel), _ns(member.mtime)[0]))
            return
        self._remove_top(rel)
        self._write(tar, member, rel)

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
        os.mknod(self._at(rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
        self._changed()

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> None:
        """A file, symlink, hard link or FIFO, with its mode and time."""
        path = self._at(rel)
        if member.isfile():
            source = tar.extractfile(member)
            assert source is not None  # a regular file has data
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
                os.fchmod(out.fileno(), stat.S_IMODE(member.mode))
                out.flush()
                os.utime(out.fileno(), ns=_ns(member.mtime))
        elif member.issym():
            os.symlink(member.linkname, path)
            os.utime(path, ns=_ns(member.mtime), follow_symlinks=False)
            self._changed()  # names resolved through this path may now go elsewhere
        elif member.islnk():
            os.link(self._link_source(member.linkname), path)
        elif member.isfifo():
            os.mkfifo(path, 0o600)
            os.chmod(path, stat.S_IMODE(member.mode))
            os.utime(path, ns=_ns(member.mtime))
        else:
            raise ImageError(f"{member.name!r}: unsupported tar entry type {member.type!r}")
        if rel in self._dirs:  # a directory below is hidden now, and all in it
            self._changed()

    def _link_source(self, linkname: str) -> str:
        """The top-layer file a hard link names (copied up from a lower
        layer first: a link never spans layers)."""
        parent, base = posixpath.split(linkname)
        rel = posixpath.join(self.resolve(parent), base).lstrip("/")
        found = self._find(rel)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            raise ImageError(f"hard link to {linkname!r}, which is no regular file")
        if found[0] != self._at(rel):
            parent = posixpath.dirname(rel)
            if parent:
                self._ensure_dir(parent)
            shutil.copy2(found[0], self._at(rel), follow_symlinks=False)
        return self._at(rel)

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
    limits: UnpackLimits = DEFAULT_LIMITS,
) -> int:
    """Unpack a layer blob into the empty directory ``top``; verifies the
    uncompressed tar against ``diff_id``.  Returns the devices skipped.
    Beyond ``limits`` it raises ImageTooLargeError, leaving ``top`` partly
    filled for the caller to remove (the cache unpacks into a staging
    directory it deletes)."""
    import tarfile

    zstd = zstd_module()
    writer = LayerWriter(str(top), [str(p) for p in lowers], limits)
    try:
        stream = _Hashing(decompressed(blob), limits.max_stream)
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                writer.add(tar, member)
        writer.finish()
        actual = stream.drain()
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"layer {diff_id} is too large to unpack: {exc}") from None
    except (OSError, tarfile.TarError, EOFError, zstd.ZstdError) as exc:
        raise ImageError(f"cannot unpack layer {diff_id}: {exc}") from exc
    if actual != diff_id:
        raise DigestMismatchError(f"layer {diff_id} unpacks to {actual}")
    return writer.skipped_devices
