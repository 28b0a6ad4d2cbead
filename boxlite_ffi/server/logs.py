"""``GET /v1/boxes/{box_id}/boxlite_logs/{stream}``: an extension route (the
contract has no logs).  What the box's main command wrote to ``stdout`` or
``stderr``, as ``Box.logs`` reads it: the newest ``log_limit`` bytes of each
stream, over every run, as raw bytes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response

from ..boxapi import LOGS
from .auth import require_token
from .state import State

router = APIRouter(dependencies=[Depends(require_token)])


@router.get(LOGS, operation_id="boxliteBoxLogs", response_class=Response)
def box_logs(box_id: str, stream: Literal["stdout", "stderr"], state: State) -> Response:
    logs = state.box(box_id).logs()
    data = logs.stdout if stream == "stdout" else logs.stderr
    return Response(data, media_type="application/octet-stream")
