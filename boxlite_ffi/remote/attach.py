"""One execution behind a server, carried for its ``Execution``.

``RemoteExec`` is the execution's ``ExecChannel``: the same ``Execution``,
sink, streams and flow control as a local execution run on it.  Its attach
socket brings output (in the order the box read it) and takes stdin; a
signal, a resize, a kill are HTTP requests, which answer for themselves.

Output is delivered on the connection's loop thread (callbacks run there,
as on the drain thread locally).  Flow control: once ``window`` bytes of a
stream are delivered and not yet taken by a reader, the socket is not
read, so TCP holds the server back, whose session window then holds the
process in its box.  Over one socket that holds both streams, not one.

A socket that breaks is opened again from the execution's cursor (what was
delivered of each stream), for up to the transport's ``retry_for``
seconds: the server resends exactly what did not arrive.  stdin written
while the socket broke may not have arrived (the contract counts no
stdin): that write raises ``ConnectionLostError``.  An execution whose
socket cannot be opened again ends with ``ConnectionLostError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal as signals
import threading
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .._native import lib
from ..boxapi import (
    ATTACH,
    CURSOR_FRAME,
    CURSOR_QUERY,
    ERROR_FRAME,
    EXECUTION,
    EXIT_FRAME,
    FRAME_STDERR,
    FRAME_STDOUT,
    MAX_CLIENT_FRAME,
    RESIZE,
    SIGNAL,
    STDIN_EOF_FRAME,
)
from ..errors import (
    BoxliteError,
    ConnectionLostError,
    ExecClosedError,
    InternalError,
    InvalidStateError,
    ProtocolError,
    RuntimeClosedError,
    StateReason,
)
from ..execution import _Exit
from ..state.exits import Outcome

if TYPE_CHECKING:
    from ..execution import _ExecSink
    from .transport import Transport

STREAMS = (FRAME_STDOUT, FRAME_STDERR)
STDIN_PIECE = MAX_CLIENT_FRAME // 4  # stdin frames: well inside the server's bound
NORMAL_CLOSURE = 1000  # the server's close after the exit frame
RETRY_PAUSE_S = (0.02, 0.5)
LEAVING_S = 2.0  # a client that just let go may still hold the execution this long
Cursor = tuple[int, int]


class RemoteExec:
    """The attach socket and HTTP routes of one execution (``ExecChannel``)."""

    def __init__(self, transport: Transport, box_id: str, exec_id: str, window: int) -> None:
        self._t = transport
        self._ids = {"box_id": box_id, "exec_id": exec_id}
        self._path = EXECUTION.format_map(self._ids)
        self._window = window or lib.BOXLITE_EXEC_WINDOW_DEFAULT  # check_window's 0
        self._sink: _ExecSink | None = None
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Flow control, shared with readers' threads.
        self._lock = threading.Lock()
        self._owed = dict.fromkeys(STREAMS, 0)
        self._starved = False  # the reader waits for credit
        # Loop-thread state.
        self._credit: asyncio.Event | None = None
        self._socket: asyncio.Future[ClientConnection] | None = None
        self._ended = False  # the end is decided (told to the sink, or about to be)
        self._stdin_error: BoxliteError | None = None  # the server could not feed stdin
        self._stdin_closed = False  # close_stdin was asked (any thread)

    # ---- the reader, on the loop -----------------------------------------------

    def start(self, sink: _ExecSink, cursor: Cursor, *, no_stdin: bool) -> None:
        """Attach from ``cursor`` and deliver into ``sink`` until the end;
        ``no_stdin``: the process's stdin ends at once (``stdin=False``)."""
        self._sink = sink
        sink.start = dict(zip(STREAMS, cursor, strict=True))  # until the server says
        self._t.submit(self._run(sink, cursor, no_stdin))

    async def _run(self, sink: _ExecSink, cursor: Cursor, no_stdin: bool) -> None:
        self._credit = asyncio.Event()
        self._socket = asyncio.get_running_loop().create_future()
        try:
            try:
                ws = await self._open(cursor, again=False)
            except BoxliteError as exc:
                self._fail(exc)
                return
            if no_stdin:  # (one that ended already closed its socket: nothing to tell)
                with contextlib.suppress(ConnectionClosed):
                    await _send_text(ws, {"type": STDIN_EOF_FRAME})
            while not self._ended:
                try:
                    await self._pump(ws, sink, first=not self.ready.done())
                except (ConnectionClosed, ConnectionLostError) as exc:
                    if self._ended:
                        break
                    try:
                        ws = await self._reopen(sink, exc)
                    except BoxliteError as error:
                        self._fail(error)
                        return
                except BoxliteError as exc:
                    self._fail(exc)
            await ws.close()
        except asyncio.CancelledError:  # the connection closes
            self._fail(RuntimeClosedError("the connection to the server was closed"))
            raise
        except Exception as exc:  # a bug: the execution must not wait for ever
            self._fail(InternalError(f"the attach failed: {exc!r}"))
            raise

    async def _reopen(self, sink: _ExecSink, cause: BaseException) -> ClientConnection:
        """The socket broke: a new one from the cursor."""
        self._socket = asyncio.get_running_loop().create_future()
        try:
            return await self._open(sink.cursor, again=True)
        except BoxliteError as exc:
            raise ConnectionLostError(
                f"the execution's output broke off ({cause!r}) and could not be resumed: {exc}"
            ) from None

    async def _open(self, cursor: Cursor, *, again: bool) -> ClientConnection:
        """A socket from ``cursor``; again (a reconnection): retried while
        the server cannot be reached, or still holds the old socket."""
        start = time.monotonic()
        pause = RETRY_PAUSE_S[0]
        query = f"{CURSOR_QUERY}={cursor[0]},{cursor[1]}"
        while True:
            try:
                ws = await self._t.open_socket(ATTACH.format_map(self._ids), query)
                break
            except (ConnectionLostError, InvalidStateError) as exc:
                # Busy: the server has not yet seen our (or another's)
                # last socket close; for a reconnection, it will.
                busy = isinstance(exc, InvalidStateError) and exc.reason == StateReason.EXEC_BUSY
                lost = isinstance(exc, ConnectionLostError)
                bound = self._t.retry_for if lost or again else LEAVING_S
                if not (lost or busy) or time.monotonic() + pause > start + bound:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_S[1])
        assert self._socket is not None
        self._socket.set_result(ws)
        return ws

    async def _pump(self, ws: ClientConnection, sink: _ExecSink, first: bool) -> None:
        """Frames into the sink until the exit (which ends the sink)."""
        expected = sink.cursor
        start = _cursor_frame(await ws.recv())
        if first:
            sink.start = dict(zip(STREAMS, start, strict=True))
            self.ready.set_result(None)
        elif start != expected:  # a gap: no reconnection can fill it
            self._fail(
                ConnectionLostError(
                    f"the server no longer holds the output from {expected}: it resumes at {start}"
                )
            )
            return
        while True:
            await self._until_credit()
            frame = await ws.recv()
            if isinstance(frame, bytes):
                stream, data = frame[0], frame[1:]
                if stream not in STREAMS or not data:
                    raise ProtocolError(f"an output frame of stream {stream} ({len(data)} bytes)")
                with self._lock:
                    self._owed[stream] += len(data)
                sink.on_output(stream, data)
                continue
            message = _json(frame)
            if message.get("type") == EXIT_FRAME:
                self._finish(_exit_of(message))
                return
            if message.get("type") == ERROR_FRAME:
                # The server could not feed stdin: later writes fail.
                self._stdin_error = ExecClosedError(str(message.get("message", "stdin failed")))

    async def _until_credit(self) -> None:
        assert self._credit is not None
        while True:
            with self._lock:
                if all(n < self._window for n in self._owed.values()):
                    return
                self._starved = True
                self._credit.clear()
            await self._credit.wait()

    async def _current(self) -> ClientConnection:
        """The socket, once open; ExecClosedError after the end."""
        if self._ended or self._socket is None:
            raise ExecClosedError("the execution has ended")
        return await asyncio.shield(self._socket)

    def _finish(self, end: _Exit) -> None:
        if not self._ended and self._sink is not None:
            self._ended = True
            self._sink.finish(end)

    def _fail(self, error: BoxliteError) -> None:
        if not self.ready.done():  # an attach waiting for its answer
            self.ready.set_exception(error)
        if self._socket is not None and not self._socket.done():
            self._socket.set_exception(error)  # writers waiting for a socket: none comes
            self._socket.exception()  # told to them; not an unread error
        if not self._ended and self._sink is not None:
            self._ended = True
            self._sink.fail(error)

    # ---- ExecChannel, from any thread ------------------------------------------

    def exec_ack(self, handle: int, stream: int, n: int) -> None:
        with self._lock:
            self._owed[stream] -= n
            wake = self._starved and all(v < self._window for v in self._owed.values())
            if wake:
                self._starved = False
        if wake and self._credit is not None:
            self._t.soon(self._credit.set)

    def exec_write(
        self, handle: int, data: bytes | bytearray | memoryview
    ) -> concurrent.futures.Future[None]:
        if self._stdin_closed:
            refused: concurrent.futures.Future[None] = concurrent.futures.Future()
            refused.set_exception(ExecClosedError("stdin was closed"))
            return refused
        return self._t.submit(self._write(bytes(data)))

    async def _write(self, data: bytes) -> None:
        ws = await self._current()
        for offset in range(0, len(data), STDIN_PIECE):
            if self._stdin_error is not None:
                raise self._stdin_error
            try:
                await ws.send(data[offset : offset + STDIN_PIECE])
            except ConnectionClosed as exc:
                raise self._broken(exc) from None

    def _broken(self, exc: ConnectionClosed) -> BoxliteError:
        """Why stdin could not be sent: the end (the server closes after
        the exit), or a broken connection (with a doubt on what arrived)."""
        if self._ended or (exc.rcvd is not None and exc.rcvd.code == NORMAL_CLOSURE):
            return ExecClosedError("the execution has ended")
        return ConnectionLostError(
            "the connection broke while stdin was sent: it may not all have arrived"
        )

    def exec_close_stdin(self, handle: int) -> None:
        self._stdin_closed = True
        self._t.submit(self._close_stdin())  # in order after every write asked before

    async def _close_stdin(self) -> None:
        with contextlib.suppress(BoxliteError, ConnectionClosed):
            await _send_text(await self._current(), {"type": STDIN_EOF_FRAME})

    def exec_signal(self, handle: int, sig: int) -> concurrent.futures.Future[None]:
        if sig == signals.SIGKILL:  # not the contract's to send: its kill is DELETE
            return self._t.submit(self._kill())
        return self._t.submit(self._post(SIGNAL, {"signal": sig}))

    async def _kill(self) -> None:
        await self._t.request("DELETE", self._path)

    async def _post(self, route: str, body: dict[str, Any]) -> None:
        await self._t.request("POST", route.format_map(self._ids), json=body)

    def exec_resize(self, handle: int, rows: int, cols: int) -> concurrent.futures.Future[None]:
        return self._t.submit(self._post(RESIZE, {"rows": rows, "cols": cols}))

    def exec_detach(self, handle: int) -> None:
        """Let go: the server keeps it (and its output) for another client."""
        self._t.submit(self._let_go(_Exit(Outcome.DETACHED, -1, None, None), kill=False))

    def exec_free(self, handle: int) -> None:
        """Released: one still running is killed, as ``close`` promises."""
        with contextlib.suppress(RuntimeClosedError):  # the connection closed: it ended all
            end = _Exit(Outcome.FORCE_CLOSED, -1, None, None)
            self._t.submit(self._let_go(end, kill=True))

    async def _let_go(self, end: _Exit, *, kill: bool) -> None:
        """The end is told once the socket is closed: a client attaching
        next is not refused for this one."""
        ended = self._ended
        self._ended = True  # the reader stops at the close, not taking it for a break
        if kill and not ended:
            with contextlib.suppress(BoxliteError):
                await self._kill()
        socket = self._socket
        if socket is not None and socket.done() and socket.exception() is None:
            with contextlib.suppress(ConnectionClosed, OSError):
                await socket.result().close()
        if not ended and self._sink is not None:
            self._sink.finish(end)


