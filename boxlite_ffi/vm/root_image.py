"""An image's layers as ONE read-only ext4 image for a guest's virtio-blk
disk (microvm has few device slots; images have 40+ layers): its top
directory holds each layer directory under ``layer_name(lower)``, and the
guest stacks them with overlayfs as the ns engine stacks the host's.

The layers go in as they are on the host: owners, modes (setuid too),
symlinks, hard links within a layer, whiteouts (0:0 character devices) and
the ``user.overlay.opaque`` attribute of opaque directories (mkfs.ext4 -d
copies extended attributes).  Unpacking keeps no owners from the tar: every
file belongs to the runtime's user, so an unprivileged runtime's image holds
that user's uid throughout (the guest maps it to root).

mkfs.ext4 takes one source directory, so the layers are staged as hard
links (fast, no data copied) in a directory beside the cache, which must be
on the layers' filesystem (``<home>/images/vm`` is).  The image is cached
as ``root-<key>.ext4``, the key a sha256 of the ordered layer names (each
content-addressed itself), and appears by rename.  Build under the image
cache's shared lock (``Images.hold()``): prune sweeps what no image uses.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import EngineError, InvalidArgumentError
from ..tree import remove_tree

CACHE_PART = "vm"  # <home>/images/vm
FORMAT = 1  # of the image's layout: a change makes new keys
BLOCK = 4096
INODE_SIZE = 256
_LAYER = re.compile(r"[0-9a-f]{64}")
_MiB = 1 << 20


def layer_name(lower: Path) -> str:
    """A layer's directory name in the image: the image cache's own name of
    it (``layers/<ChainID hex>``), unique and content-addressed."""
    if not _LAYER.fullmatch(lower.name):
        raise InvalidArgumentError(f"{lower} is not a layer of the image cache")
    return lower.name


def root_image_path(lowers: Sequence[Path], cache_dir: Path) -> Path:
    """Where the image of ``lowers`` (top-most first) is cached."""
    names = [layer_name(lower) for lower in lowers]
    if len(set(names)) != len(names):
        raise InvalidArgumentError("a layer is named twice in one image")
    key = hashlib.sha256(f"{FORMAT}\n{chr(10).join(names)}".encode()).hexdigest()
    return cache_dir / f"root-{key}.ext4"


def root_image(lowers: Sequence[Path], cache_dir: Path) -> Path:
    """The cached ext4 image holding ``lowers`` (top-most first), made if
    missing."""
    target = root_image_path(lowers, cache_dir)
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".stage-"))
    try:
        staging.chmod(0o755)
        for lower in lowers:
            _link_tree(lower, staging / layer_name(lower))
        _mkfs(staging, target)
    finally:
        remove_tree(staging)
    return target


def sweep(cache_dir: Path, keep: Iterable[Path]) -> int:
    """Delete every root image not in ``keep`` and every build's leftover
    (call with the image cache locked exclusive).  Returns bytes freed."""
    freed = 0
    keep = set(keep)
    if not cache_dir.is_dir():
        return 0
    for path in cache_dir.iterdir():
        if path in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                remove_tree(path)
            else:
                freed += path.lstat().st_blocks * 512
                path.unlink()
    return freed


# -- staging -----------------------------------------------------------------


def _link_tree(src: Path, dst: Path) -> None:
    """``dst``: a directory tree of hard links to ``src``'s files, its
    directories made afresh with ``src``'s metadata."""
    os.mkdir(dst)
    try:
        entries = list(os.scandir(src))
    except OSError as e:
        raise EngineError(f"cannot read the layer directory {src}: {e.strerror}") from e
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), dst / entry.name)
            continue
        try:
            os.link(entry.path, dst / entry.name, follow_symlinks=False)
        except OSError as e:
            why = "not on the layers' filesystem" if e.errno == errno.EXDEV else e.strerror
            raise EngineError(f"cannot stage {entry.path} for the root image: {why}") from e
    _copy_metadata(src, dst)  # last: its mode may forbid writing, its time changed


def _copy_metadata(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    with contextlib.suppress(PermissionError):  # an unprivileged runtime owns every layer
        os.chown(dst, st.st_uid, st.st_gid)
    for name in os.listxattr(src, follow_symlinks=False):
        with contextlib.suppress(PermissionError):  # trusted.* needs root
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- the image ---------------------------------------------------------------


def _mkfs(staging: Path, target: Path) -> None:
    """mkfs.ext4 -d of the staged tree, sized for it, into ``target`` by
    rename; once more at twice the size if the estimate fell short."""
    size, inodes = _estimate(staging)
    mkfs = shutil.which("mkfs.ext4", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if mkfs is None:
        raise EngineError("mkfs.ext4 is not installed (Debian's e2fsprogs)")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".root-", suffix=".tmp")
    os.close(fd)
    # Read-only: no journal, no reserve, no room to grow; the top directory
    # root's, each layer below it keeping its own owner.
    cmd = [
        mkfs, "-q", "-F", "-b", str(BLOCK), "-I", str(INODE_SIZE), "-N", str(inodes),
        "-m", "0", "-O", "^has_journal,^resize_inode", "-L", "boxlite-root",
        "-E", "root_owner=0:0,nodiscard", "-d", str(staging), tmp,
    ]  # fmt: skip
    try:
        for attempt in (1, 2):
            os.truncate(tmp, size * attempt)
            done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if done.returncode == 0:
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
                return
        said = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise EngineError(f"mkfs.ext4 of the root image failed ({done.returncode}): {said}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _estimate(root: Path) -> tuple[int, int]:
    """(bytes, inodes) an ext4 image of the tree needs: its data and
    directory blocks once per inode, long symlinks' blocks, the inode table,
    with a tenth and 8 MiB more for extent trees, group metadata and
    lost+found; rounded up to a MiB."""
    blocks, seen = 0, set()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                blocks += max(1, -(-st.st_size // BLOCK))
            elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:  # shorter ones fit the inode
                blocks += 1
    inodes = len(seen) + 1024
    need = (blocks + 1) * BLOCK + inodes * INODE_SIZE
    size = need + need // 10 + 8 * _MiB
    return -(-size // _MiB) * _MiB, inodes
