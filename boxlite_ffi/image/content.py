"""The image cache of one home: content-addressed blobs and unpacked layers.

``blobs/sha256/<hex>``  every manifest, config and layer blob, verified
                        before it is put there (so reading trusts it);
``ingest/<hex>``        a blob being written: a broken download resumes
                        from what it holds, under an exclusive lock;
``layers/<hex>``        a layer unpacked for overlayfs, named by its ChainID
                        (the layer with everything below it), shared by
                        every image built on the same layers.

Everything appears by rename, so a crash leaves a finished thing or none.
Pulls and loads hold ``lock`` shared; prune holds it exclusive, so it never
removes what a pull has fetched but not yet recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from ..errors import DigestMismatchError, ImageError
from ..tree import make_dir_once, remove_tree, tree_size
from .media import MAX_DOCUMENT, check_digest, digest_of
from .unpack import DEFAULT_LIMITS, UnpackLimits, unpack_layer

if TYPE_CHECKING:
    import hashlib

CHUNK = 1 << 20


def _hex(digest: str) -> str:
    return check_digest(digest).partition(":")[2]


def _open_locked(path: Path) -> BinaryIO:
    """path, opened and locked exclusively.  A concurrent writer of the same
    blob waits here; once it let go, the file it held may have been renamed
    into place or discarded: then the lock is on a name no longer there, and
    the path is opened afresh."""
    while True:
        file = open(path, "a+b")  # noqa: SIM115 (the caller closes it)
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(file.fileno()).st_ino:
                return file
        except FileNotFoundError:
            pass
        file.close()


def _sha256() -> hashlib._Hash:
    import hashlib  # on use: a box of a cached image hashes nothing

    return hashlib.sha256()


class Ingest:
    """A blob being written.  ``offset`` is how much an earlier, broken
    attempt already holds; ``write`` appends, ``commit`` verifies the whole
    blob against its digest and puts it in place."""

    def __init__(self, path: Path, final: Path, digest: str, size: int | None) -> None:
        self.path, self.final, self.digest, self.size = path, final, digest, size
        self.file = _open_locked(path)
        self.hash = _sha256()
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            self.hash.update(chunk)
        self.offset = self.file.tell()
        if size is not None and self.offset > size:
            self.restart()

    def restart(self) -> None:
        """Forget what an earlier attempt wrote."""
        self.file.truncate(0)
        self.hash = _sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        self.offset += len(data)
        if self.size is not None and self.offset > self.size:
            self.discard()
            raise DigestMismatchError(f"blob {self.digest} is longer than its {self.size} bytes")
        self.hash.update(data)
        self.file.write(data)

    def copy_from(
        self,
        read: Callable[[int], bytes],
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        """Append what read gives until it gives nothing (a local file or a
        download alike), reporting each chunk; stop at ``cancelled``."""
        while chunk := read(CHUNK):
            if cancelled.is_set():
                raise ImageError(f"copying blob {self.digest} was cancelled")
            self.write(chunk)
            on_bytes(len(chunk))

    def commit(self) -> None:
        if "sha256:" + self.hash.hexdigest() != self.digest:
            self.discard()
            raise DigestMismatchError(f"blob {self.digest} does not match its digest")
        self.file.flush()
        os.fsync(self.file.fileno())
        os.rename(self.path, self.final)
        self.file.close()

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.file.close()

    def close(self) -> None:
        """Keep what was written (to resume from) and let go of it."""
        self.file.close()


class Content:
    def __init__(self, root: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self.root = root
        self.limits = limits
        self.blobs = root / "blobs" / "sha256"
        self.ingests = root / "ingest"
        self.layers = root / "layers"
        for d in (self.blobs, self.ingests, self.layers):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_path = root / "lock"

    @contextmanager
    def using(self, exclusive: bool = False) -> Iterator[None]:
        """Held by whoever adds content (shared) or removes it (exclusive)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            if path.stat().st_size > MAX_DOCUMENT:
                raise ImageError(f"document {digest} is larger than {MAX_DOCUMENT} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the cache") from None

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or digest_of(data)
        ingest = self.ingest(digest, len(data))
        if ingest is not None:
            ingest.restart()
            ingest.write(data)
            ingest.commit()
        return digest

    def ingest(self, digest: str, size: int | None) -> Ingest | None:
        """The blob to write, None if it is in the cache (perhaps put there
        by a concurrent writer this call waited for)."""
        if self.has(digest):
            return None
        ingest = Ingest(self.ingests / _hex(digest), self.blob_path(digest), digest, size)
        if self.has(digest):
            ingest.discard()  # the empty file opening it made
            return None
        return ingest

    def put_stream(
        self,
        stream: IO[bytes],
        digest: str,
        size: int | None,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        """Copy a local blob in, verifying it on the way."""
        ingest = self.ingest(digest, size)
        if ingest is None:
            on_bytes(size or 0)
            return
        try:
            ingest.restart()  # a local copy starts over; only downloads resume
            ingest.copy_from(stream.read, on_bytes, cancelled)
            ingest.commit()
        except BaseException:
            ingest.discard()  # nothing to resume from: give its room back (a full disk)
            raise
        finally:
            ingest.close()

    def documents(self) -> Iterator[tuple[str, bytes, float]]:
        """(digest, content, mtime) of every blob small enough to be a
        manifest or config (the rest are layers)."""
        for path in self.blobs.iterdir():
            with contextlib.suppress(OSError):
                st = path.stat()
                if st.st_size <= MAX_DOCUMENT:
                    yield "sha256:" + path.name, path.read_bytes(), st.st_mtime

    # -- layers --------------------------------------------------------------

    def layer_path(self, chain_id: str) -> Path:
        return self.layers / _hex(chain_id)

    def unpack(self, blob_digest: str, diff_id: str, chain: list[str]) -> Path:
        """The unpacked directory of the last layer of ``chain`` (the
        ones below it unpacked already), unpacking it if needed."""
        lowers = [self.layer_path(c) for c in reversed(chain[:-1])]

        def fill(staging: Path) -> None:
            with open(self.blob_path(blob_digest), "rb") as blob:
                unpack_layer(blob, staging, lowers, diff_id, self.limits)

        return make_dir_once(self.layer_path(chain[-1]), fill)

    # -- pruning -------------------------------------------------------------

    def sweep(self, blobs: set[str], layers: set[str]) -> int:
        """Delete every blob, layer and ingest not in the sets of digests
        and ChainIDs to keep (call under ``using(exclusive=True)``).
        Returns the bytes freed."""
        freed = 0
        keep_blobs = {_hex(d) for d in blobs}
        keep_layers = {_hex(c) for c in layers}
        for path in self.blobs.iterdir():
            if path.name not in keep_blobs:
                freed += path.stat().st_size
                path.unlink()
        for path in self.ingests.iterdir():
            freed += path.stat().st_size
            path.unlink()
        for path in self.layers.iterdir():
            if path.name not in keep_layers:
                freed += tree_size(path)
                remove_tree(path)
        return freed