def _json(frame: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(frame)
    except ValueError:
        raise ProtocolError(f"a text frame that is no JSON: {frame[:80]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a text frame that is no object: {frame[:80]!r}")
    return message


def _cursor_frame(frame: str | bytes) -> Cursor:
    message = _json(frame) if isinstance(frame, str) else {}
    offsets = message.get("stdout"), message.get("stderr")
    if message.get("type") != CURSOR_FRAME or not all(isinstance(n, int) for n in offsets):
        raise ProtocolError(f"the attach did not begin with its cursor: {frame[:80]!r}")
    return offsets  # type: ignore[return-value]


def _exit_of(message: dict[str, Any]) -> _Exit:
    """The exit frame's end; a contract server's (no ``boxlite_outcome``)
    is an exit with its code."""
    code = message.get("exit_code")
    if not isinstance(code, int):
        raise ProtocolError(f"an exit frame without an exit code: {message!r}")
    try:
        outcome = Outcome(message.get("boxlite_outcome", Outcome.EXITED.value))
    except ValueError:
        outcome = Outcome.LOST
    signal = message.get("boxlite_signal")
    os_error = message.get("boxlite_os_error")
    return _Exit(
        outcome,
        code,
        signal if isinstance(signal, int) else None,
        os_error if isinstance(os_error, int) else None,
    )


async def _send_text(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))
