"""Bearer authentication: every route but ``GET /v1/config`` depends on
``require_token``; the token is compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from ..errors import AuthenticationError
from .state import ServerState

SCHEME = "bearer"


def require_token(request: Request) -> None:
    """The request's ``Authorization: Bearer <token>`` is the server's, or 401."""
    state: ServerState = request.app.state.server
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != SCHEME or not given:
        raise AuthenticationError("invalid or missing bearer token")
    if not hmac.compare_digest(given.strip().encode(), state.settings.token.encode()):
        raise AuthenticationError("invalid or missing bearer token")
