"""Box routes: create, list, get, HEAD, delete, start, stop.

Every box the server creates is detached: it survives a restart of the
server, which finds it again in the home.  Create maps the contract's
``CreateBoxRequest`` onto ``Runtime.create``; what the contract names and
we cannot honour (managed volumes, secrets, capability changes, a box tty,
AutoDelete, inbound networking) is the contract's ``unsupported``, never
ignored.  ``detach`` is accepted and moot (always detached).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from ..box import Box as OurBox
from ..boxapi import BOX, BOXES, START, STOP
from ..errors import (
    BoxliteError,
    ImageError,
    ImageNotFoundError,
    ImageReason,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
)
from .auth import require_token
from .errors import unsupported
from .extras import BoxExtras
from .idempotency import HEADER, Reply, fingerprint
from .models import (
    STATUS_MAP,
    Box,
    ContractStatus,
    CreateBoxRequest,
    ListBoxesResponse,
    StopBoxRequest,
    ours_of,
)
from .settings import MIB, host_memory_mib
from .state import ServerState, State

router = APIRouter(dependencies=[Depends(require_token)])

IdempotencyKey = Annotated[str | None, Header(alias=HEADER)]
HOST_IMAGE = "host"  # the runtime's built-in image: the host's own files
_creating = threading.Lock()  # the box count and the create it allows, together


# ---- the view ------------------------------------------------------------------


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z")


def view(state: ServerState, box: OurBox) -> Box:
    """A box as the contract's ``Box``, our details in its extensions."""
    info = box.info()
    limits = info.config.get("limits") or {}
    extras = state.extras.get(info.id)
    memory = limits.get("memory_limit")
    cpu_millis = limits.get("cpu_millis")
    outcome = _outcome(info.status, info.exit_code, info.signal)
    try:
        pid: int | None = box.shim_pid if STATUS_MAP[info.status] == "running" else None
    except InvalidStateError:
        pid = None
    return Box(
        box_id=info.id,
        name=info.name,
        status=STATUS_MAP[info.status],
        created_at=iso(info.created),
        updated_at=iso(max(t for t in (info.created, info.started, info.finished) if t)),
        pid=pid,
        image=info.image,
        cpus=math.ceil(cpu_millis / 1000) if cpu_millis else os.cpu_count() or 1,
        memory_mib=memory // MIB if memory else host_memory_mib(),
        labels=extras.labels,
        auto_stop=extras.auto_stop,
        auto_delete=extras.auto_delete,
        auto_resume=extras.auto_resume,
        boxlite_status=str(info.status),
        boxlite_outcome=outcome,
        boxlite_exit_code=info.exit_code,
        boxlite_signal=info.signal,
        boxlite_reason=info.reason,
        boxlite_engine=info.engine,
        boxlite_accelerator=info.accelerator,
        boxlite_started_at=iso(info.started) if info.started else None,
        boxlite_finished_at=iso(info.finished) if info.finished else None,
    )


def _outcome(status: str, exit_code: int | None, signal: int | None) -> str | None:
    """As ``BoxExit.outcome``: how the box's run ended (None: stopped, or running)."""
    if status == "exited":
        return "signaled" if signal is not None else "exited"
    if status == "failed" and exit_code is not None:
        return "failed_to_start"
    if status == "lost":
        return "lost"
    return None


def reply(state: ServerState, box: OurBox, status: int = 200, **headers: str) -> Reply:
    return Reply(status, view(state, box).model_dump(mode="json"), headers)


def answer(result: Reply) -> Response:
    if result.body is None:
        return Response(status_code=result.status, headers=result.headers)
    return JSONResponse(result.body, status_code=result.status, headers=result.headers)


# ---- create --------------------------------------------------------------------


def refuse_unsupported(req: CreateBoxRequest) -> None:
    if req.volumes:
        raise unsupported("managed volumes")
    if req.secrets:
        raise unsupported("secrets")
    caps = req.advanced.capabilities if req.advanced else None
    if caps is not None and (caps.add or caps.drop):
        raise unsupported("Linux capability changes")
    if req.tty:
        raise unsupported("a box whose main command has a tty")
    if req.auto_delete:
        raise unsupported("auto_delete")
    if not req.auto_resume:
        raise unsupported("auto_resume=false (an exec starts a stopped box)")


