"""Boxes: an isolated environment started from a root filesystem."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from . import file_copy
from ._native import lib
from .core import then
from .errors import ExecClosedError, InvalidArgumentError, InvalidStateError, RuntimeClosedError
from .execution import (
    STDERR,
    STDOUT,
    ExecResult,
    Execution,
    OutputCallback,
    _ExecSink,
    check_size,
)

if TYPE_CHECKING:
    from .core import NativeRuntime

BOX_RUNNING = lib.BOXLITE_BOX_RUNNING
BOX_STOPPING = lib.BOXLITE_BOX_STOPPING
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def env_list(*layers: Mapping[str, str] | None) -> list[str]:
    """Later layers override earlier ones; PATH defaults to the usual one."""
    merged = {"PATH": DEFAULT_PATH}
    for layer in layers:
        for key, value in (layer or {}).items():
            valid = isinstance(key, str) and isinstance(value, str)
            if not valid or not key or "=" in key or "\0" in key or "\0" in value:
                raise InvalidArgumentError(f"invalid environment variable {key!r}")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def timeout_millis(timeout: float | None) -> int:
    """Seconds as the native milliseconds (0: none)."""
    if timeout is None:
        return 0
    ms = math.ceil(timeout * 1000)
    if not 1 <= ms <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"timeout must be between 1 ms and 49 days, not {timeout!r}")
    return ms


def check_window(window: int | None) -> int:
    """An output window in bytes as the native value (0: the default)."""
    if window is None:
        return 0
    if not 1 <= window < 0xFFFFFFFF:
        raise InvalidArgumentError(f"output_window must be 1 byte to 4 GiB, not {window!r}")
    return window


def check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes):
        raise InvalidArgumentError("argv must be a sequence of strings, not a string")
    args = list(argv)
    if not args or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise InvalidArgumentError("argv must be a non-empty sequence of strings without NUL")
    return args


class Box:
    """An isolated Linux environment.  Created by ``Runtime.create``."""

    def __init__(
        self,
        native: NativeRuntime,
        handle: int,
        *,
        box_id: str,
        name: str | None,
        directory: Path,
        env: Mapping[str, str] | None,
        workdir: str | None,
        kept: bool,
        on_close: Callable[[Box], None],
        on_started: Callable[[Box], None] | None = None,
    ) -> None:
        self._native = native
        self._on_close = on_close
        self._on_started = on_started
        self._handle = handle
        self.kept = kept  # detached, or found running: closing lets go of it
        self.id = box_id
        self.name = name
        self.directory = directory
        self._env = dict(env or {})
        self._workdir = workdir
        self._lock = threading.Lock()
        self._started: Future[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Box {self.id}{' ' + self.name if self.name else ''}>"

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lifecycle (futures shared by the sync and asyncio surfaces) ----

    def start_future(self) -> Future[None]:
        """Start the box once; every caller shares the same start."""
        with self._lock:
            if self._closed:
                raise InvalidStateError(f"box {self.id} was closed")
            started = self._started
            if started is None or (started.done() and not self._still_running(started)):
                started = self._started = self._native.box_start(self._handle)
                if self._on_started is not None:
                    on_started = self._on_started
                    started.add_done_callback(lambda f: f.exception() or on_started(self))
        return started

    @property
    def shim_pid(self) -> int:
        """The pid of the running box's supervisor process (boxlite-shim)."""
        return self._native.box_pid(self._handle)

    def _mark_running(self) -> None:
        """Found running (connected to): there is nothing to start."""
        running: Future[None] = Future()
        running.set_result(None)
        with self._lock:
            self._started = running

    def _still_running(self, started: Future[None]) -> bool:
        """Did that start succeed, and has the box not ended on its own since?"""
        if started.exception() is not None:
            return False
        return self._native.box_state(self._handle) in (BOX_RUNNING, BOX_STOPPING)

    def stop_future(self) -> Future[None]:
        with self._lock:
            if self._closed:
                raise InvalidStateError(f"box {self.id} was closed")
            starting, self._started = self._started, None
        return self._stop_after(starting)

    def _stop_after(self, starting: Future[None] | None) -> Future[None]:
        if starting is None:
            return self._native.box_stop(self._handle)
        # The native core refuses to stop a box that is still starting.
        return then(starting, lambda: self._native.box_stop(self._handle))

    def start(self) -> None:
        """Start the box (a no-op when it is running)."""
        self.start_future().result()

    def stop(self) -> None:
        """SIGTERM every process, SIGKILL after the grace period; wait until none is left."""
        self.stop_future().result()

    def close(self) -> None:
        """Kill the box if it runs, release it and delete its directory.

        A kept box (``detach=True``, or found running by ``Runtime.get``) is
        only let go of: it runs on, with its executions.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            starting, self._started = self._started, None
        self._on_close(self)
        try:
            if starting is not None and self.kept:
                starting.exception()  # let a start finish, so there is something to keep
            elif not self.kept:
                self._stop_after(starting).result()
            self._native.box_free(self._handle)
        except RuntimeClosedError:
            pass  # closing the runtime killed (or let go of) and released it
        if not self.kept:
            remove_tree(self.directory)

    # ---- executions -------------------------------------------------------

    def exec_now(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool = False,
        ordered_output: bool = False,
        timeout: float | None = None,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        output_window: int | None = None,
    ) -> Execution:
        """Start an execution in the running box (no implicit start)."""
        args = check_argv(argv)
        environment = env_list(self._env, env)
        timeout_ms = timeout_millis(timeout)
        if tty:
            check_size(rows, cols)
        window = check_window(output_window)
        sink = _ExecSink(self._native, on_stdout, on_stderr, ordered_output)
        handle = self._native.exec_start(
            self._handle,
            args,
            environment,
            cwd or self._workdir,
            sink,
            stdin=stdin,
            timeout_ms=timeout_ms,
            tty=(rows, cols) if tty else None,
            window=window,
        )
        sink.handle.wire_id = self._native.exec_id(handle)
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
        if len(cursor) != 2 or not all(isinstance(c, int) and c >= 0 for c in cursor):
            raise InvalidArgumentError(f"a cursor is two offsets >= 0, not {cursor!r}")
        window = check_window(output_window)
        sink = _ExecSink(self._native, on_stdout, on_stderr)
        handle, answered = self._native.exec_attach(
            self._handle, wire_id, cursor, sink, window=window
        )
        sink.handle.wire_id = wire_id
        sink.handle.attach(handle)
        execution = Execution(sink)
        ready: Future[None] = Future()

        def learn_start(_: Future[None]) -> None:
            # Before anyone waiting for the answer sees it: its cursor is right.
            exc = answered.exception()
            if exc is None:
                info = self._native.exec_attach_info(handle)
                sink.start = {STDOUT: info.stdout_start, STDERR: info.stderr_start}
                ready.set_result(None)
            else:
                ready.set_exception(exc)

        answered.add_done_callback(learn_start)
        return execution, ready

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

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool = False,
        ordered_output: bool = False,
        timeout: float | None = None,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        output_window: int | None = None,
    ) -> Execution:
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
        much, and only them; ``wait()`` collects instead.
        """
        self.start()
        return self.exec_now(
            argv,
            env=env,
            cwd=cwd,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            stdin=stdin,
            ordered_output=ordered_output,
            timeout=timeout,
            tty=tty,
            rows=rows,
            cols=cols,
            output_window=output_window,
        )

    # ---- files ---------------------------------------------------------------

    def copy_in(self, src: str | os.PathLike[str], dest: str) -> None:
        """Copy a host file or directory into the box directory ``dest``
        (created if missing) as ``dest/<name>``, keeping modes and mtimes."""
        file_copy.copy_in(self, src, dest)

    def copy_out(self, src: str, dest: str | os.PathLike[str]) -> None:
        """Copy a file or directory of the box into the host directory
        ``dest`` (created if missing) as ``dest/<name>``, keeping modes and
        mtimes.  ``UnsafePathError`` for an entry that would land outside."""
        file_copy.copy_out(self, src, dest)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        input: bytes | None = None,
    ) -> ExecResult:
        """Run ``argv`` to completion and collect its output, like ``subprocess.run``.

        ``input`` is fed to its stdin, then EOF; a process that exits before
        reading it all is not an error (as with ``subprocess.run``).  A
        ``timeout`` ends the process tree (see ``exec``) instead of raising.
        """
        execution = self.exec(argv, env=env, cwd=cwd, stdin=input is not None, timeout=timeout)
        if input is not None:
            execution._collect()  # output must not wait for the input to go in
            feed_input(execution, input)
        return execution.wait()


def parse_exec_id(exec_id: str) -> int:
    try:
        value = int(exec_id, 16) if isinstance(exec_id, str) and len(exec_id) == 16 else 0
    except ValueError:
        value = 0
    if not value:
        raise InvalidArgumentError(f"{exec_id!r} is not an execution id (16 hex digits)")
    return value


def feed_input(execution: Execution, data: bytes) -> None:
    """Write all of data then EOF, unless the process stops taking it."""
    with contextlib.suppress(ExecClosedError):
        execution.write_stdin(data)
        execution.close_stdin()


def remove_tree(path: Path) -> None:
    """Delete a box directory, including directories nobody may list: the
    mode-000 ones overlayfs leaves in work/, and any a box made in upper/."""

    def unlock(directory: Path) -> None:
        directory.chmod(0o700)
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                unlock(child)

    if path.exists():
        unlock(path)
        shutil.rmtree(path)
