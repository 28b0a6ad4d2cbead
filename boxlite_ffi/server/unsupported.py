"""Every route of the contract naming a feature we do not have (volumes,
snapshots, clone, export/import, tunnels, API keys) answers the contract's
``unsupported`` (501), not 404: a client learns the feature is missing, not
that it mistyped a path.  ``GET /v1/config`` says the same in advance."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..boxapi import BOX, BOXES
from .auth import require_token
from .errors import unsupported

router = APIRouter(dependencies=[Depends(require_token)])

# (path, methods, feature) of every contract route we do not serve.
ROUTES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/v1/api-keys", ("GET", "POST"), "API keys"),
    ("/v1/api-keys/{name}", ("DELETE",), "API keys"),
    ("/v1/volumes", ("GET", "POST"), "managed volumes"),
    ("/v1/volumes/{volume_id}", ("GET", "DELETE"), "managed volumes"),
    (f"{BOX}/snapshots", ("GET", "POST"), "snapshots"),
    (f"{BOX}/snapshots/{{snapshot_name}}", ("GET", "DELETE"), "snapshots"),
    (f"{BOX}/snapshots/{{snapshot_name}}/restore", ("POST",), "snapshots"),
    (f"{BOX}/clone", ("POST",), "clone"),
    (f"{BOX}/export", ("POST",), "export"),
    (f"{BOXES}/import", ("POST",), "import"),
    (f"{BOX}/network/tunnel", ("POST",), "tunnels"),
)


def _refuse(feature: str) -> object:
    def refuse() -> None:
        raise unsupported(feature)

    return refuse


for _path, _methods, _feature in ROUTES:
    router.add_api_route(
        _path,
        _refuse(_feature),  # type: ignore[arg-type]
        methods=list(_methods),
        status_code=501,
        include_in_schema=False,
    )