def network_of(req: CreateBoxRequest) -> bool:
    """Whether the box gets outbound networking (the nested shape, or the
    deprecated flat one, not both)."""
    spec = req.network
    if spec is None:
        return False
    legacy = spec.mode is not None or spec.allow_net is not None
    if legacy and (spec.outbound is not None or spec.inbound is not None):
        raise InvalidArgumentError("network: the flat mode/allow_net with outbound/inbound")
    if spec.inbound is not None:
        if spec.inbound.allow_net:
            raise InvalidArgumentError("network.inbound.allow_net is not supported")
        if spec.inbound.mode == "enabled":
            raise unsupported("inbound networking (tunnels)")
    mode = spec.outbound.mode if spec.outbound else spec.mode or ("enabled" if legacy else None)
    allow = spec.outbound.allow_net if spec.outbound else spec.allow_net
    if allow:
        raise unsupported("an outbound allowlist")
    return mode == "enabled"


def rootfs_of(state: ServerState, given: str) -> Path:
    """``rootfs_path``, only under a directory the operator allowed."""
    path = Path(given).resolve()
    for allowed in state.settings.allow_rootfs:
        if path.is_relative_to(allowed):
            return path
    raise InvalidArgumentError(
        f"rootfs_path {given!r} is not under a directory allowed by --allow-rootfs"
    )


def image_of(req: CreateBoxRequest) -> str:
    """The image reference: one of the cache's, never a path on the server."""
    image = req.image or "alpine:latest"
    if image == HOST_IMAGE or image.startswith((".", "/")) or os.path.exists(image):
        raise InvalidArgumentError(f"image {image!r}: an image of the server's cache")
    return image


def create_kwargs(state: ServerState, req: CreateBoxRequest) -> dict[str, Any]:
    refuse_unsupported(req)
    if req.image is not None and req.rootfs_path is not None:
        raise InvalidArgumentError("give image or rootfs_path, not both")
    memory = req.boxlite_memory or (req.memory_mib * MIB if req.memory_mib is not None else None)
    if memory is not None and memory > state.settings.memory_cap_mib() * MIB:
        raise InvalidArgumentError(
            f"memory {memory} bytes: at most {state.settings.memory_cap_mib()} MiB"
        )
    cpus = req.boxlite_cpus or (float(req.cpus) if req.cpus is not None else None)
    disk = req.boxlite_disk or (req.disk_size_gb << 30 if req.disk_size_gb is not None else None)
    network = network_of(req)
    source: dict[str, Any] = (
        {"rootfs": rootfs_of(state, req.rootfs_path)}
        if req.rootfs_path is not None
        else {"image": image_of(req)}
    )
    return source | {
        "name": req.name,
        "env": req.env,
        "workdir": req.working_dir,
        "cmd": req.cmd,
        "entrypoint": req.entrypoint,
        "use_image_cmd": req.boxlite_use_image_cmd,
        "user": req.user,
        "memory": memory,
        "cpus": cpus,
        "pids": req.boxlite_pids,
        "network": network,
        "host_loopback": req.boxlite_host_loopback,
        "disk": disk,
        "log_limit": req.boxlite_log_limit,
        "tmp_size": req.boxlite_tmp_size,
        "detach": True,  # a server's box outlives the server's process
        "engine": req.boxlite_engine,
    }


def create(state: ServerState, req: CreateBoxRequest) -> Reply:
    kwargs = create_kwargs(state, req)
    with _creating:
        count = len(state.runtime.list())
        if count >= state.settings.limits.max_boxes:
            raise LimitExceededError(f"the server holds {count} boxes, its limit")
        try:
            box = state.runtime.create(**kwargs)
        except ImageNotFoundError as exc:
            raise ImageError(f"{exc.message}: pull it first", ImageReason.NOT_FOUND) from None
    auto_stop = state.settings.auto_stop_default_seconds if req.auto_stop is None else req.auto_stop
    extras = BoxExtras(auto_stop, req.auto_delete, req.auto_resume)
    state.extras.put(box.id, extras)
    state.counters.add("boxes_created")
    state.touch(box.id)
    return reply(state, box, 201, Location=f"{BOXES}/{box.id}")


