"""The guest kernel of the vm engine: Debian's cloud kernel, downloaded
through apt's signed index (``apt-get download`` checks the package against
the index's hashes) and unpacked, not installed, into a cache directory:

``boot/vmlinuz-<release>``   the kernel QEMU boots directly;
``lib/modules/<release>/``   its modules, ``depmod`` run on them;
``modules.sha256``           every file under ``lib/modules/<release>``, in
                             ``sha256sum`` format (paths relative to the
                             cache), so each module an initramfs takes is
                             checked (and ``sha256sum -c`` checks them all);
``kernel.json``              package, version, release, ``vmlinuz_sha256``,
                             and ``modules_sha256``: the sha256 of
                             ``modules.sha256``, so it names the module set.

``kernel.json`` is written last (by rename): a cache without it is none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineError
from .digest import sha256_file

KERNEL_DIR_ENV = "BOXLITE_VM_KERNEL_DIR"
DEFAULT_KERNEL_DIR = Path("/var/cache/boxlite/kernel")
PACKAGE = "linux-image-cloud-amd64"  # depends on linux-image-<version>-cloud-amd64
RECORD = "kernel.json"
MANIFEST = "modules.sha256"
FETCH_COMMAND = "python3 -m boxlite_ffi.vm fetch-kernel"
# depmod and dpkg-deb live in sbin, which a user's PATH may lack.
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_DEPENDS = re.compile(r"^\s*Depends:\s*(linux-image-\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    release: str  # what uname -r says in the guest
    modules: Path | None  # lib/modules/<release>; None: everything is built in
    version: str | None  # the Debian package's version; None for a kernel the user names
    sha256: str  # of vmlinuz
    manifest: Path | None = None  # modules.sha256 of a fetched kernel: what modules hash to

    def module_digests(self) -> Mapping[str, str]:
        """Module file path (absolute) -> the sha256 it had at fetch; empty
        for a kernel nobody recorded."""
        if self.manifest is None:
            return {}
        base = self.manifest.parent
        digests = {}
        for line in self.manifest.read_text().splitlines():
            digest, _, rel = line.partition("  ")
            digests[str(base / rel)] = digest
        return digests


def kernel_dir() -> Path:
    """Where the fetched kernel is cached: ``$BOXLITE_VM_KERNEL_DIR``, else
    one directory for the machine (fetched by root, readable by all)."""
    return Path(os.environ.get(KERNEL_DIR_ENV) or DEFAULT_KERNEL_DIR)


def _fetch_command(directory: Path) -> str:
    if directory == kernel_dir():
        return FETCH_COMMAND
    return f"{FETCH_COMMAND} --dir {directory}"


def find_kernel(named: Path | None = None) -> Kernel:
    """The kernel to boot: the one fetched into ``kernel_dir()``, verified
    against its record; or ``named``: a vmlinuz file (with no modules), a
    directory of the cache's layout, or one with just ``boot/vmlinuz-*``
    and ``lib/modules/*``."""
    if named is None:
        return _cached(kernel_dir())
    if named.is_file():
        return Kernel(named, bzimage_release(named), None, None, sha256_file(named))
    if named.is_dir():
        if (named / RECORD).exists():
            return _cached(named)
        return _unrecorded(named)
    raise EngineError(f"no kernel at {named}: name a vmlinuz file or a kernel directory")


def _cached(directory: Path) -> Kernel:
    record = _read_record(directory)
    if record is None:
        raise EngineError(
            f"no guest kernel in {directory}: fetch one with `{_fetch_command(directory)}`"
        )
    release = record["release"]
    vmlinuz = directory / "boot" / f"vmlinuz-{release}"
    manifest = directory / MANIFEST
    for path, want in ((vmlinuz, record["vmlinuz_sha256"]), (manifest, record["modules_sha256"])):
        try:
            got = sha256_file(path)
        except OSError as e:
            got = f"unreadable ({e.strerror})"
        if got != want:
            raise EngineError(
                f"the kernel cache {directory} is corrupt ({path.name}: sha256 {got}, "
                f"recorded {want}): refetch it with `{_fetch_command(directory)}`"
            )
    modules = directory / "lib" / "modules" / release
    return Kernel(vmlinuz, release, modules, record["version"], record["vmlinuz_sha256"], manifest)


def _read_record(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise EngineError(
            f"the kernel cache {directory} has an unreadable {RECORD} ({e}): "
            f"refetch it with `{_fetch_command(directory)}`"
        ) from e
    keys = ("package", "version", "release", "vmlinuz_sha256", "modules_sha256")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
        raise EngineError(
            f"the kernel cache {directory} has a malformed {RECORD}: "
            f"refetch it with `{_fetch_command(directory)}`"
        )
    return record


def _unrecorded(directory: Path) -> Kernel:
    found = sorted((directory / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        what = "no boot/vmlinuz-*" if not found else f"{len(found)} kernels in boot/"
        raise EngineError(f"{directory} holds {what}: name one vmlinuz file instead")
    vmlinuz = found[0]
    release = vmlinuz.name.removeprefix("vmlinuz-")
    modules = directory / "lib" / "modules" / release
    return Kernel(
        vmlinuz,
        release,
        modules if modules.is_dir() else None,
        None,
        sha256_file(vmlinuz),
    )


def bzimage_release(vmlinuz: Path) -> str:
    """The release a bzImage was built as, from its setup header (the
    ``kernel_version`` field points at "<release> (builder) #..."), so a
    kernel named by path needs no particular file name."""
    try:
        with open(vmlinuz, "rb") as f:
            head = f.read(0x10000)
    except OSError as e:
        raise EngineError(f"cannot read the kernel {vmlinuz}: {e.strerror}") from e
    if head[0x202:0x206] != b"HdrS":
        raise EngineError(f"{vmlinuz} is not a Linux bzImage (no setup header)")
    start = 0x200 + int.from_bytes(head[0x20E:0x210], "little")
    text = head[start : start + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    release = text.split(" ", 1)[0]
    if not release:
        raise EngineError(f"{vmlinuz} names no kernel release in its setup header")
    return release


# -- fetching ----------------------------------------------------------------


def fetch_kernel(dest: Path | None = None) -> Kernel:
    """Download Debian's cloud kernel into ``dest`` (default ``kernel_dir()``)
    and record it; a cache there that verifies is kept as it is."""
    dest = dest or kernel_dir()
    with contextlib.suppress(EngineError):
        return _cached(dest)  # without the lock: a user may read root's cache
    with _locked(dest):
        with contextlib.suppress(EngineError):
            return _cached(dest)
        package = _package()
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
            deb = _download(package, Path(tmp))
            version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
            release = _unpack(deb, dest)
        _run(["depmod", "-b", str(dest), release])
        manifest = _write_manifest(dest, release)
        _write_record(
            dest,
            {
                "package": package,
                "version": version,
                "release": release,
                "vmlinuz_sha256": sha256_file(dest / "boot" / f"vmlinuz-{release}"),
                "modules_sha256": sha256_file(manifest),
            },
        )
        return _cached(dest)


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """One fetcher at a time per cache (a second waits, then keeps the
    first one's kernel)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        lock = open(dest / ".lock", "a")  # noqa: SIM115 (the with below closes it)
    except OSError as e:
        raise EngineError(
            f"cannot write the kernel cache {dest}: {e.strerror} "
            "(fetch as root, or into a directory of yours with --dir)"
        ) from e
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _package() -> str:
    """The versioned package the meta package depends on today."""
    found = _DEPENDS.search(_run(["apt-cache", "depends", PACKAGE], check=False))
    if found is None and os.geteuid() == 0:
        _run(["apt-get", "update", "-q"])  # a fresh machine's empty index
        found = _DEPENDS.search(_run(["apt-cache", "depends", PACKAGE], check=False))
    if found is None:
        raise EngineError(f"apt knows no {PACKAGE}: run `apt-get update` as root, then fetch again")
    return found[1]


def _download(package: str, work: Path) -> Path:
    cmd = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        cmd += ["-o", "APT::Sandbox::User=root"]  # _apt may not write into root's temp dir
    _run([*cmd, package], cwd=work)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise EngineError(f"apt-get download {package} left {len(debs)} packages, not one")
    return debs[0]


def _unpack(deb: Path, dest: Path) -> str:
    """Unpack over a clean cache (an earlier or corrupt one goes first,
    its record before anything) and return the kernel's release."""
    (dest / RECORD).unlink(missing_ok=True)
    for part in ("boot", "lib", "usr", MANIFEST):
        path = dest / part
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])
    releases = [p.name for p in (dest / "lib" / "modules").iterdir()]
    if len(releases) != 1 or not (dest / "boot" / f"vmlinuz-{releases[0]}").is_file():
        raise EngineError(f"{deb.name} does not hold one kernel and its modules")
    return releases[0]


def _write_manifest(dest: Path, release: str) -> Path:
    base = dest / "lib" / "modules" / release
    lines = [
        f"{sha256_file(path)}  {path.relative_to(dest)}\n"
        for path in sorted(base.rglob("*"))
        if path.is_file() and not path.is_symlink()
    ]
    manifest = dest / MANIFEST
    _write_atomically(manifest, "".join(lines))
    return manifest


def _write_record(dest: Path, record: dict[str, str]) -> None:
    _write_atomically(dest / RECORD, json.dumps(record, indent=2) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run(cmd: list[str], cwd: Path | None = None, check: bool = True) -> str:
    tool = shutil.which(cmd[0], path=_TOOL_PATH)
    if tool is None:
        raise EngineError(f"{cmd[0]} is not installed (the kernel fetch needs apt and kmod)")
    done = subprocess.run(
        [tool, *cmd[1:]], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        said = done.stderr.strip().splitlines()[-3:]
        raise EngineError(f"{' '.join(cmd)} failed ({done.returncode}): {' / '.join(said)}")
    return done.stdout
