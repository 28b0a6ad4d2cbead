"""Streams of an execution's output.

``ChunkStream`` is the mechanism: the drain thread pushes items, any number
of threads or asyncio tasks read them.  ``OutputStream`` is one of stdout or
stderr as bytes chunks, exactly what the native core delivered: no decoding,
no re-splitting (invariant 3).  Text is an opt-in view: ``text()`` and
``lines()`` decode with an incremental decoder, so a character split across
chunks arrives whole.  ``OutputChunk`` items carry one sequence number across
both streams, for executions started with ``ordered_output=True``.

Flow control: every item pushed is owed to the native core until a reader
takes it, and only then acknowledged (``ack``), which reopens its stream's
output window.  A stream nobody reads therefore stops its
process after a window's worth, and nothing else.  ``collect()`` (what
``wait()`` does) lifts that for a stream without a reader: its output is
buffered in full, as ``subprocess.run`` would.
"""

from __future__ import annotations

import codecs
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:  # imported where used: a program without asyncio never pays for it
    import asyncio

T = TypeVar("T")


@dataclass(frozen=True)
class OutputChunk:
    """One chunk of output with its place among both streams' chunks."""

    seq: int
    stream: str  # "stdout" or "stderr"
    data: bytes


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ChunkStream(Generic[T]):
    """Items pushed by the drain thread, read until the stream is closed."""

    def __init__(self, name: str, ack: Callable[[T], None] | None = None) -> None:
        self.name = name
        self._ack = ack
        self._cond = threading.Condition()
        self._chunks: deque[T] = deque()
        self._closed = False
        self._has_reader = False
        self._collect = False
        # The first _settled items were acknowledged when collected; the
        # rest are acknowledged as a reader takes them.
        self._settled = 0
        # What keeps the execution alive while anyone holds this stream.
        self._keepalive: object | None = None
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} closed={self._closed}>"

    # ---- producer side (drain thread) --------------------------------

    def _notify(self) -> None:
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            # A loop that is already closed has nobody left to wake.
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    def _push(self, item: T) -> None:
        with self._cond:
            self._chunks.append(item)
            collected = self._collect and not self._has_reader
            if collected:
                self._settled += 1
            self._notify()
        if collected:
            self._settle([item])

    def _settle(self, items: list[T]) -> None:
        """Acknowledge items (outside the lock: it calls into the core)."""
        if self._ack is not None:
            for item in items:
                self._ack(item)

    def _take_locked(self, count: int) -> list[T]:
        """Pop count items; return those still to acknowledge."""
        taken = [self._chunks.popleft() for _ in range(count)]
        settled = min(count, self._settled)
        self._settled -= settled
        return taken[settled:]

    def collect(self) -> None:
        """Buffer everything from now on unless someone reads this stream, so
        a process whose output nobody reads still runs to its end."""
        with self._cond:
            self._collect = True
            owed = [] if self._has_reader else list(self._chunks)[self._settled :]
            self._settled += len(owed)
        self._settle(owed)

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._notify()

    def _take_unread(self) -> list[T]:
        """Everything buffered, unless someone iterates this stream."""
        with self._cond:
            if self._has_reader:
                return []
            items = list(self._chunks)
            owed = self._take_locked(len(items))
        self._settle(owed)
        return items

    # ---- consumer side --------------------------------------------------

    def _next(self, timeout: float | None = None) -> T | None:
        with self._cond:
            self._has_reader = True
            self._cond.wait_for(lambda: self._chunks or self._closed, timeout)
            if not self._chunks:
                return None
            chunk = self._chunks[0]
            owed = self._take_locked(1)
        self._settle(owed)
        return chunk

    def __iter__(self) -> Iterator[T]:
        """Items as they arrive, until the stream ends."""
        while (chunk := self._next()) is not None:
            yield chunk

    async def __aiter__(self) -> AsyncIterator[T]:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                self._has_reader = True
                owed: list[T] = []
                if self._chunks:
                    chunk: T | None = self._chunks[0]
                    owed = self._take_locked(1)
                elif self._closed:
                    return
                else:
                    chunk = None
                    fut: asyncio.Future[None] = loop.create_future()
                    self._async_waiters.append((loop, fut))
            if chunk is None:
                await fut
            else:
                self._settle(owed)
                yield chunk


class OutputStream(ChunkStream[bytes]):
    """stdout or stderr of one execution, as bytes chunks."""

    def read(self) -> bytes:
        """Everything until the stream ends."""
        return b"".join(self)

    def text(self, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
        """Decoded text as it arrives (a split character waits for its end)."""
        decoder = codecs.getincrementaldecoder(encoding)(errors)
        for chunk in self:
            if piece := decoder.decode(chunk):
                yield piece
        if tail := decoder.decode(b"", final=True):
            yield tail

    def lines(self, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
        """Lines with their ``\\n``, like iterating a text file; the last may lack it."""
        splitter = _LineSplitter()
        for piece in self.text(encoding, errors):
            yield from splitter.feed(piece)
        yield from splitter.finish()

    async def atext(self, encoding: str = "utf-8", errors: str = "strict") -> AsyncIterator[str]:
        """``text()`` for asyncio."""
        decoder = codecs.getincrementaldecoder(encoding)(errors)
        async for chunk in self:
            if piece := decoder.decode(chunk):
                yield piece
        if tail := decoder.decode(b"", final=True):
            yield tail

    async def alines(self, encoding: str = "utf-8", errors: str = "strict") -> AsyncIterator[str]:
        """``lines()`` for asyncio."""
        splitter = _LineSplitter()
        async for piece in self.atext(encoding, errors):
            for line in splitter.feed(piece):
                yield line
        for line in splitter.finish():
            yield line


class _LineSplitter:
    """Cuts decoded text into lines ending in ``\\n``, holding the partial one."""

    def __init__(self) -> None:
        self._parts: list[str] = []  # joined once, so a long line stays linear

    def feed(self, text: str) -> list[str]:
        if "\n" not in text:
            self._parts.append(text)
            return []
        first, *middle, tail = text.split("\n")
        line = "".join(self._parts) + first
        self._parts = [tail] if tail else []
        return [line + "\n"] + [m + "\n" for m in middle]

    def finish(self) -> list[str]:
        rest = "".join(self._parts)
        self._parts = []
        return [rest] if rest else []
