"""Bounded request bodies: an ASGI middleware that refuses a body beyond
its bound (413, the contract's error body), by its Content-Length before
reading it, or while it streams in (chunked): then the app is told the
client left, and what it would still send is dropped.  File uploads have
their own, larger bound."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import TABLE, PayloadTooLarge
from .request_ids import of_scope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_SUFFIX = "/files"


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return max(int(value), -1)
            except ValueError:
                return -1
    return None


async def refuse(scope: Scope, send: Send, bound: int) -> None:
    row = TABLE[PayloadTooLarge]
    rid = of_scope(scope)
    error = {"message": f"the request body exceeds {bound} bytes", "type": row.type,
             "code": row.code, "request_id": rid, "boxlite_code": "too_large"}  # fmt: skip
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": row.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, json_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    def bound(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        upload = scope.get("method") == "PUT" and path.endswith(UPLOAD_SUFFIX)
        return self.upload_bytes if upload else self.json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self.bound(scope)
        declared = declared_length(scope)
        if declared is not None and not 0 <= declared <= bound:
            await refuse(scope, send, bound)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    refused = True
                    await refuse(scope, send, bound)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)
