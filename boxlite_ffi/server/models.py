"""The contract's schemas this server serves, as pydantic models.

Field names and types are the contract's (tests/test_server_contract.py
checks them against tests/contract/boxlite-box.openapi.yaml).  Our own
extras are extension fields, every one named ``boxlite_*`` (``EXTENSION``):
optional in requests (a contract client never sends them) and additional in
responses (a contract client may ignore them).

Statuses: ours (``BoxStatus``) are finer than the contract's; ``STATUS_MAP``
is the one mapping, and a Box's ``boxlite_status`` carries ours exactly:

    ours        contract     why
    configured  configured
    starting    running      a start in progress: it runs once it answers
    running     running
    stopping    stopping
    stopped     stopped
    exited      stopped      its main command ended; it can be started again
    failed      failed       it could not start (``boxlite_reason`` says why)
    lost        stopped      its run ended unasked (a crash, a reboot); it can
                             be started again (``boxlite_reason`` says how)

A box's end is told in full by ``boxlite_outcome`` (``exited``,
``signaled``, ``failed_to_start``, ``lost``, or null when stopped),
``boxlite_exit_code`` and ``boxlite_signal``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..state.status import BoxStatus as OurStatus

ContractStatus = Literal[
    "configured", "running", "stopping", "stopped", "paused", "failed", "unknown"
]

STATUS_MAP: dict[OurStatus, ContractStatus] = {
    OurStatus.CONFIGURED: "configured",
    OurStatus.STARTING: "running",
    OurStatus.RUNNING: "running",
    OurStatus.STOPPING: "stopping",
    OurStatus.STOPPED: "stopped",
    OurStatus.EXITED: "stopped",
    OurStatus.FAILED: "failed",
    OurStatus.LOST: "stopped",
}


def ours_of(status: str) -> set[OurStatus]:
    """Our statuses that the contract's ``status`` stands for (none for
    ``paused`` and ``unknown``, which no box of ours is in)."""
    return {ours for ours, theirs in STATUS_MAP.items() if theirs == status}


class _Request(BaseModel):
    """A request body: a field the contract does not name is an error."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A request body whose schema does not close itself: unknown fields pass."""

    model_config = ConfigDict(extra="ignore")


# ---- errors ------------------------------------------------------------------


class ErrorModel(BaseModel):
    message: str
    type: str
    code: str
    request_id: str | None = None
    stack: list[str] | None = None  # the contract's debug mode: never sent
    boxlite_code: str | None = Field(
        default=None, description="Extension: our stable reason code (errors.py's codes)"
    )
    boxlite_error: str | None = Field(
        default=None, description="Extension: our exception class (boxlite_ffi's errors module)"
    )


class ErrorResponse(BaseModel):
    error: ErrorModel


# ---- configuration and identity ------------------------------------------------


class ConfigDefaults(BaseModel):
    cpus: int | None = None
    memory_mib: int | None = None
    disk_size_gb: int | None = None
    auto_delete: int = 0


class Capabilities(BaseModel):
    linux_capabilities_enabled: bool = False
    max_cpus: int
    max_memory_mib: int
    max_disk_size_gb: int | None = None
    max_boxes_per_path_prefix: int
    max_concurrent_executions: int
    file_transfer_max_bytes: int
    exec_timeout_max_seconds: float
    tty_enabled: bool
    streaming_enabled: bool
    snapshots_enabled: bool = False
    clone_enabled: bool = False
    export_enabled: bool = False
    idempotency_key_lifetime: str
    boxlite_max_executions: int = Field(description="Extension: executions over all boxes")
    boxlite_max_json_body_bytes: int = Field(description="Extension: bound on a JSON body")
    boxlite_features: dict[str, bool] = Field(
        description="Extension: every feature the contract names, and whether it is served"
    )
    boxlite_engine: str = Field(description="Extension: the engine boxes run on by default")


class ServerConfig(BaseModel):
    defaults: ConfigDefaults
    overrides: dict[str, str] = {}
    capabilities: Capabilities


class Principal(BaseModel):
    sub: str
    principal_type: Literal["user", "service_account"]
    email: str | None = None
    display_name: str | None = None
    path_prefix: str | None
    scopes: list[str]
    expires_at: str | None = None


# ---- boxes -------------------------------------------------------------------


class Box(BaseModel):
    box_id: str
    name: str | None
    status: ContractStatus
    created_at: str
    updated_at: str
    pid: int | None
    image: str
    cpus: int
    memory_mib: int
    labels: dict[str, str] = {}
    auto_stop: int
    auto_delete: int = 0
    auto_resume: bool = True
    boxlite_status: str = Field(description="Extension: our status (see models.STATUS_MAP)")
    boxlite_outcome: str | None = Field(default=None, description="Extension: how its run ended")
    boxlite_exit_code: int | None = Field(default=None, description="Extension")
    boxlite_signal: int | None = Field(default=None, description="Extension")
    boxlite_reason: str | None = Field(
        default=None, description="Extension: why it failed or was lost"
    )
    boxlite_engine: str = Field(description="Extension: ns or vm")
    boxlite_accelerator: str | None = Field(default=None, description="Extension: a vm box's")
    boxlite_started_at: str | None = Field(
        default=None, description="Extension: when its last run started"
    )
    boxlite_finished_at: str | None = Field(
        default=None, description="Extension: when its last run ended"
    )


