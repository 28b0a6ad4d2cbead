"""The contract's execution routes: ``POST /exec`` (201 + Location, the box
started if need be, ``Idempotency-Key``), ``GET``/``DELETE`` of an
execution, ``signal`` (the contract's whitelist) and ``resize`` (a tty's).

Our extras are response fields named ``boxlite_*`` (a contract client
ignores them) and one request field a contract client never sends,
``boxlite_user``.  The contract's ``status`` from our outcomes:

========================================  ===========
outcome                                   status
========================================  ===========
(none yet)                                running
exited, failed_to_start                   completed
timed_out                                 timed_out
signaled, killed, oom, lost, force_closed killed
========================================  ===========

``exit_code`` follows the shell (128+n after signal n, 126/127 when the
command could not start, with ``error_message``); ``boxlite_outcome`` and
``boxlite_signal`` say exactly what happened.
"""

from __future__ import annotations

import asyncio
import signal as signals
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..boxapi import EXEC, EXECUTION, RESIZE, SIGNAL
from ..errors import InvalidArgumentError
from ..state.exits import Outcome
from .auth import require_token
from .idempotency import HEADER, Reply, fingerprint
from .sessions import Session, Sessions
from .state import ServerState, State

router = APIRouter(dependencies=[Depends(require_token)], tags=["Execution"])

IdempotencyKey = Annotated[str | None, Header(alias=HEADER)]

# The signals a client may send (the contract's whitelist, also attach's).
SIGNALS = frozenset(
    {
        signals.SIGHUP,
        signals.SIGINT,
        signals.SIGQUIT,
        signals.SIGABRT,
        signals.SIGUSR1,
        signals.SIGUSR2,
        signals.SIGTERM,
        signals.SIGWINCH,
    }
)

ContractStatus = Literal["running", "completed", "killed", "timed_out"]
STATUS_OF: dict[Outcome, ContractStatus] = {
    Outcome.EXITED: "completed",
    Outcome.FAILED_TO_START: "completed",
    Outcome.TIMED_OUT: "timed_out",
}  # every other outcome: "killed"


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    timeout_seconds: float | None = Field(default=None, ge=0.1)
    working_dir: str | None = None
    tty: bool = False
    boxlite_user: str | None = Field(
        default=None, description="Extension: the user to run as (as `boxlite exec --user`)"
    )
    boxlite_rows: int = Field(
        default=24, ge=1, le=0xFFFF, description="Extension: the terminal's rows at start (tty)"
    )
    boxlite_cols: int = Field(
        default=80, ge=1, le=0xFFFF, description="Extension: the terminal's columns at start (tty)"
    )


class ExecResponse(BaseModel):
    execution_id: str


class ExecutionInfo(BaseModel):
    execution_id: str
    status: ContractStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    duration_ms: int | None = None
    error_message: str | None = None
    boxlite_outcome: str | None = Field(
        default=None, description="Extension: how it ended (exited, signaled, oom, lost, ...)"
    )
    boxlite_signal: int | None = Field(
        default=None, description="Extension: the signal that ended it"
    )
    boxlite_os_error: int | None = Field(
        default=None, description="Extension: the errno of a command that could not start"
    )
    boxlite_cursor: tuple[int, int] = Field(
        description="Extension: (stdout, stderr) bytes written so far (attach's cursor)"
    )


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: int


class ResizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cols: int = Field(ge=1, le=0xFFFF)
    rows: int = Field(ge=1, le=0xFFFF)


def sessions_of(state: ServerState) -> Sessions:
    assert isinstance(state.sessions, Sessions), "the app opens the sessions"
    return state.sessions


