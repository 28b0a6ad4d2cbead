"""``GET /v1/config`` (no token: capability discovery) and ``GET /v1/me``."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends

from ..spec import check_engine
from .auth import require_token
from .models import Capabilities, ConfigDefaults, Principal, ServerConfig
from .state import State

router = APIRouter()

# Every optional feature the contract names, and whether this server has it.
FEATURES = {
    "boxes": True,
    "exec": True,
    "attach": True,
    "files": True,
    "images": True,
    "metrics": True,
    "auto_stop": True,
    "auto_delete": False,
    "volumes": False,
    "snapshots": False,
    "clone": False,
    "export": False,
    "import": False,
    "tunnel": False,
    "api_keys": False,
    "secrets": False,
    "linux_capabilities": False,
}
# What a single-tenant server with no permission model serves (the contract:
# every scope served is reported, none other).
SCOPES = ["box:read", "box:write", "box:exec", "box:delete", "me:read"]
PRINCIPAL = "boxlite-serve"


def iso_duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (
        "PT" + "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
        if whole
        else "PT0S"
    )


@router.get(
    "/v1/config",
    response_model=ServerConfig,
    operation_id="getConfig",
    response_model_exclude_none=True,
)
def get_config(state: State) -> ServerConfig:
    s = state.settings
    limits = s.limits
    return ServerConfig(
        defaults=ConfigDefaults(cpus=os.cpu_count() or 1, memory_mib=s.memory_cap_mib()),
        capabilities=Capabilities(
            max_cpus=limits.max_cpus,
            max_memory_mib=s.memory_cap_mib(),
            max_boxes_per_path_prefix=limits.max_boxes,
            max_concurrent_executions=limits.max_executions_per_box,
            file_transfer_max_bytes=limits.max_upload_bytes,
            exec_timeout_max_seconds=limits.exec_timeout_max_seconds,
            tty_enabled=True,
            streaming_enabled=True,
            idempotency_key_lifetime=iso_duration(s.idempotency_ttl_seconds),
            boxlite_max_executions=limits.max_executions,
            boxlite_max_json_body_bytes=limits.max_json_body,
            boxlite_features=dict(FEATURES),
            boxlite_engine=check_engine(s.engine),
        ),
    )


@router.get(
    "/v1/me",
    response_model=Principal,
    operation_id="getCurrentPrincipal",
    response_model_exclude_unset=True,
    dependencies=[Depends(require_token)],
)
def get_me() -> Principal:
    return Principal(
        sub=PRINCIPAL,
        principal_type="service_account",
        display_name="boxlite serve",
        path_prefix=None,
        scopes=list(SCOPES),
    )