class CreateContainerCapabilities(_Request):
    add: list[str] = []
    drop: list[str] = []


class CreateBoxAdvancedOptions(_Request):
    capabilities: CreateContainerCapabilities | None = None


class VolumeSpec(_Request):
    managed_volume: str = Field(min_length=1)
    guest_path: str
    read_only: Literal[False] = False


class OutboundNetworkSpec(_Request):
    mode: Literal["enabled", "disabled"]
    allow_net: list[str] | None = None


class InboundNetworkSpec(_Request):
    mode: Literal["enabled", "disabled"]
    allow_net: list[str] | None = None


class NetworkSpec(_Request):
    outbound: OutboundNetworkSpec | None = None
    inbound: InboundNetworkSpec | None = None
    mode: Literal["enabled", "disabled"] | None = None
    allow_net: list[str] | None = None


class SecretSpec(_Open):
    name: str
    value: str
    hosts: list[str] | None = None
    placeholder: str | None = None


class CreateBoxRequest(_Request):
    advanced: CreateBoxAdvancedOptions | None = None
    name: str | None = Field(default=None, min_length=1, max_length=128)
    image: str | None = None
    rootfs_path: str | None = None
    cpus: int | None = Field(default=None, ge=1, le=32)
    memory_mib: int | None = Field(default=None, ge=128)
    disk_size_gb: int | None = Field(default=None, ge=1)
    working_dir: str | None = None
    env: dict[str, str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    volumes: list[VolumeSpec] | None = None
    network: NetworkSpec | None = None
    secrets: list[SecretSpec] | None = None
    detach: bool = False
    tty: bool = False
    auto_stop: int | None = Field(default=None, ge=0)
    auto_delete: int = Field(default=0, ge=0)
    auto_resume: bool = True
    boxlite_engine: Literal["ns", "vm"] | None = Field(
        default=None, description="Extension: the engine (the server's default otherwise)"
    )
    boxlite_pids: int | None = Field(
        default=None, ge=0, description="Extension: process limit (0: none)"
    )
    boxlite_log_limit: int | None = Field(
        default=None, ge=1, description="Extension: bytes of the main command's output kept"
    )
    boxlite_tmp_size: int | None = Field(
        default=None, ge=1, description="Extension: bytes of each of /tmp and /dev/shm"
    )
    boxlite_host_loopback: bool = Field(
        default=False, description="Extension: with outbound network, reach the host's loopback"
    )
    boxlite_use_image_cmd: bool = Field(
        default=False, description="Extension: run the image's Entrypoint + Cmd"
    )
    boxlite_cpus: float | None = Field(
        default=None,
        gt=0,
        le=32,
        description="Extension: CPUs' worth of time (over cpus)",
    )
    boxlite_memory: int | None = Field(
        default=None, ge=1, description="Extension: memory limit in bytes (over memory_mib)"
    )
    boxlite_disk: int | None = Field(
        default=None, ge=1, description="Extension: writable layer in bytes (over disk_size_gb)"
    )


class StopBoxRequest(_Open):
    timeout_seconds: float = Field(default=30, ge=0)


class ListBoxesResponse(BaseModel):
    boxes: list[Box]
    next_page_token: str | None = None


# ---- images ------------------------------------------------------------------


class ImageInfo(BaseModel):
    reference: str
    repository: str
    tag: str
    id: str
    cached_at: str
    size_bytes: int | None = None
    boxlite_tags: list[str] = Field(default=[], description="Extension: every name of it")
    boxlite_layers: list[str] = Field(default=[], description="Extension: diff_ids, bottom first")
    boxlite_config: dict[str, list[str] | str] = Field(
        default={}, description="Extension: env, entrypoint, cmd, workdir and user of its config"
    )


class PullImageRequest(_Open):
    reference: str = Field(min_length=1)
    boxlite_insecure: bool = Field(
        default=False, description="Extension: plain HTTP to the registry"
    )


class ListImagesResponse(BaseModel):
    images: list[ImageInfo]
    next_page_token: str | None = None


# ---- metrics -----------------------------------------------------------------


class RuntimeMetrics(BaseModel):
    boxes_created_total: int
    boxes_failed_total: int
    boxes_stopped_total: int
    num_running_boxes: int
    total_commands_executed: int
    total_exec_errors: int


class BootTiming(BaseModel):
    total_create_ms: int | None = None
    guest_boot_ms: int | None = None
    filesystem_setup_ms: int | None = None
    image_prepare_ms: int | None = None
    guest_rootfs_ms: int | None = None
    box_config_ms: int | None = None
    box_spawn_ms: int | None = None
    container_init_ms: int | None = None


class BoxMetrics(BaseModel):
    commands_executed_total: int
    exec_errors_total: int
    bytes_sent_total: int
    bytes_received_total: int
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    network_bytes_sent: int | None = None
    network_bytes_received: int | None = None
    network_tcp_connections: int | None = None
    network_tcp_errors: int | None = None
    boot_timing: BootTiming = BootTiming()
    boxlite_cpu_seconds: float | None = Field(
        default=None, description="Extension: CPU time of the box's processes, in seconds"
    )
    boxlite_pids: int | None = Field(
        default=None, description="Extension: processes and threads in the box now"
    )
    boxlite_running_executions: int = Field(
        default=0, description="Extension: executions of this server running in the box"
    )