def info_of(session: Session) -> ExecutionInfo:
    end = session.exit
    started = datetime.fromtimestamp(session.started_at, timezone.utc)
    if end is None:
        return ExecutionInfo(
            execution_id=session.id,
            status="running",
            started_at=started,
            boxlite_cursor=session.produced,
        )
    return ExecutionInfo(
        execution_id=session.id,
        status=STATUS_OF.get(end.outcome, "killed"),
        exit_code=end.exit_code,
        started_at=started,
        duration_ms=end.duration_ms,
        error_message=end.error_message,
        boxlite_outcome=end.outcome.value,
        boxlite_signal=end.signal,
        boxlite_os_error=end.os_error,
        boxlite_cursor=session.produced,
    )


def location(box_id: str, exec_id: str) -> str:
    return EXECUTION.format(box_id=box_id, exec_id=exec_id)


def check_signal(signum: int) -> int:
    if signum not in SIGNALS:
        allowed = ", ".join(sorted(signals.Signals(s).name for s in SIGNALS))
        raise InvalidArgumentError(
            f"signal {signum} is not one a client may send ({allowed}); "
            "DELETE the execution to kill it"
        )
    return signum


def answer(reply: Reply) -> Response:
    if reply.body is None:
        return Response(status_code=reply.status, headers=reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


@router.post(
    EXEC,
    status_code=201,
    response_model=ExecResponse,
    operation_id="startExecution",
    responses={201: {"headers": {"Location": {"schema": {"type": "string"}}}}},
)
def start_execution(
    box_id: str, req: ExecRequest, state: State, key: IdempotencyKey = None
) -> Response:
    """Runs in a worker thread (the box may take a while to start, the
    idempotency table is SQLite); the session starts on the event loop."""
    print_ = fingerprint("POST", EXEC.format(box_id=box_id), req.model_dump_json().encode())

    def start() -> Reply:
        box = state.box(box_id)
        sessions = sessions_of(state)
        session = sessions.call(
            sessions.start(
                box,
                [req.command, *req.args],
                env=req.env,
                cwd=req.working_dir,
                timeout=req.timeout_seconds,
                tty=req.tty,
                rows=req.boxlite_rows,
                cols=req.boxlite_cols,
                user=req.boxlite_user,
            )
        )
        body = ExecResponse(execution_id=session.id).model_dump()
        return Reply(201, body, {"Location": location(box_id, session.id)})

    return answer(state.idempotency.run(key, print_, start))


async def session_of(state: ServerState, box_id: str, exec_id: str) -> Session:
    box = await asyncio.to_thread(state.box, box_id)
    return sessions_of(state).get(box.id, exec_id)


@router.get(EXECUTION, response_model=ExecutionInfo, operation_id="getExecution")
async def get_execution(box_id: str, exec_id: str, state: State) -> ExecutionInfo:
    return info_of(await session_of(state, box_id, exec_id))


@router.delete(EXECUTION, status_code=204, operation_id="killExecution")
async def kill_execution(box_id: str, exec_id: str, state: State) -> Response:
    session = await session_of(state, box_id, exec_id)
    await sessions_of(state).kill(session.box_id, session.id)
    return Response(status_code=204)


@router.post(SIGNAL, status_code=204, operation_id="signalExecution")
def signal_execution(
    box_id: str, exec_id: str, req: SignalRequest, state: State, key: IdempotencyKey = None
) -> Response:
    signum = check_signal(req.signal)
    path = SIGNAL.format(box_id=box_id, exec_id=exec_id)
    print_ = fingerprint("POST", path, req.model_dump_json().encode())

    def send() -> Reply:
        sessions = sessions_of(state)
        session = sessions.get(state.box(box_id).id, exec_id)
        sessions.call(session.signal(signum))
        return Reply(204)

    return answer(state.idempotency.run(key, print_, send))


@router.post(RESIZE, status_code=204, operation_id="resizeExecution")
async def resize_execution(box_id: str, exec_id: str, req: ResizeRequest, state: State) -> Response:
    session = await session_of(state, box_id, exec_id)
    await session.resize(req.rows, req.cols)
    return Response(status_code=204)
