"""``GET .../executions/{exec_id}/attach``: the contract's WebSocket.

Client to server: binary frames are stdin; text frames are JSON
``{"type":"resize","cols":C,"rows":R}``, ``{"type":"signal","sig":N}`` (the
contract's whitelist) and ``{"type":"stdin_eof"}``.  Anything else is
answered with ``{"type":"error","message":...}`` and the connection stays
open.  Server to client: binary ``[0x01|0x02][payload]`` (stdout, stderr),
then ``{"type":"exit","exit_code":N, ...}`` and a close 1000.  The server
pings every ``PING_INTERVAL_S``; a connection silent for ``DEAD_AFTER_S`` is
closed (uvicorn does both: ``app.serve``).

Refusals come before the upgrade, as HTTP answers with the contract's
``ErrorResponse``: 401 without the token, 404 for an unknown box or
execution, 409 while another client is attached, 400 for a bad cursor.

Extensions (see docs/architecture.md, "Attach: sessions and cursors"):

- ``?cursor=<stdout>,<stderr>``: resume after that many bytes of each
  stream (``boxlite_cursor`` of the last exit or info, or counted by the
  client).  With it, the first frame is ``{"type":"boxlite_cursor",
  "stdout":O,"stderr":E}``: where the output sent really starts (later
  than asked only if the server no longer held those bytes); from there
  the binary frames of each stream are contiguous, so a client that counts
  them always knows its cursor.  Without it (a contract client) output
  starts at the oldest byte the server holds, which covers what was in
  flight when an earlier client vanished: a repeat is possible, a gap not.
- the exit frame also carries ``boxlite_outcome``, ``boxlite_signal``,
  ``boxlite_os_error`` (a command that could not start) and
  ``boxlite_cursor`` (the final offsets).

Backpressure: each output frame is sent before the next is taken (a slow
client slows the session, whose window bounds what waits); client stdin
frames are bounded in size (``MAX_FRAME``) and in number waiting
(``STDIN_FRAMES``), then the socket is not read until the pipe takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, cast

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from ..boxapi import (
    ATTACH,
    CURSOR_FRAME,
    ERROR_FRAME,
    EXIT_FRAME,
    MAX_CLIENT_FRAME,
    RESIZE_FRAME,
    SIGNAL_FRAME,
    STDIN_EOF_FRAME,
)
from ..errors import BoxliteError, ExecClosedError, InvalidArgumentError
from .auth import require_token
from .errors import respond
from .executions import check_signal, sessions_of
from .sessions import Attachment, Cursor, Exit, Session, check_cursor
from .state import ServerState

router = APIRouter(tags=["Execution"])

MAX_FRAME = MAX_CLIENT_FRAME
STDIN_FRAMES = 4  # stdin frames waiting for the pipe before the socket is left unread
NORMAL_CLOSURE = 1000
EOF = None  # the stdin queue's end


class Dropped(Exception):
    """The client went away."""


def parse_cursor(text: str | None) -> Cursor | None:
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise InvalidArgumentError(f"cursor {text!r}: <stdout>,<stderr> byte offsets") from None
    return check_cursor(parts)


@router.websocket(ATTACH)
async def attach_execution(
    websocket: WebSocket, box_id: str, exec_id: str, cursor: str | None = None
) -> None:
    # The HTTP helpers read only what a WebSocket has too (headers, state, app).
    conn = cast(Request, websocket)
    try:
        require_token(conn)
        state: ServerState = websocket.app.state.server
        box = await asyncio.to_thread(state.box, box_id)
        session = sessions_of(state).get(box.id, exec_id)
        client = session.attach(parse_cursor(cursor))
    except BoxliteError as exc:
        await websocket.send_denial_response(respond(conn, exc))
        return
    try:
        await websocket.accept()
        await Link(websocket, session, client).run(announce=cursor is not None)
    finally:
        client.close()


class Link:
    """One attached client's socket and its session, while both last."""

    def __init__(self, ws: WebSocket, session: Session, client: Attachment) -> None:
        self.ws = ws
        self.session = session
        self.client = client
        self._sending = asyncio.Lock()  # one frame at a time, from any task
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue(STDIN_FRAMES)

    async def run(self, announce: bool) -> None:
        """Until the exit is sent or the client is gone; every task ended."""
        tasks = [
            asyncio.create_task(self._output(announce), name="boxlite-attach-output"),
            asyncio.create_task(self._input(), name="boxlite-attach-input"),
            asyncio.create_task(self._feed(), name="boxlite-attach-stdin"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, Dropped | asyncio.CancelledError
            ):
                raise result

    async def _send(self, frame: bytes | dict[str, Any]) -> None:
        async with self._sending:
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_text(json.dumps(frame))
            except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                raise Dropped from exc

    async def _error(self, message: str) -> None:
        await self._send({"type": ERROR_FRAME, "message": message})

    # ---- server to client -----------------------------------------------------

    async def _output(self, announce: bool) -> None:
        client = self.client
        if announce:
            stdout, stderr = client.start
            await self._send({"type": CURSOR_FRAME, "stdout": stdout, "stderr": stderr})
        while not isinstance(item := await client.next(), Exit):
            await self._send(bytes([item.stream]) + item.data)
            client.sent(item)
        await self._send(exit_frame(item, client.cursor))
        client.close()  # it has everything: the next client need not wait for the close
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(NORMAL_CLOSURE)

    # ---- client to server -----------------------------------------------------

    async def _input(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                raise Dropped from exc
            if message["type"] == "websocket.disconnect":
                raise Dropped
            if message.get("bytes") is not None:
                await self._stdin.put(message["bytes"])
            elif message.get("text") is not None:
                await self._control(message["text"])

    async def _control(self, text: str) -> None:
        try:
            frame = json.loads(text)
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == STDIN_EOF_FRAME:
                await self._stdin.put(EOF)
            elif kind == SIGNAL_FRAME:
                await self.session.signal(check_signal(strict_int(frame.get("sig"), "sig")))
            elif kind == RESIZE_FRAME:
                rows, cols = (
                    strict_int(frame.get("rows"), "rows"),
                    strict_int(frame.get("cols"), "cols"),
                )
                await self.session.resize(rows, cols)
            else:
                raise InvalidArgumentError(f"unknown control frame type {kind!r}")
        except ValueError as exc:  # bad JSON too (InvalidArgumentError is one)
            await self._error(str(exc))
        except BoxliteError as exc:
            await self._error(exc.message)

    async def _feed(self) -> None:
        """Client stdin into the pipe, in order with its end."""
        closed = False
        while True:
            data = await self._stdin.get()
            if closed:
                continue  # told once; later input has nowhere to go
            try:
                if data is EOF:
                    self.session.close_stdin()
                    closed = True
                else:
                    await self.session.write(data)
            except BoxliteError as exc:
                closed = isinstance(exc, ExecClosedError)
                await self._error(f"stdin: {exc.message}")


def strict_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be an integer, not {value!r}")
    return value


def exit_frame(end: Exit, cursor: Cursor) -> dict[str, Any]:
    return {
        "type": EXIT_FRAME,
        "exit_code": end.exit_code,
        "boxlite_outcome": end.outcome.value,
        "boxlite_signal": end.signal,
        "boxlite_os_error": end.os_error,
        "boxlite_cursor": list(cursor),
    }