@router.post(BOXES, status_code=201, response_model=Box, operation_id="createBox")
def create_box(req: CreateBoxRequest, state: State, key: IdempotencyKey = None) -> Response:
    print_ = fingerprint("POST", BOXES, req.model_dump_json().encode())
    return answer(state.idempotency.run(key, print_, lambda: create(state, req)))


# ---- list, get, head, delete ------------------------------------------------------


def encode_token(created: float, box_id: str) -> str:
    raw = json.dumps([created, box_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, box_id = json.loads(raw)
        if isinstance(created, int | float) and isinstance(box_id, str):
            return float(created), box_id
    except (ValueError, binascii.Error, TypeError):
        pass
    raise InvalidArgumentError("pageToken: not a token this server gave")


@router.get(BOXES, response_model=ListBoxesResponse, operation_id="listBoxes")
def list_boxes(
    state: State,
    status: ContractStatus | None = None,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> ListBoxesResponse:
    """Oldest first (creation time, then id): a stable order, so a page
    token (the last box seen) resumes where the page ended."""
    after = decode_token(page_token) if page_token else None
    wanted = ours_of(status) if status is not None else None
    infos = [
        i
        for i in state.runtime.list()
        if (wanted is None or i.status in wanted) and (after is None or (i.created, i.id) > after)
    ]
    page = infos[:page_size]
    boxes = []
    for info in page:
        try:
            boxes.append(view(state, state.runtime.get(info.id)))
        except BoxliteError:  # removed meanwhile
            continue
    more = len(infos) > page_size
    token = encode_token(page[-1].created, page[-1].id) if more and page else None
    return ListBoxesResponse(boxes=boxes, next_page_token=token)


@router.get(BOX, response_model=Box, operation_id="getBox")
def get_box(box_id: str, state: State) -> Box:
    return view(state, state.box(box_id))


@router.head(BOX, status_code=204, operation_id="boxExists")
def box_exists(box_id: str, state: State) -> Response:
    state.box(box_id)
    return Response(status_code=204)


def remove(state: ServerState, box_id: str, force: bool) -> Reply:
    box = state.box(box_id)
    box.remove(force=force)
    state.forget(box.id)
    return Reply(204)


@router.delete(BOX, status_code=204, operation_id="removeBox")
def remove_box(
    box_id: str, state: State, force: bool = False, key: IdempotencyKey = None
) -> Response:
    print_ = fingerprint("DELETE", f"{BOXES}/{box_id}", str(force).encode())
    return answer(state.idempotency.run(key, print_, lambda: remove(state, box_id, force)))


# ---- start, stop ---------------------------------------------------------------


def start(state: ServerState, box_id: str) -> Reply:
    box = state.box(box_id)
    try:
        box.start()
    except BoxliteError:
        state.counters.add("boxes_failed")
        raise
    return reply(state, box)


@router.post(START, response_model=Box, operation_id="startBox")
def start_box(box_id: str, state: State, key: IdempotencyKey = None) -> Response:
    print_ = fingerprint("POST", f"{BOXES}/{box_id}/start", b"")
    return answer(state.idempotency.run(key, print_, lambda: start(state, box_id)))


def stop(state: ServerState, box_id: str, timeout: float) -> Reply:
    """SIGTERM, SIGKILL after ``timeout`` seconds or the box's stop grace
    (the runtime's, 10 s), whichever is sooner."""
    box = state.box(box_id)
    was_running = STATUS_MAP[box.status] == "running"
    box.stop(timeout)
    if was_running:
        state.counters.add("boxes_stopped")
    return reply(state, box)


@router.post(STOP, response_model=Box, operation_id="stopBox")
def stop_box(
    box_id: str,
    state: State,
    body: Annotated[StopBoxRequest | None, Body()] = None,
    key: IdempotencyKey = None,
) -> Response:
    req = body or StopBoxRequest()
    print_ = fingerprint("POST", f"{BOXES}/{box_id}/stop", req.model_dump_json().encode())
    return answer(
        state.idempotency.run(key, print_, lambda: stop(state, box_id, req.timeout_seconds))
    )
