"""Bounded request bodies: an ASGI middleware that refuses a body beyond
its bound, by its Content-Length before reading it, or while it streams in
(chunked).  File uploads have their own, larger bound."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_SUFFIX = "/files"


class BodyLimit:
    def __init__(self, app: ASGIApp, json_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    def bound(self, scope: Scope) -> int:
        upload = scope.get("method") == "PUT" and str(scope.get("path", "")).endswith(UPLOAD_SUFFIX)
        return self.upload_bytes if upload else self.json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self.bound(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > bound:
                    scope["boxlite.too_large"] = f"a body of {value.decode('latin-1')!r} bytes"
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            if "boxlite.too_large" in scope:
                raise PayloadTooLarge(f"{scope['boxlite.too_large']}: the bound is {bound} bytes")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    raise PayloadTooLarge(f"the request body exceeds {bound} bytes")
            return message

        await self.app(scope, counted, send)
