"""Boxes: an isolated environment started from a root filesystem, and its
life (start, stop, wait, remove) kept in the runtime home's store."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core.core import then
from ._native import lib
from .agent import files
from .errors import (
    BoxliteError,
    DiskFullError,
    InvalidStateError,
    NotFoundError,
    RuntimeClosedError,
    StateReason,
)
from .execution import (
    STDERR,
    STDOUT,
    ExecResult,
    Execution,
    _ExecSink,
    run_spec,
    run_to_end,
    waited,
)
from .spec import (
    Env,
    ExecSpec,
    OutputCallback,
    check_cursor,
    check_seconds,
    check_window,
    native_config,
    parse_exec_id,
    with_exec_spec,
)
from .state import boxdir
from .state.boxdir import STDERR_LOG, STDOUT_LOG
from .state.cgroups import oom_watch
from .state.logs import read_log
from .state.reconcile import reconcile, settle
from .state.shim import KILL_NOW, shim_pid, signal_shim
from .state.status import LIVE, BoxStatus
from .state.store import DELETE, BoxRecord, Change, Proc, start_ticks
from .state.views import BoxExit, BoxInfo

if TYPE_CHECKING:
    from ._core.core import NativeRuntime
    from .state.monitor import Monitor
    from .state.store import Store

BOX_NEW = lib.BOXLITE_BOX_NEW
BOX_RUNNING = lib.BOXLITE_BOX_RUNNING
BOX_STOPPING = lib.BOXLITE_BOX_STOPPING


@dataclass(frozen=True)
class BoxServices:
    """What every box of one runtime shares."""

    native: NativeRuntime
    store: Store
    monitor: Monitor
    forget: Callable[[Box], None]  # the runtime stops tracking a closed box


@dataclass(frozen=True)
class BoxLogs:
    """What a box's main command wrote, each stream as it wrote it."""

    stdout: bytes
    stderr: bytes


