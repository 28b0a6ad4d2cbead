"""Metrics routes: the runtime's (counters since this server started, and
the boxes running now) and a box's: what its cgroups measure (CPU time,
memory, processes; v2 files, v1's where the controller is v1) and its
executions (``state.sessions``' counts).  What we cannot measure (network,
boot stages) is null."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi import APIRouter, Depends

from ..box import Box as OurBox
from ..boxapi import BOX
from ..state import boxdir
from ..state.status import BoxStatus
from .auth import require_token
from .models import BoxMetrics, RuntimeMetrics
from .state import State

router = APIRouter(dependencies=[Depends(require_token)])

# (controller, file, key or None for the whole file) of each measure, v2 then v1.
CPU_USEC = (("cpu", "cpu.stat", "usage_usec"),)
CPU_NSEC_V1 = (("cpuacct", "cpuacct.usage", None),)
MEMORY = (("memory", "memory.current", None), ("memory", "memory.usage_in_bytes", None))
PIDS = (("pids", "pids.current", None),)


def cgroups(box: OurBox) -> dict[str, Path]:
    """The box's cgroup directory per controller (what its shim made)."""
    found: dict[str, Path] = {}
    try:
        for line in (box.directory / boxdir.CGROUPS).read_text().splitlines():
            controller, _, path = line.partition(" ")
            found[controller] = Path(path)
    except OSError:
        pass
    return found


def read(groups: dict[str, Path], choices: tuple[tuple[str, str, str | None], ...]) -> int | None:
    for controller, name, key in choices:
        directory = groups.get(controller) or groups.get("")  # "": a v2 unified line
        if directory is None:
            continue
        try:
            text = (directory / name).read_text()
        except OSError:
            continue
        if key is None:
            return int(text.split()[0])
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    return None


@router.get("/v1/metrics", response_model=RuntimeMetrics, operation_id="getRuntimeMetrics")
def runtime_metrics(state: State) -> RuntimeMetrics:
    counts = state.exec_counts(None)
    running = sum(1 for i in state.runtime.list() if i.status == BoxStatus.RUNNING)
    c = state.counters
    return RuntimeMetrics(
        boxes_created_total=c.boxes_created,
        boxes_failed_total=c.boxes_failed,
        boxes_stopped_total=c.boxes_stopped,
        num_running_boxes=running,
        total_commands_executed=counts.started,
        total_exec_errors=counts.failed,
    )


@router.get(BOX + "/metrics", response_model=BoxMetrics, operation_id="getBoxMetrics")
def box_metrics(box_id: str, state: State) -> BoxMetrics:
    box = state.box(box_id)
    counts = state.exec_counts(box.id)
    info = box.info()
    groups = cgroups(box) if info.status == BoxStatus.RUNNING else {}
    usec = read(groups, CPU_USEC)
    nsec = read(groups, CPU_NSEC_V1) if usec is None else None
    cpu_seconds = usec / 1e6 if usec is not None else nsec / 1e9 if nsec is not None else None
    percent = None
    if cpu_seconds is not None and info.started:
        wall = max(time.time() - info.started, 1e-3) * (os.cpu_count() or 1)
        percent = min(100.0, 100.0 * cpu_seconds / wall)
    return BoxMetrics(
        commands_executed_total=counts.started,
        exec_errors_total=counts.failed,
        bytes_sent_total=counts.stdin_bytes,
        bytes_received_total=counts.output_bytes,
        cpu_percent=percent,
        memory_bytes=read(groups, MEMORY),
        boxlite_cpu_seconds=cpu_seconds,
        boxlite_pids=read(groups, PIDS),
        boxlite_running_executions=counts.running,
    )
