"""The ASGI application: ``create_app(settings)`` and ``serve(settings)``.

The lifespan opens the ``ServerState`` (the Runtime on the home) and closes
it at shutdown, after cancelling the background tasks it owns (auto_stop).
Routers are this package's modules; the executions' ``sessions`` are
opened with the state and closed before it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..boxapi import DEAD_AFTER_S, PING_INTERVAL_S
from . import (
    attach,
    auto_stop,
    boxes,
    discovery,
    errors,
    executions,
    files,
    images,
    logs,
    metrics,
    sessions,
    unsupported,
)
from .limits import BodyLimit
from .models import ErrorResponse
from .request_ids import RequestIds
from .settings import Settings
from .state import ServerState

log = logging.getLogger("boxlite_ffi.server")

TITLE = "BoxLite Box API (boxlite-ffi)"
API_VERSION = "0.1.0"


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServerState(settings)
        app.state.server = state
        try:
            state.sessions = sessions.open_sessions(state)
            async with auto_stop.running(state):
                yield
        finally:
            # The sessions end in order (their executions reaped) before
            # the runtime closes under them.
            if state.sessions is not None:
                await state.sessions.aclose()
            state.close()

    app = FastAPI(title=TITLE, version=API_VERSION, lifespan=lifespan)
    errors.install(app)

    app.add_middleware(
        BodyLimit,
        json_bytes=settings.limits.max_json_body,
        upload_bytes=settings.limits.max_upload_bytes,
    )
    app.add_middleware(RequestIds)  # the last added is the outermost: ids for all
    own = [m.router for m in (discovery, boxes, files, images, metrics, logs, executions, attach)]
    errors_ = {status: {"model": ErrorResponse} for status in DOCUMENTED_ERRORS}
    for router in (*own, unsupported.router):
        app.include_router(router, responses=errors_)  # type: ignore[arg-type]
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


DOCUMENTED_ERRORS = (400, 401, 404, 409)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, less its 422 validation answer: ours is the
    contract's 400 (errors.install)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for item in doc.get("paths", {}).values():
            for op in item.values():
                reply = op.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(reply):
                    del op["responses"]["422"]
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def serve(settings: Settings) -> None:
    """Run the server in the foreground (uvicorn) until interrupted."""
    import uvicorn

    if not settings.loopback and not settings.tls:
        print(
            f"boxlite serve: WARNING: listening on {settings.host} without TLS: the token and"
            " every byte travel in clear (give --tls-cert and --tls-key)",
            file=sys.stderr,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="info",
        ws="websockets",
        **attach_options(),
    )


def attach_options() -> dict[str, Any]:
    """uvicorn's WebSocket keepalive and frame bound, as attach's contract says."""
    return {
        "ws_ping_interval": PING_INTERVAL_S,
        "ws_ping_timeout": DEAD_AFTER_S - PING_INTERVAL_S,
        "ws_max_size": attach.MAX_FRAME,
    }