class Box:
    """An isolated Linux environment.  Created by ``Runtime.create``, found
    by ``Runtime.get``."""

    def __init__(self, services: BoxServices, record: BoxRecord, directory: Path) -> None:
        self._svc = services
        self.id = record.id
        self.name = record.name
        self.directory = directory
        self._config = record.config
        self.detached = record.detached
        self._handle: int | None = None
        self._lock = threading.RLock()
        self._starting: Future[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Box {self.id}{' ' + self.name if self.name else ''}>"

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state ----------------------------------------------------------

    def info(self) -> BoxInfo:
        """The box's record, brought in line with reality first."""
        return BoxInfo.of(self._reconcile())

    @property
    def status(self) -> BoxStatus:
        return self.info().status

    @property
    def shim_pid(self) -> int:
        """The pid of the running box's supervisor process (boxlite-shim)."""
        pid = shim_pid(self.directory)
        if pid is None:
            raise InvalidStateError(f"box {self.id} is not running", StateReason.NOT_RUNNING)
        return pid

    def _reconcile(self) -> BoxRecord:
        return reconcile(self._svc.store, self.id, self.directory)

    def _native_live(self) -> bool:
        if self._handle is None:
            return False
        return self._svc.native.box_state(self._handle) in (BOX_RUNNING, BOX_STOPPING)

    def _take(self, record: BoxRecord) -> None:
        """A warm pool's box becomes the box of a create (pool.py): its
        record now holds that create's name and per-exec settings."""
        with self._lock:
            self.name = record.name
            self._config = record.config

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"box {self.id} was closed", StateReason.BOX_CLOSED)

    # ---- starting -------------------------------------------------------

    def start_future(self) -> Future[None]:
        """Start the box (a no-op when it runs); every caller shares one start."""
        with self._lock:
            self._check_open()
            if self._starting is not None and not self._starting.done():
                return self._starting
            if self._handle is not None and self._native_live():
                if self._svc.store.get(self.id).status in LIVE:
                    return _done()
                # Its run is over as the record says (the monitor saw the
                # shim end), but our handle has not heard yet: starting now
                # would take the old run for live.  A stop of an ended run
                # completes once its shim is reaped; start after that.
                return then(self._svc.native.box_stop(self._handle), self.start_future)
            me = Proc.me()
            record = self._svc.store.change(self.id, lambda r: self._claim_start(r, me))
            if record.actor != me:  # it runs already: this is a connection
                self._connect(record)
                return _done()
            try:
                started = self._svc.native.box_start(self._native_handle())
            except BoxliteError as exc:
                self._record_failed(exc)  # not left "starting" for as long as we live
                raise
            result: Future[None] = Future()
            self._starting = result
        started.add_done_callback(lambda f: self._later(lambda: self._started(f, result), result))
        return result

    def _claim_start(self, record: BoxRecord, me: Proc) -> Change:
        change, status = self._settled(record)
        if status == BoxStatus.RUNNING:
            return change
        if status in (BoxStatus.STARTING, BoxStatus.STOPPING):
            raise _state_error(self.id, status)
        return change | {
            "status": BoxStatus.STARTING,
            "actor": me,
            "owner": None if self.detached else me,
            "reason": None,
            "exit_code": None,
            "exit_signal": None,
            "finished": None,
        }

    def _settled(self, record: BoxRecord) -> tuple[Change, BoxStatus]:
        """What settling changes, and the status the record has then."""
        if record.removed:
            raise NotFoundError(f"box {self.id} was removed")
        change = settle(record, self.directory) or {}
        return change, BoxStatus(change.get("status", record.status))

    def _native_handle(self) -> int:
        """A handle that can start: ours if it never ran, else a new one. A
        handle whose run ended may still hear of that run (its reactor may
        not have let go of the old shim yet): a new run gets a new handle."""
        if self._handle is not None and self._svc.native.box_state(self._handle) == BOX_NEW:
            return self._handle
        self._release_handle()
        config = native_config(self.directory, self._config, self.detached)
        self._handle = self._svc.native.box_new(
            config, owner_pid=0 if self.detached else os.getpid()
        )
        return self._handle

    def _started(self, started: Future[None], result: Future[None]) -> None:
        """On the monitor thread: record how the start went, then tell the caller."""
        exc = started.exception()
        try:
            if exc is None:
                self._record_running()
            else:
                self._record_failed(exc)
        except BoxliteError as error:  # the runtime closed meanwhile
            exc = exc or error
        if exc is None:
            result.set_result(None)
        else:
            result.set_exception(exc)

    def _record_failed(self, exc: BaseException) -> None:
        fields = {"status": BoxStatus.FAILED, "reason": str(exc), "actor": None}
        with contextlib.suppress(RuntimeClosedError):
            changed = lambda r: fields | {"finished": time.time()}  # noqa: E731
            self._svc.store.change(self.id, changed, frees=True)

    def _record_running(self) -> None:
        try:
            pid: int | None = self._svc.native.box_pid(self._live_handle())
        except InvalidStateError:
            pid = None  # a main command that ended at once has ended the box already
        shim = Proc.of(pid) if pid is not None else None
        fields: Change = {"status": BoxStatus.RUNNING, "shim": shim, "actor": None}
        fields["started"] = time.time()
        self._svc.store.change(self.id, lambda r: fields)
        self._watch(pid)

    def _later(self, job: Callable[[], None], result: Future[Any]) -> None:
        """Run job on the monitor thread (store writes stay off the drain thread)."""
        try:
            self._svc.monitor.submit(job)
        except RuntimeClosedError as exc:
            result.set_exception(exc)

    def _watch(self, pid: int | None) -> None:
        self._svc.monitor.watch(self.id, pid, lambda: shim_pid(self.directory) == pid)

    def _connect(self, record: BoxRecord) -> None:
        """Take a handle on the run another process started (or we lost)."""
        pid = shim_pid(self.directory)
        if pid is None:
            raise NotFoundError(f"box {self.id} is no longer running")
        self._release_handle()
        config = native_config(self.directory, record.config, record.detached)
        self._handle = self._svc.native.box_connect(config, pid, start_ticks(pid))
        if not self._svc.monitor.watching(self.id):
            self._watch(pid)

    def _live_handle(self) -> int:
        if self._handle is None:
            raise InvalidStateError(f"box {self.id} is not running", StateReason.NOT_RUNNING)
        return self._handle

    def _ensure_running(self, *, start: bool = True) -> None:
        """For an exec: start a configured box, connect to a running one
        (waiting out another process's start)."""
        starting = self._starting
        if starting is not None:
            starting.result()
        if not self._native_live():
            _after_transients(lambda: self._join_run(start))

    def _join_run(self, start: bool) -> None:
        record = self._reconcile()
        if record.status == BoxStatus.CONFIGURED and start:
            self.start()
        elif record.status == BoxStatus.RUNNING:
            with self._lock:
                self._check_open()
                if not self._native_live():
                    self._connect(record)
        else:  # starting or stopping: waited out by the caller
            raise _state_error(self.id, BoxStatus(record.status))

    # ---- stopping and waiting -------------------------------------------

    def stop_future(self) -> Future[None]:
        """Stop (see ``stop``); settles once the run is over and recorded."""
        with self._lock:
            self._check_open()
            starting = self._starting
        if starting is not None and not starting.done():
            # The native core refuses to stop a box that is still starting.
            return then(starting, self.stop_future)
        ended = self._svc.monitor.ended(self.id)
        try:
            record = self._svc.store.change(self.id, self._claim_stop, frees=True)
        except BaseException:
            self._svc.monitor.discard(self.id, ended)
            raise
        if record.status != BoxStatus.STOPPING:
            self._svc.monitor.discard(self.id, ended)
            return _done()
        stopping = self._signal_shim(signal.SIGTERM)
        if stopping is None:
            return then(ended, _done)
        # Over when the monitor has recorded the end and our handle knows it
        # too (its reactor may hear of the shim's exit later than the
        # monitor): a start or exec right after must not find it still live.
        return then(ended, lambda: then(stopping, _done))

    def _claim_stop(self, record: BoxRecord) -> Change:
        change, status = self._settled(record)
        if status == BoxStatus.STARTING:
            raise _state_error(self.id, BoxStatus.STARTING)
        if status == BoxStatus.RUNNING:
            return change | {"status": BoxStatus.STOPPING}
        return change

    def _signal_shim(self, sig: int) -> Future[None] | None:
        """Through our handle when we have it (the native core reaps its
        children; its stop's Future is returned), else through a pidfd on
        the shim.  Watches it either way."""
        stopping = None
        if sig == signal.SIGTERM and self._native_live():
            stopping = self._svc.native.box_stop(self._handle)  # type: ignore[arg-type]
            if self._svc.monitor.watching(self.id):
                return stopping
        pid = signal_shim(self.directory, sig)
        if pid is None or not self._svc.monitor.watching(self.id):
            self._watch(pid)  # None: gone already, reported at once
        return stopping

    def wait_future(self) -> Future[BoxExit]:
        """``wait`` as a Future."""
        ended = self._svc.monitor.ended(self.id)
        record = self._reconcile()
        if record.status in LIVE:
            if not self._svc.monitor.watching(self.id):
                self._watch(shim_pid(self.directory))
            return ended
        self._svc.monitor.discard(self.id, ended)
        if record.status == BoxStatus.CONFIGURED:
            raise _state_error(self.id, BoxStatus.CONFIGURED)
        done: Future[BoxExit] = Future()
        done.set_result(BoxExit.of(record))
        return done

    def start(self) -> None:
        """Start the box (a no-op when it is running).  A stopped, exited or
        failed box starts again with its writable layer as it was.  While
        another process starts or stops it, wait for that first."""
        _after_transients(lambda: self.start_future().result())

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every process, SIGKILL after the grace period (or after
        ``timeout`` seconds, when that is sooner); return once none is left
        and the box's record says so (a no-op when not running)."""
        seconds = check_seconds(timeout, "timeout")
        stopping = self.stop_future()
        if seconds is not None:
            try:
                stopping.result(seconds)
                return
            except concurrent.futures.TimeoutError:
                signal_shim(self.directory, KILL_NOW)  # the rest of the grace is not waited
        stopping.result()

    def restart(self) -> None:
        """Stop, then start again: the writable layer stays."""
        self.stop()
        self.start()

    def wait(self, timeout: float | None = None) -> BoxExit:
        """Wait until the box's run is over (its main command ended, or it
        was stopped) and say how; at once for a run that is already over,
        also one that ended while nobody watched, from any process."""
        return waited(self.wait_future(), timeout, f"box {self.id} still runs")

    def logs(self) -> BoxLogs:
        """What the main command wrote so far, over every run: the newest
        ``log_limit`` bytes of each stream at most (see ``create``)."""
        out, err = (read_log(self.directory / name) for name in (STDOUT_LOG, STDERR_LOG))
        return BoxLogs(out, err)

    # ---- letting go -----------------------------------------------------

    def remove(self, *, force: bool = False) -> None:
        """Delete the box: its record and directory.  A running box needs
        ``force=True`` (it is killed, not stopped)."""
        with self._lock:
            self._check_open()
            starting = self._starting
        if starting is not None:
            starting.exception()
        ended = self._svc.monitor.ended(self.id)
        try:
            record = self._claim_removal(force)
        except BaseException:
            self._svc.monitor.discard(self.id, ended)
            raise
        if record.status in LIVE:
            self._signal_shim(KILL_NOW)
            ended.result()
        else:
            self._svc.monitor.discard(self.id, ended)
        boxdir.discard(self.directory)
        self._svc.store.replenish()
        self._let_go()

    def _claim_removal(self, force: bool) -> BoxRecord:
        """Mark the record removed.  On a disk so full that not even the
        reserve made room (a box still filling it), a forced removal kills
        the box and deletes its directory first, which frees the room."""
        claim = lambda r: self._claim_remove(r, force)  # noqa: E731
        try:
            return self._svc.store.change(self.id, claim, frees=True)
        except DiskFullError:
            if not force:
                raise
        signal_shim(self.directory, KILL_NOW, wait=True)
        boxdir.discard(self.directory)
        return self._svc.store.change(self.id, claim, frees=True)

    def _claim_remove(self, record: BoxRecord, force: bool) -> Change:
        change, status = self._settled(record)
        if status in LIVE and not force:
            raise InvalidStateError(
                f"box {self.id} is {status}: stop it first, or remove with force",
                StateReason.BOX_RUNNING,
            )
        return change | DELETE

    def close(self) -> None:
        """Let go of the box.  A box this program created or started
        without ``detach=True`` goes with it: killed if it runs, its record
        and directory deleted.  Any other box is only let go of: it runs on.
        """
        with self._lock:
            if self._closed:
                return
            starting = self._starting
        if starting is not None:
            starting.exception()  # let a start finish: there is then something to stop
        owned = self._owned()
        if owned:
            with contextlib.suppress(RuntimeClosedError, InvalidStateError, NotFoundError):
                self.stop()
        self._let_go()
        if owned:
            with contextlib.suppress(RuntimeClosedError, NotFoundError):
                self._svc.store.change(self.id, lambda r: DELETE, frees=True)
            boxdir.discard(self.directory)

    def _owned(self) -> bool:
        if self.detached:
            return False
        try:
            owner = self._svc.store.get(self.id).owner
        except (RuntimeClosedError, NotFoundError):
            return False
        return owner is not None and owner.pid == os.getpid() and owner == Proc.me()

    def _let_go(self) -> None:
        with self._lock:
            self._closed = True
        self._release_handle()
        self._svc.forget(self)

    def _release_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(RuntimeClosedError):
                self._svc.native.box_free(handle)

    # ---- executions -------------------------------------------------------

    @with_exec_spec
    def exec_now(self, spec: ExecSpec) -> Execution:
        """Start an execution in the running box (no implicit start)."""
        return self._start_exec(spec)

    def _start_exec(self, spec: ExecSpec) -> Execution:
        """The one body of ``exec``, ``exec_now``, ``run`` and aio's ``exec``."""
        native = spec.native(self._config)
        sink = _ExecSink(self._svc.native, spec.on_stdout, spec.on_stderr, spec.ordered_output)
        sink.stdin = bool(spec.stdin or spec.tty)  # a terminal is always input too
        if (self._config.get("limits") or {}).get("memory_limit"):
            sink.oom_killed = oom_watch(self.directory)
        handle = self._svc.native.exec_start(
            self._live_handle(),
            native.argv,
            native.env,
            native.cwd,
            sink,
            stdin=spec.stdin,
            timeout_ms=native.timeout_ms,
            tty=native.tty,
            window=native.window,
        )
        sink.handle.wire_id = self._svc.native.exec_id(handle)
        sink.handle.attach(handle)
        return Execution(sink)

    def execution_future(
        self,
        exec_id: str,
        *,
        cursor: tuple[int, int] = (0, 0),
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        output_window: int | None = None,
    ) -> tuple[Execution, Future[None]]:
        """Attach (see ``execution``); the Future settles with the box's answer."""
        wire_id = parse_exec_id(exec_id)
        check_cursor(cursor)
        window = check_window(output_window)
        self._ensure_running(start=False)
        sink = _ExecSink(self._svc.native, on_stdout, on_stderr)
        handle, answered = self._svc.native.exec_attach(
            self._live_handle(), wire_id, cursor, sink, window=window
        )
        ready: Future[None] = Future()

        def learn_start(_: Future[None]) -> None:
            # Before anyone waiting for the answer sees it: its cursor is right.
            exc = answered.exception()
            if isinstance(exc, InvalidStateError):
                exc.reason = StateReason.EXEC_BUSY  # the box's only refusal of that kind
            if exc is None:
                try:
                    info = self._svc.native.exec_attach_info(handle)
                except BoxliteError as error:  # never leave the waiter hanging
                    ready.set_exception(error)
                    return
                sink.start = {STDOUT: info.stdout_start, STDERR: info.stderr_start}
                ready.set_result(None)
            else:
                ready.set_exception(exc)

        # Learned before the handle is attached to the sink: an execution that
        # ended long ago may have its Exit already, and attaching then frees
        # the handle.  Until then it stays valid, and a later answer is
        # drained before that Exit.
        answered.add_done_callback(learn_start)
        sink.handle.wire_id = wire_id
        sink.handle.attach(handle)
        return Execution(sink), ready

    def execution(
        self,
        exec_id: str,
        *,
        cursor: tuple[int, int] = (0, 0),
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        output_window: int | None = None,
    ) -> Execution:
        """Attach to execution ``exec_id`` of this running box (``Execution.id``,
        from this or another process, before or after a restart).

        Its output arrives from ``cursor`` (bytes of stdout and stderr already
        seen; ``Execution.cursor`` of an earlier handle) - the box keeps the
        last 1 MiB of each stream, ``replay_start`` says where it began -
        then live; stdin, signals and ``wait`` work as for ``exec``.  An
        execution that ended in the last ten minutes still gives its output
        and result.  ``NotFoundError`` for an unknown or forgotten id;
        ``InvalidStateError`` while another handle holds it.
        """
        execution, answered = self.execution_future(
            exec_id,
            cursor=cursor,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            output_window=output_window,
        )
        answered.result()
        return execution

    @with_exec_spec
    def exec(self, spec: ExecSpec) -> Execution:
        """Run ``argv`` in the box, starting the box first if needed.

        ``stdin=True`` gives the process a stdin pipe for ``write_stdin`` and
        ``close_stdin``; otherwise its stdin is ``/dev/null``.
        ``ordered_output=True`` delivers stdout and stderr together through
        ``Execution.output``, numbered in one sequence.  After ``timeout``
        seconds its whole process tree gets SIGTERM, then SIGKILL 2 s later,
        and the outcome is ``timed_out`` (exit code 124).  ``tty=True`` runs
        it on a ``rows`` x ``cols`` pseudo-terminal: its output arrives as
        stdout, ``write_stdin`` types into it, ``resize`` changes its size.
        ``output_window`` bounds the bytes of each stream held for a reader
        (default 2 MiB): a stream nobody reads stops its writers after that
        much, and only them; ``wait()`` collects instead.  ``user`` runs it
        as another user of the box than the box's own (see ``create``).
        """
        return self._exec(spec)

    def _exec(self, spec: ExecSpec) -> Execution:
        """``exec``'s body (also aio's, in a worker thread: it may start the box)."""
        self._ensure_running()
        return self._start_exec(spec)

    # ---- files ---------------------------------------------------------------

    def copy_in(self, src: str | os.PathLike[str], dest: str) -> None:
        """Copy a host file or directory into the box directory ``dest``
        (created if missing) as ``dest/<name>``, keeping modes and mtimes."""
        files.copy_in(self, src, dest)

    def copy_out(self, src: str, dest: str | os.PathLike[str]) -> None:
        """Copy a file or directory of the box into the host directory
        ``dest`` (created if missing) as ``dest/<name>``, keeping modes and
        mtimes.  ``UnsafePathError`` for an entry that would land outside."""
        files.copy_out(self, src, dest)

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
        """Run ``argv`` to completion and collect its output, like ``subprocess.run``.

        ``input`` is fed to its stdin, then EOF; a process that exits before
        reading it all is not an error (as with ``subprocess.run``).  A
        ``timeout`` ends the process tree (see ``exec``) instead of raising.
        """
        spec = run_spec(argv, env=env, cwd=cwd, timeout=timeout, input=input, user=user)
        return run_to_end(self._exec(spec), input)


