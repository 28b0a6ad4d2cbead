"""File routes: ``PUT`` a tar stream into a box, ``GET`` one out of it,
through the agent's copy helper (``agent.files``), which resolves every
entry beneath its directory and refuses ``..``, absolute names and links
leading out.

Before the box sees an upload, the server reads it whole (bounded by
``Limits.max_upload_bytes``, spooled to a temporary file) and checks it: a
malformed archive, an entry with ``..`` or an absolute name, or one that
lands on a volume's mount is a 400 and touches nothing.  A destination or
source at or under a volume's mount (or a source directory holding one) is
a 400 too, as the contract says.  The box must be running (409).

The helper's failures are the client's (a missing source, a destination
that is a file): 400, never 500.  ``overwrite=false`` and
``follow_symlinks=true`` are not supported (501): the helper replaces
existing files, and sends symlinks as symlinks.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..agent import files as copy
from ..box import Box as OurBox
from ..boxapi import FILES, TAR
from ..errors import (
    InvalidArgumentError,
    InvalidStateError,
    ProtocolError,
    StateReason,
    SystemCallError,
    UnsafePathError,
)
from ..state.status import BoxStatus
from .auth import require_token
from .errors import unsupported
from .state import ServerState, State

router = APIRouter(dependencies=[Depends(require_token)])

SPOOL_IN_MEMORY = 1 << 20  # an upload beyond this goes to a temporary file


class CopyFailedError(InvalidArgumentError):
    """The copy helper refused the path (missing, not a directory, no right):
    the client's to fix (400), told as the error it stands for."""

    def __init__(self, error: SystemCallError | ProtocolError) -> None:
        super().__init__(error.message)
        self.stands_for = type(error)


def box_path(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise InvalidArgumentError(f"path {path!r}: an absolute path in the box")
    return posixpath.normpath(path)


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount_targets(box: OurBox) -> list[str]:
    """Where the box's volumes are mounted."""
    return [posixpath.normpath(m[1]) for m in box.info().config.get("mounts") or ()]


def running_box(state: ServerState, box_id: str) -> OurBox:
    box = state.box(box_id)
    if box.status != BoxStatus.RUNNING:
        raise InvalidStateError(f"box {box.id} is not running", StateReason.NOT_RUNNING)
    return box


def check_archive(archive: IO[bytes], dest: str, mounts: list[str]) -> list[str]:
    """Every entry relative, without ``..``, and off every mount; the
    directories its entries are in that it does not hold itself (the copy
    helper makes no parents: they go first, see ``with_parents``)."""
    have: set[str] = set()
    need: dict[str, None] = {}
    try:
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                name = posixpath.normpath(member.name) if member.name else member.name
                parts = name.split("/")
                for i in range(1, len(parts)):
                    need.setdefault("/".join(parts[:i]))
                if member.isdir():
                    have.add(name)
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise UnsafePathError(f"archive entry {name!r} would land outside {dest}")
                where = posixpath.normpath(posixpath.join(dest, name))
                hit = next((m for m in mounts if under(where, m)), None)
                if hit is not None:
                    raise InvalidArgumentError(f"archive entry {name!r} lands on the mount {hit}")
    except tarfile.TarError as exc:
        raise InvalidArgumentError(f"the body is no tar archive: {exc}") from None
    archive.seek(0)
    return [d for d in need if d not in have and d != "."]


class _Chained(io.RawIOBase):
    """``head`` then ``tail``, read as one file."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if size < 0 else min(size, len(self._head))
            out, self._head = bytes(self._head[:n]), self._head[n:]
            return out
        return self._tail.read(size)


def with_parents(archive: IO[bytes], parents: list[str]) -> IO[bytes]:
    """The archive after a header for each missing parent directory (0755)."""
    if not parents:
        return archive
    head = b""
    for name in parents:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        head += info.tobuf(tarfile.GNU_FORMAT)
    return _Chained(head, archive)  # type: ignore[return-value]


def unpack(state: ServerState, box_id: str, dest: str, archive: IO[bytes]) -> None:
    box = running_box(state, box_id)
    mounts = mount_targets(box)
    hit = next((m for m in mounts if under(dest, m)), None)
    if hit is not None:
        raise InvalidArgumentError(f"path {dest} is on the mount {hit}")
    parents = check_archive(archive, dest, mounts)
    try:
        copy.unpack_in(box, with_parents(archive, parents), dest)
    except (SystemCallError, ProtocolError) as exc:
        raise CopyFailedError(exc) from None


@router.put(FILES, status_code=204, operation_id="uploadFiles")
async def upload_files(
    box_id: str,
    request: Request,
    state: State,
    path: Annotated[str, Query()],
    overwrite: bool = True,
) -> Response:
    dest = box_path(path)
    if not overwrite:
        raise unsupported("overwrite=false (existing files are replaced)")
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
        async for chunk in request.stream():  # bounded by the body limit
            spool.write(chunk)
        spool.seek(0)
        await run_in_threadpool(unpack, state, box_id, dest, spool)
    return Response(status_code=204)


def packed(state: ServerState, box_id: str, src: str) -> Iterator[bytes]:
    """The archive's chunks, the first one read already: a copy that fails
    at once is an error status, not an empty 200."""
    box = running_box(state, box_id)
    for mount in mount_targets(box):
        if under(src, mount) or under(mount, src):
            raise InvalidArgumentError(f"path {src}: the mount {mount} is at or under it")
    chunks = copy.pack_out(box, src)
    try:
        first = next(chunks, b"")
    except (SystemCallError, ProtocolError) as exc:
        raise CopyFailedError(exc) from None

    def rest() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks  # a failure now cuts the stream: the client sees a broken archive

    return rest()


@router.get(FILES, operation_id="downloadFiles", response_class=StreamingResponse)
async def download_files(
    box_id: str,
    state: State,
    path: Annotated[str, Query()],
    follow_symlinks: bool = False,
) -> StreamingResponse:
    src = box_path(path)
    if follow_symlinks:
        raise unsupported("follow_symlinks=true (symlinks are sent as symlinks)")
    chunks = await run_in_threadpool(packed, state, box_id, src)
    return StreamingResponse(chunks, media_type=TAR)
