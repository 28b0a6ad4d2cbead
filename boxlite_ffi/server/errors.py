"""Our typed errors as the contract's ``ErrorResponse``: one table.

Each row maps an error class (the most specific one that matches wins:
rows are looked up along the exception's MRO) to the HTTP status and the
contract's ``type`` and ``code``; our own stable reason (an ``ErrorCode``
name, or a ``reason`` where the error has one) travels in the extension
field ``boxlite_code``.  Anything else a route raises is a bug: logged, and
answered as the contract's ``internal`` (500) without detail.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as ours
from .idempotency import IdempotencyKeyReusedError
from .models import ErrorModel, ErrorResponse
from .request_ids import HEADER as REQUEST_ID_HEADER
from .request_ids import of_scope

log = logging.getLogger("boxlite_ffi.server")


class PayloadTooLarge(ours.InvalidArgumentError):  # answered by limits.BodyLimit
    """A body or upload beyond the server's bound."""


class RouteNotFound(ours.NotFoundError):
    """No such route."""


class MethodNotAllowed(ours.InvalidArgumentError):
    """The route exists, not with this method."""


class Row(NamedTuple):
    status: int
    type: str
    code: str


# The contract's (status, type, code) of each of our errors.
TABLE: dict[type[BaseException], Row] = {
    ours.BoxliteError: Row(500, "InternalError", "internal"),
    ours.InvalidArgumentError: Row(400, "InvalidArgumentError", "invalid_argument"),
    ours.UnsafePathError: Row(400, "InvalidArgumentError", "invalid_argument"),
    ours.UnsupportedError: Row(501, "UnsupportedError", "unsupported"),
    ours.NotFoundError: Row(404, "NotFoundError", "not_found"),
    ours.AlreadyExistsError: Row(409, "AlreadyExistsError", "already_exists"),
    ours.InvalidStateError: Row(409, "InvalidStateError", "invalid_state"),
    ours.LimitExceededError: Row(429, "ResourceExhaustedError", "resource_exhausted"),
    ours.ExecClosedError: Row(409, "InvalidStateError", "invalid_state"),
    ours.RuntimeClosedError: Row(503, "EngineError", "engine_unavailable"),
    ours.ImageError: Row(422, "ImageError", "image_pull_failed"),
    ours.ImageNotFoundError: Row(404, "NotFoundError", "not_found"),
    ours.ImageInUseError: Row(409, "InvalidStateError", "invalid_state"),
    ours.EngineError: Row(503, "EngineError", "engine_unavailable"),
    ours.OutOfMemoryError: Row(503, "ResourceExhaustedError", "resource_exhausted"),
    ours.SystemCallError: Row(500, "InternalError", "internal"),
    ours.ProtocolError: Row(502, "UpstreamUnavailableError", "upstream_unavailable"),
    ours.BoxliteTimeoutError: Row(408, "TimeoutError", "timeout"),
    ours.InternalError: Row(500, "InternalError", "internal"),
    ours.NotABoxDirectoryError: Row(500, "InternalError", "internal"),
    ours.StoreError: Row(503, "DatabaseError", "database_error"),
    ours.DiskFullError: Row(507, "StorageError", "storage_error"),
    ours.AuthenticationError: Row(401, "AuthError", "unauthenticated"),
    PayloadTooLarge: Row(413, "InvalidArgumentError", "invalid_argument"),
    RouteNotFound: Row(404, "NotFoundError", "not_found"),
    MethodNotAllowed: Row(405, "InvalidArgumentError", "invalid_argument"),
    IdempotencyKeyReusedError: Row(422, "InvalidArgumentError", "invalid_argument"),
}
INTERNAL = TABLE[ours.InternalError]


def row_of(exc: BaseException) -> Row:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return INTERNAL


def public_class(exc: ours.BoxliteError) -> str:
    """The name of the nearest class of ``boxlite_ffi`` itself (its
    ``errors`` module) that ``exc`` is, or stands for (``stands_for``): what
    a remote client raises."""
    for cls in getattr(exc, "stands_for", type(exc)).__mro__:
        if cls.__module__ == ours.__name__:
            return cls.__name__
    return ours.BoxliteError.__name__


def reason_of(exc: ours.BoxliteError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason is not None else exc.code.name.lower()


def unsupported(feature: str) -> ours.UnsupportedError:
    """The contract's 501 for a feature it names that we do not have."""
    return ours.UnsupportedError(f"unsupported: {feature} is not available on this server")


def request_id(request: Request) -> str:
    """The id of this request (``request_ids``)."""
    return of_scope(request.scope)


def error_response(
    row: Row,
    message: str,
    rid: str,
    boxlite_code: str | None,
    headers: dict[str, str] | None = None,
    boxlite_error: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorModel(
            message=message,
            type=row.type,
            code=row.code,
            request_id=rid,
            boxlite_code=boxlite_code,
            boxlite_error=boxlite_error,
        )
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=row.status,
        headers={REQUEST_ID_HEADER: rid, **(headers or {})},
    )


def respond(request: Request, exc: BaseException) -> JSONResponse:
    """The contract's answer for ``exc`` (a bug: logged, told as internal)."""
    rid = request_id(request)
    if isinstance(exc, ours.BoxliteError):
        auth = isinstance(exc, ours.AuthenticationError)
        headers = {"WWW-Authenticate": "Bearer"} if auth else None
        row = row_of(exc)
        return error_response(row, exc.message, rid, reason_of(exc), headers, public_class(exc))
    log.exception("internal error in %s %s (%s)", request.method, request.url.path, rid)
    return error_response(INTERNAL, "internal error", rid, "internal")


def install(app: FastAPI) -> None:
    """The handlers: ours, request validation (400, not FastAPI's 422),
    unknown routes and methods, and anything unexpected (500, logged)."""

    async def boxlite_error(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, exc)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, ours.InvalidArgumentError(describe(exc)))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return respond(request, RouteNotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return respond(
                request, MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            )
        row = Row(exc.status_code, "InvalidArgumentError", "invalid_argument")
        return error_response(row, str(exc.detail), request_id(request), None)

    app.add_exception_handler(ours.BoxliteError, boxlite_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, boxlite_error)


def describe(exc: RequestValidationError) -> str:
    """Pydantic's errors in one line: where, and what is wrong."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid argument: " + "; ".join(parts)
