"""Copying files between the host and a box, as tar streams.

Each copy is an ordinary execution of the agent's own copy helper
(``/proc/1/exe copy-in DIR`` / ``copy-out PATH``, native/agent/copy.c), so it
has flow control, one Exit and clean ending like any execution, and needs
nothing from the box's image.  The host side is stdlib ``tarfile``: writing
the archive for copy-in, reading it for copy-out with every entry checked by
``tarfile.data_filter`` (nothing lands outside the destination) while modes
and mtimes are kept as archived.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, cast

from ..errors import (
    ExecClosedError,
    InvalidArgumentError,
    NotFoundError,
    ProtocolError,
    SystemCallError,
    UnsafePathError,
)
from . import AGENT

if TYPE_CHECKING:
    import tarfile

    from ..execution import ExecResult, Execution

BUFFER = 1 << 20
# The helper's exit statuses (native/agent/copy.c).
_IO, _MALFORMED, _UNSAFE, _UNSUPPORTED = 1, 2, 3, 4


class Runs(Protocol):
    """What a copy needs of a box: running an execution in it."""

    def exec(self, argv: Sequence[str], *, stdin: bool = ...) -> Execution: ...


def copy_in(box: Runs, src: str | os.PathLike[str], dest: str) -> None:
    """Copy the host file or directory ``src`` into the box directory ``dest``
    (created if missing), as ``dest/<name of src>``."""
    source = copy_source(src)
    with box.exec([AGENT, "copy-in", dest], stdin=True) as execution:
        # The helper may stop reading early (it refused an entry): its
        # result says why, so a closed stdin is not the error to report.
        with contextlib.suppress(ExecClosedError):
            write_archive(source, _StdinWriter(execution))
            execution.close_stdin()
        _check(execution.wait(), f"copying {source} into {dest}")


def copy_source(src: str | os.PathLike[str]) -> Path:
    """A host path to copy in: ``NotFoundError`` if there is none."""
    source = Path(src)
    if not source.exists() and not source.is_symlink():
        raise NotFoundError(f"{source} does not exist")
    return source


def write_archive(source: Path, out: IO[bytes] | io.RawIOBase) -> None:
    """``source`` (a file or a tree) as a tar stream into ``out``, as ``<name>``."""
    import tarfile  # on use: every box imports this module, few copy

    with tarfile.open(
        fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.GNU_FORMAT, bufsize=BUFFER
    ) as tar:
        tar.add(source, arcname=source.name)


def extract_archive(archive: IO[bytes] | io.RawIOBase, target: Path) -> tarfile.ReadError | None:
    """Unpack the tar stream into ``target``, every entry checked
    (``UnsafePathError``); a malformed archive's error is returned, for the
    sender's own failure may say more."""
    import tarfile

    try:
        with tarfile.open(fileobj=cast(IO[bytes], archive), mode="r|", bufsize=BUFFER) as tar:
            tar.extractall(target, filter=_inside)
    except tarfile.ReadError as exc:
        return exc
    return None


def unpack_in(box: Runs, archive: IO[bytes], dest: str) -> None:
    """Unpack the tar stream ``archive`` (ustar with GNU long names) into
    the box directory ``dest`` (created if missing): the helper resolves
    every entry beneath ``dest`` and refuses one that would leave it
    (``UnsafePathError``), or a malformed archive (``ProtocolError``)."""
    with box.exec([AGENT, "copy-in", dest], stdin=True) as execution:
        with contextlib.suppress(ExecClosedError):  # it refused an entry: its result says
            while chunk := archive.read(BUFFER):
                execution.write_stdin(chunk)
            execution.close_stdin()
        _check(execution.wait(), f"unpacking an archive into {dest}")


def pack_out(box: Runs, src: str) -> Iterator[bytes]:
    """The box's file or directory ``src`` as a tar stream, chunk by chunk.
    A copy that fails before its first byte raises at the first ``next``
    (``NotFoundError`` for a missing ``src``); one that fails later raises
    after its last chunk."""
    with box.exec([AGENT, "copy-out", src]) as execution:
        yield from execution.stdout
        _check(execution.wait(), f"copying {src} out of the box")


def copy_out(box: Runs, src: str, dest: str | os.PathLike[str]) -> None:
    """Copy the box's file or directory ``src`` into the host directory
    ``dest`` (created if missing), as ``dest/<name of src>``.

    ``src`` that is a device, fifo or socket raises ``InvalidArgumentError``
    (inside a copied directory they are left out); a file that cannot be
    read whole raises ``SystemCallError``.  An entry that would land outside
    ``dest`` raises ``UnsafePathError``.  Entries extracted before an error
    stay.
    """
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    with box.exec([AGENT, "copy-out", src]) as execution:
        malformed = extract_archive(ChunkReader(execution.stdout), target)
        _check(execution.wait(), f"copying {src} out of the box")
        if malformed is not None:
            raise ProtocolError(f"the box sent a malformed archive: {malformed}")


def _inside(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Refuse what data_filter refuses; keep the archived mode and mtime."""
    import tarfile

    try:
        tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:
        raise UnsafePathError(str(exc)) from None
    return member


def _check(result: ExecResult, what: str) -> None:
    if result.ok:
        return
    message = f"{what}: {result.stderr.decode(errors='replace').strip() or result.outcome.value}"
    if result.exit_code == _UNSAFE:
        raise UnsafePathError(message)
    if result.exit_code == _MALFORMED:
        raise ProtocolError(message)
    if result.exit_code == _UNSUPPORTED:
        raise InvalidArgumentError(message)
    raise SystemCallError(message)


class _StdinWriter(io.RawIOBase):
    """A write-only file whose bytes go to an execution's stdin."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._execution.write_stdin(data)
        return len(data)


class ChunkReader(io.RawIOBase):
    """A read-only file over chunks of bytes (an output stream's, a download's)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