def _done() -> Future[Any]:
    done: Future[Any] = Future()
    done.set_result(None)
    return done


_STATE_REASONS = {
    BoxStatus.CONFIGURED: StateReason.NOT_RUNNING,
    BoxStatus.STOPPED: StateReason.NOT_RUNNING,
    BoxStatus.EXITED: StateReason.BOX_EXITED,
    BoxStatus.FAILED: StateReason.BOX_FAILED,
    BoxStatus.LOST: StateReason.NOT_RUNNING,
    BoxStatus.STARTING: StateReason.BOX_STARTING,
    BoxStatus.STOPPING: StateReason.BOX_STOPPING,
}


def _state_error(box_id: str, status: BoxStatus) -> InvalidStateError:
    return InvalidStateError(f"box {box_id} is {status}", _STATE_REASONS[status])


TRANSIENT = (StateReason.BOX_STARTING, StateReason.BOX_STOPPING)
TRANSIENT_WAIT_S = 60.0  # a start under emulation takes seconds; a stop, its grace


def _after_transients(step: Callable[[], None]) -> None:
    """Run step; while another process is starting or stopping the box, wait
    (polling the store) and try again."""
    deadline = time.monotonic() + TRANSIENT_WAIT_S
    pause = 0.002
    while True:
        try:
            return step()
        except InvalidStateError as exc:
            if exc.reason not in TRANSIENT or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
