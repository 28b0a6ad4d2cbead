"""The guest's initramfs: its programs (``init``, which the kernel runs, among them), the
directories and console the kernel needs before init mounts anything, and
exactly the kernel modules asked for, with their dependencies:

``/dev /proc /sys /run``   empty mount points;
``/dev/console``           char 5:1, the console the kernel opens for init;
``/modules/<name>.ko``     each module (decompressed: init loads them with
                           finit_module and no decompression flag);
``/modules/order``         their file names, one a line, dependencies first.

Built once per set of inputs and cached as ``initramfs-<key>.cpio``, the key
a sha256 over every input's bytes (files, modules, kernel), written by
rename so concurrent builders each leave a whole one.  Uncompressed: under
emulation a decompressor costs boot time and the archive is small.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import EngineError, InvalidArgumentError
from .cpio import NewcWriter
from .kernel import FETCH_COMMAND, Kernel

try:
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # before Python 3.14
    from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]

FORMAT = 1  # of the archive's layout: a change makes new keys
MOUNT_POINTS = ("dev", "proc", "sys", "run")
MODULE_DIR = "modules"
ORDER = f"{MODULE_DIR}/order"
CONSOLE = ("dev/console", 5, 1)
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".ko": lambda data: data,
    ".ko.xz": lzma.decompress,
    ".ko.gz": gzip.decompress,
    ".ko.zst": lambda data: zstd.decompress(data),  # type: ignore[no-any-return, unused-ignore]
}
# An archive entry: name, mode bits, contents.
Entry = tuple[str, int, bytes]


def initramfs(
    kernel: Kernel, files: Mapping[str, Path], modules: Sequence[str], cache_dir: Path
) -> Path:
    """The cached initramfs of ``files`` (name in the archive -> host file)
    and ``modules`` (names, as modprobe takes them) of ``kernel``."""
    programs = [_program(name, path) for name, path in sorted(files.items())]
    if len({name for name, _, _ in programs}) != len(programs):
        raise InvalidArgumentError("an initramfs file is named twice")
    digests = kernel.module_digests()
    taken = [_module_entry(path, digests) for path in load_order(kernel, modules, digests)]
    target = cache_dir / f"initramfs-{_key(kernel, modules, programs, taken)}.cpio"
    if target.is_file():
        return target
    with _writing(target) as out:
        _write(out, programs, taken)
    return target


def _key(kernel: Kernel, modules: Sequence[str], programs: list[Entry], taken: list[Entry]) -> str:
    def digests(entries: list[Entry]) -> list[list[object]]:
        return [[name, mode, hashlib.sha256(data).hexdigest()] for name, mode, data in entries]

    doc = {
        "format": FORMAT,
        "kernel": kernel.sha256,
        "modules": list(modules),
        "files": digests(programs),
        "module_files": digests(taken),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``target`` that becomes it if all went well."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".initramfs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write(out: BinaryIO, programs: list[Entry], taken: list[Entry]) -> None:
    cpio = NewcWriter(out)
    for d in (*MOUNT_POINTS, MODULE_DIR):
        cpio.directory(d)
    cpio.char_device(*CONSOLE)
    for name, mode, data in [*programs, *taken]:
        cpio.file(name, data, mode)
    cpio.file(ORDER, "".join(f"{name.rpartition('/')[2]}\n" for name, _, _ in taken).encode())
    cpio.close()


def _program(name: str, path: Path) -> Entry:
    parts = name.strip("/").split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgumentError(f"bad initramfs file name {name!r}")
    if parts[0] in (*MOUNT_POINTS, MODULE_DIR):
        raise InvalidArgumentError(f"initramfs file {name!r} is under a reserved directory")
    try:
        data = path.read_bytes()
        executable = path.stat().st_mode & 0o111
    except OSError as e:
        raise InvalidArgumentError(f"cannot read {path} for the initramfs: {e.strerror}") from e
    return "/".join(parts), 0o755 if executable else 0o644, data


# -- modules -----------------------------------------------------------------


def module_name(file_name: str) -> str:
    """A module's name as modprobe and modules.dep mean it: its file's name
    without .ko and compression suffix, dashes as underscores."""
    base = file_name.rpartition("/")[2]
    for suffix in sorted(_DECOMPRESS, key=len, reverse=True):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def load_order(
    kernel: Kernel, modules: Sequence[str], digests: Mapping[str, str] | None = None
) -> list[Path]:
    """The module files to load for ``modules``, each after what it needs;
    built-in ones are left out, and a kernel with no module directory has
    everything built in."""
    if kernel.modules is None:
        return []
    digests = kernel.module_digests() if digests is None else digests
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in _verified(kernel.modules / "modules.dep", digests).decode().splitlines():
        path, _, needs = line.partition(":")
        deps[module_name(path)] = (path, [module_name(p) for p in needs.split()])
    builtin_text = _verified(kernel.modules / "modules.builtin", digests, missing_ok=True)
    builtin = {module_name(p) for p in builtin_text.decode().split()}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name in builtin:
            return
        if name not in deps:
            raise EngineError(
                f"kernel {kernel.release} has no module {name!r} (neither built in nor in "
                f"{kernel.modules}/modules.dep)"
            )
        for dep in reversed(deps[name][1]):  # modules.dep lists the nearest need first
            visit(dep)
        order.append(name)

    for name in modules:
        visit(module_name(name))
    return [kernel.modules / deps[name][0] for name in order]


def _module_entry(path: Path, digests: Mapping[str, str]) -> Entry:
    raw = _verified(path, digests)
    suffix = next(s for s in sorted(_DECOMPRESS, key=len, reverse=True) if path.name.endswith(s))
    try:
        data = _DECOMPRESS[suffix](raw)
    except (lzma.LZMAError, OSError, EOFError, ValueError) as e:
        raise EngineError(f"cannot decompress the module {path}: {e}") from e
    return f"{MODULE_DIR}/{path.name.removesuffix(suffix)}.ko", 0o644, data


def _verified(path: Path, digests: Mapping[str, str], missing_ok: bool = False) -> bytes:
    """A kernel file's bytes, checked against the sha256 recorded at fetch
    (where one was)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return b""
        raise EngineError(f"the kernel's {path} is missing") from None
    except OSError as e:
        raise EngineError(f"cannot read the kernel's {path}: {e.strerror}") from e
    want = digests.get(str(path))
    if digests and want != hashlib.sha256(data).hexdigest():
        raise EngineError(
            f"the kernel cache is corrupt ({path} is not as fetched): "
            f"refetch it with `{FETCH_COMMAND}`"
        )
    return data
