"""Every request's id: the client's own ``X-Request-Id`` when it is sane,
else a new one.  Kept in the scope's state (``request.state.request_id``)
for error bodies and logs, and sent back in the answer's header.  A plain
ASGI middleware: Starlette's ``BaseHTTPMiddleware`` cost a task and a body
stream per request."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_NAME = HEADER.lower().encode()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def of_scope(scope: Scope) -> str:
    """The request's id: given to it already, the client's, or a new one."""
    state = scope.setdefault("state", {})
    found = state.get("request_id")
    if isinstance(found, str):
        return found
    rid = f"req_{os.urandom(12).hex()}"
    for name, value in scope.get("headers", ()):
        if name == _NAME:
            text = bytes(value).decode("latin-1")
            if 0 < len(text) <= MAX_LENGTH and text.isascii() and text.isprintable():
                rid = text
    state["request_id"] = rid
    return rid


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = of_scope(scope).encode()

        async def answered(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _NAME]
                message["headers"] = [*headers, (_NAME, rid)]
            await send(message)

        await self.app(scope, receive, answered)
