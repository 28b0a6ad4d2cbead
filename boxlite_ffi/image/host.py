"""The built-in image ``host``: the host's own programs, read-only, in a box
(so ``python3`` runs with nothing downloaded).

Its root is a small layer made here: the host's /usr, /bin, /sbin and /lib*
as empty mount points (or as the same symlinks, on a merged-/usr host, which
the host's directories are then bind-mounted onto, read-only), and an /etc
of an allow-list of files the host's programs need to run: the dynamic
linker's cache, certificates, alternatives, name-service switch...  Nothing
secret: no shadow, ssh, sudoers, machine-id or private keys; passwd, group
and hosts are written fresh.

The layer is content-addressed by what it was made from, so a box keeps
the one it started with while a changed host gets a new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import TypeAlias

from .._core.core import Mount
from ..tree import make_dir_once
from .media import ImageConfig

NAME = "host"
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_ALLOWED = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "python3",
    "services",
    "shells",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
)
GENERATED = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
CONFIG = ImageConfig(
    diff_ids=(),
    env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"),
)
_VERSION = b"host-image 1"


# A file to copy: its path in /etc, its host path, its lstat.
Source: TypeAlias = tuple[str, str, os.stat_result]


def _sources(etc: Path) -> list[Source]:
    """Every allowed file of /etc, links not followed, in a stable order."""
    found: list[Source] = []

    def walk(rel: str, path: str) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            found.append((rel, path, st))
            return
        with contextlib.suppress(PermissionError), os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                walk(f"{rel}/{entry.name}", entry.path)

    for name in ETC_ALLOWED:
        walk(name, os.path.join(etc, name))
    return found


def _fingerprint(host: Path, sources: list[Source]) -> str:
    import hashlib  # on use: only a host box fingerprints

    h = hashlib.sha256(_VERSION)
    for name in HOST_DIRS:
        path = host / name
        h.update(f"{name}={os.readlink(path) if path.is_symlink() else path.is_dir()}\n".encode())
    for rel, _, st in sources:
        h.update(f"{rel}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def host_layer(images: Path, host: Path = Path("/")) -> tuple[Path, tuple[Mount, ...]]:
    """The host image's layer directory (made if needed) and its mounts."""
    sources = _sources(host / "etc")
    final = images / "host" / _fingerprint(host, sources)
    mounts = tuple(
        Mount(str(host / name), f"/{name}", readonly=True)
        for name in HOST_DIRS
        if (host / name).is_dir() and not (host / name).is_symlink()
    )
    return make_dir_once(final, lambda staging: _fill(staging, host, sources)), mounts


def _fill(root: Path, host: Path, sources: list[Source]) -> None:
    for name in HOST_DIRS:
        top = host / name
        if top.is_symlink():
            (root / name).symlink_to(os.readlink(top))
        elif top.is_dir():
            (root / name).mkdir(mode=0o755)
    for name in ("etc", "root", "tmp", "proc", "dev", "home", "run", "var/tmp"):
        (root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    for rel, path, st in sources:
        dest = root / "etc" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISLNK(st.st_mode):
                dest.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, dest)
        except PermissionError:
            continue  # not readable by us: not for a box either
    for name, text in GENERATED.items():
        (root / "etc" / name).write_text(text)
