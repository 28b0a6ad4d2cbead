"""``RemoteBox``: a box of a server, with ``Box``'s API.

Every box a server makes is detached there.  Ownership is this client's:
a box created without ``detach=True`` is stopped and removed when it is
closed (or its runtime is, or the program ends), as a local one would be;
if this program is killed, the server keeps it (its ``auto_stop`` may stop
it) until someone removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..agent.files import ChunkReader, copy_source, extract_archive, write_archive
from ..box import BoxLogs
from ..boxapi import BOX, EXEC, FILES, LOGS, START, STOP
from ..errors import (
    InvalidStateError,
    NotFoundError,
    ProtocolError,
    RuntimeClosedError,
    StateReason,
)
from ..execution import ExecResult, Execution, _ExecSink, run_spec, run_to_end, waited
from ..spec import (
    Env,
    ExecSpec,
    OutputCallback,
    check_argv,
    check_callback,
    check_cursor,
    check_cwd,
    check_seconds,
    check_size,
    check_user_name,
    check_window,
    env_dict,
    parse_exec_id,
    with_exec_spec,
)
from ..state.status import LIVE, BoxStatus
from ..state.views import BoxExit, BoxInfo
from .attach import RemoteExec
from .views import box_exit, box_info, status_of

if TYPE_CHECKING:
    from .transport import Transport

WAIT_PAUSE_S = (0.02, 0.5)  # polling a box's end: the first pause, and the longest
UPLOAD_SPOOL = 1 << 20  # an archive beyond this is spooled to a temporary file


class RemoteBox:
    """A box behind a server.  Created by ``RemoteRuntime.create``, found
    by ``get``; the same methods as a local ``Box``."""

    def __init__(
        self,
        transport: Transport,
        view: dict[str, Any],
        *,
        owned: bool,
        forget: Callable[[RemoteBox], None],
    ) -> None:
        self._t = transport
        self.id: str = view["box_id"]
        self.name: str | None = view.get("name")
        self._owned = owned
        self.detached = not owned
        self._forget = forget
        self._ids = {"box_id": self.id}
        self._closed = False

    def __repr__(self) -> str:
        return f"<RemoteBox {self.id}{' ' + self.name if self.name else ''}>"

    def __enter__(self) -> RemoteBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"box {self.id} was closed", StateReason.BOX_CLOSED)

    async def _view(self) -> dict[str, Any]:
        view: dict[str, Any] = (await self._t.request("GET", BOX.format_map(self._ids))).json()
        return view

    # ---- state and life -----------------------------------------------------------

    def info(self) -> BoxInfo:
        return box_info(self._t.call(self._view()), detached=self.detached)

    @property
    def status(self) -> BoxStatus:
        return self.info().status

    def start(self) -> None:
        """Start it (a no-op when it runs; the server waits out a start or stop)."""
        self._check_open()
        self._t.call(self._t.request("POST", START.format_map(self._ids), idempotent=True))

    def stop(self, timeout: float | None = None) -> None:
        """As ``Box.stop``: ``timeout`` is the contract's ``timeout_seconds``."""
        self._check_open()
        seconds = check_seconds(timeout, "timeout")
        body = {"timeout_seconds": seconds} if seconds is not None else None
        path = STOP.format_map(self._ids)
        self._t.call(self._t.request("POST", path, json=body, idempotent=True))

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_future(self) -> Future[BoxExit]:
        """``wait`` as a Future (cancel it to stop waiting)."""
        return self._t.submit(self._wait())

    async def _wait(self) -> BoxExit:
        """Polls: the contract has no way to wait for a box."""
        pause = WAIT_PAUSE_S[0]
        while True:
            view = await self._view()
            status = status_of(view)
            if status == BoxStatus.CONFIGURED:
                raise InvalidStateError(f"box {self.id} is configured", StateReason.NOT_RUNNING)
            if status not in LIVE:
                return box_exit(view)
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_PAUSE_S[1])

    def wait(self, timeout: float | None = None) -> BoxExit:
        future = self.wait_future()
        try:
            return waited(future, timeout, f"box {self.id} still runs")
        finally:
            future.cancel()

    def logs(self) -> BoxLogs:
        stdout, stderr = (
            self._t.call(self._t.request("GET", LOGS.format_map(self._ids | {"stream": s}))).content
            for s in ("stdout", "stderr")
        )
        return BoxLogs(stdout, stderr)

    # ---- letting go -----------------------------------------------------------------

    def remove(self, *, force: bool = False) -> None:
        """Delete it on the server; a running box needs ``force=True``."""
        self._check_open()
        params = {"force": "true" if force else "false"}
        self._t.call(
            self._t.request("DELETE", BOX.format_map(self._ids), params=params, idempotent=True)
        )
        self._let_go()

    def close(self) -> None:
        """Let go; a box this client owns (no ``detach=True``) is stopped and
        removed, as a local one would be."""
        if self._closed:
            return
        if self._owned:
            with contextlib.suppress(NotFoundError, RuntimeClosedError):
                self.stop()
                self.remove(force=True)
        self._let_go()

    def _let_go(self) -> None:
        self._closed = True
        self._forget(self)

    # ---- executions --------------------------------------------------------------------

    @with_exec_spec
    def exec(self, spec: ExecSpec) -> Execution:
        """As ``Box.exec``: the server starts the box first if need be."""
        return self._exec(spec)

    @with_exec_spec
    def exec_now(self, spec: ExecSpec) -> Execution:
        """As ``Box.exec_now``: no implicit start."""
        if self.status != BoxStatus.RUNNING:
            raise InvalidStateError(f"box {self.id} is not running", StateReason.NOT_RUNNING)
        return self._exec(spec)

    def _exec(self, spec: ExecSpec) -> Execution:
        self._check_open()
        body = exec_body(spec)
        window = check_window(spec.output_window)
        reply = self._t.call(
            self._t.request("POST", EXEC.format_map(self._ids), json=body, idempotent=True)
        )
        exec_id = reply.json()["execution_id"]
        sink, channel = self._sink(
            exec_id, window, spec.on_stdout, spec.on_stderr, ordered=spec.ordered_output
        )
        sink.stdin = bool(spec.stdin or spec.tty)
        channel.start(sink, (0, 0), no_stdin=not sink.stdin)
        return Execution(sink)

    def _sink(
        self,
        exec_id: str,
        window: int,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        *,
        ordered: bool = False,
    ) -> tuple[_ExecSink, RemoteExec]:
        """The sink of execution ``exec_id`` and the channel that feeds it."""
        try:
            wire_id = parse_exec_id(exec_id)
        except ValueError:
            raise ProtocolError(f"the server's execution id {exec_id!r} is none of ours") from None
        channel = RemoteExec(self._t, self.id, exec_id, window)
        sink = _ExecSink(channel, on_stdout, on_stderr, ordered)
        sink.handle.wire_id = wire_id
        sink.handle.attach(wire_id)
        return sink, channel

    def execution_future(
        self,
        exec_id: str,
        *,
        cursor: tuple[int, int] = (0, 0),
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        output_window: int | None = None,
    ) -> tuple[Execution, Future[None]]:
        """Attach (see ``execution``); the Future settles with the server's answer."""
        self._check_open()
        parse_exec_id(exec_id)
        check_cursor(cursor)
        check_callback(on_stdout, "on_stdout")
        check_callback(on_stderr, "on_stderr")
        sink, channel = self._sink(exec_id, check_window(output_window), on_stdout, on_stderr)
        channel.start(sink, cursor, no_stdin=False)
        return Execution(sink), channel.ready

    def execution(
        self,
        exec_id: str,
        *,
        cursor: tuple[int, int] = (0, 0),
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        output_window: int | None = None,
    ) -> Execution:
        """As ``Box.execution``, for an execution this server started (it
        keeps the output a client has not had, see docs/api.md)."""
        execution, answered = self.execution_future(
            exec_id,
            cursor=cursor,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            output_window=output_window,
        )
        answered.result()
        return execution

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Env | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        input: bytes | None = None,
        user: str | None = None,
    ) -> ExecResult:
        spec = run_spec(argv, env=env, cwd=cwd, timeout=timeout, input=input, user=user)
        return run_to_end(self._exec(spec), input)

    # ---- files -------------------------------------------------------------------------

    def copy_in(self, src: str | os.PathLike[str], dest: str) -> None:
        """As ``Box.copy_in``, through the contract's file upload."""
        self._check_open()
        source = copy_source(src)
        with tempfile.SpooledTemporaryFile(UPLOAD_SPOOL) as spool:
            write_archive(source, spool)
            self._running(lambda: self._t.call(self._upload(spool, dest)))

    async def _upload(self, spool: IO[bytes], dest: str) -> None:
        spool.seek(0)
        path = FILES.format_map(self._ids)
        await self._t.request("PUT", path, params={"path": dest}, content=_chunks_of(spool))

    def copy_out(self, src: str, dest: str | os.PathLike[str]) -> None:
        """As ``Box.copy_out``, through the contract's file download."""
        self._check_open()
        target = Path(dest)
        target.mkdir(parents=True, exist_ok=True)
        self._running(lambda: self._download(src, target))

    def _download(self, src: str, target: Path) -> None:
        with self._t.downloading(FILES.format_map(self._ids), {"path": src}) as chunks:
            malformed = extract_archive(ChunkReader(chunks), target)
        if malformed is not None:
            raise ProtocolError(f"the server sent a malformed archive: {malformed}")

    def _running(self, transfer: Callable[[], None]) -> None:
        """A transfer needs the box running: start it, as an exec would."""
        try:
            transfer()
        except InvalidStateError as exc:
            if exc.reason != StateReason.NOT_RUNNING:
                raise
            self.start()
            transfer()


def exec_body(spec: ExecSpec) -> dict[str, Any]:
    """The contract's ``ExecRequest`` (and our extensions) for ``spec``."""
    argv = check_argv(spec.argv)
    check_callback(spec.on_stdout, "on_stdout")
    check_callback(spec.on_stderr, "on_stderr")
    body: dict[str, Any] = {"command": argv[0], "args": argv[1:], "tty": bool(spec.tty)}
    if spec.env is not None:
        body["env"] = env_dict(spec.env)
    if (cwd := check_cwd(spec.cwd)) is not None:
        body["working_dir"] = cwd
    if (timeout := check_seconds(spec.timeout, "timeout")) is not None:
        body["timeout_seconds"] = timeout
    if spec.user is not None:
        body["boxlite_user"] = check_user_name(spec.user)
    if spec.tty:
        check_size(spec.rows, spec.cols)
        body |= {"boxlite_rows": spec.rows, "boxlite_cols": spec.cols}
    return body


async def _chunks_of(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := file.read(UPLOAD_SPOOL):
        yield chunk
