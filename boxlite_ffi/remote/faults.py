"""A server's error answer (the contract's ``ErrorResponse``) as the typed
error a local runtime would raise.

Our server names the exception in the extension ``boxlite_error`` (a class
of ``boxlite_ffi.errors``) and its reason in ``boxlite_code``; from any
other server of the contract, the HTTP status says what it can.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors

# A contract server's statuses, for an answer that names no class of ours.
BY_STATUS: dict[int, type[errors.BoxliteError]] = {
    400: errors.InvalidArgumentError,
    401: errors.AuthenticationError,
    403: errors.AuthenticationError,
    404: errors.NotFoundError,
    405: errors.InvalidArgumentError,
    408: errors.BoxliteTimeoutError,
    409: errors.InvalidStateError,
    413: errors.InvalidArgumentError,
    422: errors.ImageError,
    429: errors.LimitExceededError,
    501: errors.UnsupportedError,
    502: errors.ProtocolError,
    503: errors.EngineError,
    507: errors.DiskFullError,
}


def error_of(status: int, body: bytes) -> errors.BoxliteError:
    """The typed error of an answer with ``status`` and ``body``."""
    fields = _fields(body)
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        message = f"the server answered HTTP {status}"
    cls = _named(fields.get("boxlite_error")) or BY_STATUS.get(status, errors.InternalError)
    reason = fields.get("boxlite_code")
    if issubclass(cls, errors.ReasonedError) and isinstance(reason, str):
        kind = type(cls.default_reason)
        if reason in kind._value2member_map_:
            return cls(message, kind(reason))
    return cls(message)


def _fields(body: bytes) -> dict[str, Any]:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _named(name: object) -> type[errors.BoxliteError] | None:
    """A class of ``boxlite_ffi.errors`` by name (nothing else)."""
    found = getattr(errors, name, None) if isinstance(name, str) else None
    if isinstance(found, type) and issubclass(found, errors.BoxliteError):
        return found
    return None
