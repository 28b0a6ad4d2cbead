"""Executions: one process run in a box, its streams, and its typed result."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal as signal_module
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._core.core import WRITE_MAX
from .errors import (
    BoxliteError,
    BoxliteTimeoutError,
    ErrorCode,
    ExecClosedError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidStateError,
    RuntimeClosedError,
    StateReason,
    error_for,
)
from .spec import Env, ExecSpec, OutputCallback, check_data, check_seconds, check_size, is_int
from .state.exits import NATIVE_OUTCOMES, Outcome
from .streams import ChunkStream, OutputChunk, OutputStream

if TYPE_CHECKING:
    from ._core.core import NativeRuntime  # noqa: F401 (ExecChannel's model)

STDOUT = 1
STDERR = 2
_STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
_STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
MAX_SIGNAL = 64


@dataclass(frozen=True)
class ExecResult:
    """The end of an execution.

    ``exit_code`` follows the shell: the process's code, 128+n after signal n,
    126/127 when the command could not be started.  ``stdout``/``stderr`` hold
    the output of streams that were neither iterated nor given a callback.
    """

    outcome: Outcome
    exit_code: int
    signal: int | None
    stdout: bytes
    stderr: bytes
    os_error: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.EXITED and self.exit_code == 0

    @property
    def error_message(self) -> str | None:
        """Why the command could not start (``os_error`` as text)."""
        return os.strerror(self.os_error) if self.os_error else None


class ExecChannel(Protocol):
    """What an execution asks of whoever carries it: the native core
    (``NativeRuntime``) for a local box, an attach connection
    (``remote.attach``) for a box behind a server.  ``handle`` is the
    execution's handle (``_ExecHandle.value``); the futures settle on the
    carrier's own thread."""

    def exec_ack(self, handle: int, stream: int, n: int) -> None: ...
    def exec_write(self, handle: int, data: bytes | bytearray | memoryview) -> Future[None]: ...
    def exec_close_stdin(self, handle: int) -> None: ...
    def exec_signal(self, handle: int, sig: int) -> Future[None]: ...
    def exec_resize(self, handle: int, rows: int, cols: int) -> Future[None]: ...
    def exec_detach(self, handle: int) -> None: ...
    def exec_free(self, handle: int) -> None: ...


@dataclass(frozen=True)
class _Exit:
    """What the native Exit said, before output is attached."""

    outcome: Outcome
    exit_code: int
    signal: int | None
    os_error: int | None


class _ExecHandle:
    """The native handle of one execution: acknowledgements, and its release.

    Apart from the sink so the streams can call back into it without a
    reference cycle: a finished execution's buffers go with its last user.
    """

    def __init__(self, native: ExecChannel) -> None:
        self.native = native
        self.value = 0
        self.wire_id = 0  # durable: what Box.execution() takes
        self._lock = threading.Lock()
        self._ended = False
        self._released = False
        self._unsent = {STDOUT: 0, STDERR: 0}  # taken before the handle was known
        self._owed = {STDOUT: 0, STDERR: 0}  # delivered, not yet acknowledged

    def attach(self, value: int) -> None:
        """Record the handle; free it now if the Exit came first."""
        with self._lock:
            self.value = value
            ended = self._ended
            unsent, self._unsent = self._unsent, {}
        for stream, n in unsent.items():
            self.ack(stream, n)
        if ended:
            self.release()

    def owe(self, stream: int, n: int) -> None:
        """n bytes of stream were delivered (drain thread)."""
        with self._lock:
            self._owed[stream] += n

    def forgive(self, stream: int) -> None:
        """Whoever would have read stream is gone: acknowledge all it owes."""
        with self._lock:
            n = self._owed[stream]
        self.ack(stream, n)

    def forgive_all(self) -> None:
        self.forgive(STDOUT)
        self.forgive(STDERR)

    def ack(self, stream: int, n: int) -> None:
        """A reader took n bytes of stream: let the process write more."""
        with self._lock:
            self._owed[stream] -= n
            if not self.value:  # output can arrive before exec_start returns
                self._unsent[stream] += n
                return
            if self._released or not n:
                return
        # The execution may end and be released meanwhile: nothing to reopen.
        with contextlib.suppress(InvalidHandleError, RuntimeClosedError):
            self.native.exec_ack(self.value, stream, n)

    def ack_stdout(self, data: bytes) -> None:
        self.ack(STDOUT, len(data))

    def ack_stderr(self, data: bytes) -> None:
        self.ack(STDERR, len(data))

    def ack_chunk(self, chunk: OutputChunk) -> None:
        self.ack(_STREAM_IDS[chunk.stream], len(chunk.data))

    def end(self) -> None:
        """The Exit arrived: release the handle (now, or once attached)."""
        with self._lock:
            self._ended = True
        self.release()

    def release(self) -> None:
        """Free the native handle, once, whoever asks first (Exit or close)."""
        with self._lock:
            if self._released or not self.value:
                return
            self._released = True
        # Closing the runtime releases every handle itself.
        with contextlib.suppress(RuntimeClosedError):
            self.native.exec_free(self.value)


Streams = tuple[OutputStream, OutputStream, "ChunkStream[OutputChunk] | None"]


class _Alive:
    """Referenced by an Execution and its streams; its finalizer kills a
    running execution once none of them is left."""


class _ExecSink:
    """Receives the native events of one execution on the drain thread."""

    def __init__(
        self,
        native: ExecChannel,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        ordered: bool = False,
    ) -> None:
        self.native = native
        # Whether the box's OOM killer struck since this execution began
        # (set by Box.exec for a box with a memory limit).
        self.oom_killed: Callable[[], bool] = lambda: False
        self.handle = _ExecHandle(native)
        self.exited: Future[_Exit] = Future()
        stdout = OutputStream("stdout", self.handle.ack_stdout)
        stderr = OutputStream("stderr", self.handle.ack_stderr)
        output = ChunkStream[OutputChunk]("output", self.handle.ack_chunk) if ordered else None
        # Held here until the Execution takes them, weakly after: the
        # execution lives as long as its user holds it or one of its streams.
        self._held: Streams | None = (stdout, stderr, output)
        # A stream dropped unread must not hold its writers back.
        handle = self.handle
        self._streams = {
            STDOUT: weakref.ref(stdout, lambda _: handle.forgive(STDOUT)),
            STDERR: weakref.ref(stderr, lambda _: handle.forgive(STDERR)),
        }
        self._output = None
        if output is not None:
            self._output = weakref.ref(output, lambda _: handle.forgive_all())
        self._seq = 0
        self._callbacks = {STDOUT: on_stdout, STDERR: on_stderr}
        # Whether the process got a stdin pipe (None: unknown, an attached one).
        self.stdin: bool | None = None
        # Stream offsets: where this handle's output began (later than 0
        # when attached), plus what it received since.
        self.start = {STDOUT: 0, STDERR: 0}
        self.received = {STDOUT: 0, STDERR: 0}

    @property
    def cursor(self) -> tuple[int, int]:
        """(stdout, stderr) offsets after what was delivered (``Execution.cursor``)."""
        return self.start[STDOUT] + self.received[STDOUT], self.start[STDERR] + self.received[
            STDERR
        ]

    def hand_over(self) -> Streams:
        """The streams, for the Execution that now owns them."""
        held, self._held = self._held, None
        assert held is not None, "an execution's streams are handed over once"
        return held

    def _live_streams(self) -> list[ChunkStream[Any]]:
        refs = [*self._streams.values(), self._output]
        return [s for ref in refs if ref is not None and (s := ref()) is not None]

    def _close_streams(self) -> None:
        for stream in self._live_streams():
            stream._close()

    def on_output(self, stream: int, data: bytes) -> None:
        # One numbering across both streams: the order the agent read them,
        # which is the order the process wrote them when it writes slower
        # than the agent drains its pipes.
        seq = self._seq
        self._seq += 1
        self.received[stream] += len(data)
        self.handle.owe(stream, len(data))
        callback = self._callbacks.get(stream)
        if callback is not None:
            callback(data)
            self.handle.ack(stream, len(data))
        elif self._output is not None:
            if (output := self._output()) is not None:
                output._push(OutputChunk(seq, _STREAM_NAMES[stream], data))
            else:
                self.handle.forgive(stream)
        elif (target := self._streams[stream]()) is not None:
            target._push(data)
        else:  # nobody can read it any more
            self.handle.forgive(stream)

    def collect(self) -> None:
        """Buffer the output of every stream nobody reads (see ``wait``)."""
        for stream in self._live_streams():
            stream.collect()

    def on_exit(self, outcome: int, code: int, signal: int, error: int, os_error: int) -> None:
        if error == ErrorCode.RUNTIME_CLOSED:
            self.handle.end()
            self.fail(RuntimeClosedError("the runtime closed during the execution"))
            return
        kind: Outcome = NATIVE_OUTCOMES.get(outcome, Outcome.LOST)
        if kind is Outcome.SIGNALED and signal == signal_module.SIGKILL and self.oom_killed():
            kind = Outcome.OOM
        self.finish(_Exit(kind, code, signal or None, os_error or None))

    def finish(self, end: _Exit) -> None:
        """The execution ended (once, on the carrier's thread)."""
        self._close_streams()
        self.handle.end()
        self.exited.set_result(end)

    def fail(self, error: BoxliteError) -> None:
        """Its end can never be known (the runtime closed, the server is gone)."""
        self._close_streams()
        self.exited.set_exception(error)

    def on_closed(self) -> None:
        self.fail(RuntimeClosedError())


T = TypeVar("T")


def waited(future: Future[T], timeout: object, what: str) -> T:
    """The future's result within ``timeout`` seconds (checked as
    ``check_seconds``), else ``BoxliteTimeoutError`` saying what is still
    going on."""
    try:
        return future.result(check_seconds(timeout, "timeout"))
    except concurrent.futures.TimeoutError:
        raise BoxliteTimeoutError(f"{what} after {timeout} s") from None


class Execution:
    """A process running in a box.

    Iterate ``stdout``/``stderr`` for bytes chunks as they arrive, or pass
    ``on_stdout``/``on_stderr`` to ``Box.exec`` to receive them in a callback
    (on the runtime's drain thread).  ``wait()`` returns the ``ExecResult``.
    Dropping it while it runs (no reference left to it or any of its
    streams) kills it, as ``close()`` does.
    """

    def __init__(self, sink: _ExecSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._result: ExecResult | None = None
        self._stdout, self._stderr, self._output = sink.hand_over()
        # Dropped by its user (this object and every stream of it gone):
        # a running execution is killed, and reports force_closed.
        self._alive = _Alive()
        finalizer = weakref.finalize(self._alive, sink.handle.release)
        finalizer.atexit = False  # Runtime.close ends whatever is left
        for stream in (self._stdout, self._stderr, self._output):
            if stream is not None:
                stream._keepalive = self._alive

    def __repr__(self) -> str:
        return f"<Execution {self.id} done={self.done}>"

    @property
    def id(self) -> str:
        """Durable: valid in other processes and after a restart
        (``Box.execution(id)``)."""
        return f"{self._sink.handle.wire_id:016x}"

    @property
    def cursor(self) -> tuple[int, int]:
        """(stdout, stderr) offsets of the output received so far: pass
        them to ``Box.execution`` to resume exactly after it."""
        return self._sink.cursor

    @property
    def replay_start(self) -> tuple[int, int]:
        """(stdout, stderr) offsets where this handle's output began: 0 for
        an execution it started; after an attach, later than the cursor
        asked for when the box no longer kept the bytes in between."""
        return self._sink.start[STDOUT], self._sink.start[STDERR]

    @property
    def stdout(self) -> OutputStream:
        return self._stdout

    @property
    def stderr(self) -> OutputStream:
        return self._stderr

    @property
    def output(self) -> ChunkStream[OutputChunk]:
        """Both streams in one order, each chunk numbered (``ordered_output=True``)."""
        if self._output is None:
            raise InvalidStateError(
                "start the execution with ordered_output=True", StateReason.NOT_ORDERED
            )
        return self._output

    @property
    def done(self) -> bool:
        return self._sink.exited.done()

    @property
    def exited(self) -> Future[_Exit]:
        """Completes when the Exit arrives (asyncio wraps it); see ``result``."""
        return self._sink.exited

    def result(self) -> ExecResult:
        """The result of an ended execution.

        Streams nobody iterated are collected into ``stdout``/``stderr``;
        a stream being iterated keeps its chunks for its reader.
        """
        if not self.done:
            raise InvalidStateError("the execution is still running", StateReason.EXEC_RUNNING)
        end = self._sink.exited.result()
        with self._lock:
            if self._result is None:
                self._result = ExecResult(
                    outcome=end.outcome,
                    exit_code=end.exit_code,
                    signal=end.signal,
                    stdout=b"".join(self.stdout._take_unread()),
                    stderr=b"".join(self.stderr._take_unread()),
                    os_error=end.os_error,
                )
            return self._result

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Block until the execution ends; ``TimeoutError`` if it outlives timeout.

        Output of streams nobody iterates is collected meanwhile, so the
        process is not held up by it (like ``Popen.communicate``), and lands
        in the result.  A stream being iterated keeps its flow control.
        """
        waited(self._collect(), timeout, "the execution still runs")
        return self.result()

    def _collect(self) -> Future[_Exit]:
        """Collect what nobody reads from now on; the Exit to wait for."""
        self._sink.collect()
        return self._sink.exited

    def signal_future(self, sig: int) -> Future[None]:
        """Start sending ``sig``; completes once it was delivered."""
        if not is_int(sig) or not 1 <= sig <= MAX_SIGNAL:
            raise InvalidArgumentError(f"signal {sig!r} is not an integer in 1..{MAX_SIGNAL}")
        with self._while_running():
            return self._sink.native.exec_signal(self._sink.handle.value, int(sig))

    def signal(self, sig: int) -> None:
        """Send signal ``sig`` (1..64) to the execution's process group.

        Returns once the box delivered it; ``ExecClosedError`` if the
        execution ended or no process of its group was left to receive it.
        """
        self.signal_future(sig).result()

    def write_future(self, data: bytes | bytearray | memoryview) -> Future[None]:
        """Start writing ``data`` (at most ``WRITE_MAX`` bytes) to stdin."""
        with self._while_running(stdin=True):
            return self._sink.native.exec_write(self._sink.handle.value, data)

    def stdin_chunks(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """``data`` in pieces ``write_future`` takes (checked first)."""
        view = check_data(data, "stdin data")
        self._check_stdin()
        for offset in range(0, len(view), WRITE_MAX):
            yield view[offset : offset + WRITE_MAX]

    def write_stdin(
        self, data: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> None:
        """Write to the process's stdin; returns once its pipe has taken it all.

        Blocks while the process does not read (backpressure), up to
        ``timeout`` seconds (``BoxliteTimeoutError``).  Needs
        ``exec(..., stdin=True)`` (else ``InvalidStateError``, reason
        ``stdin_not_open``); ``ExecClosedError`` once stdin is closed, the
        process closed it, or the execution ended.
        """
        check_seconds(timeout, "timeout")
        for chunk in self.stdin_chunks(data):
            waited(self.write_future(chunk), timeout, "stdin still takes no more")

    def resize_future(self, rows: int, cols: int) -> Future[None]:
        check_size(rows, cols)
        with self._while_running():
            return self._sink.native.exec_resize(self._sink.handle.value, rows, cols)

    def resize(self, rows: int, cols: int) -> None:
        """Resize its terminal (``tty=True``); returns once done."""
        self.resize_future(rows, cols).result()

    def close_stdin(self) -> None:
        """End of input (EOF) after everything written; closing twice is harmless."""
        with self._while_running(stdin=True):
            self._sink.native.exec_close_stdin(self._sink.handle.value)

    def _check_stdin(self) -> None:
        if self._sink.stdin is False:
            raise InvalidStateError(
                "stdin was not opened: start the execution with stdin=True",
                StateReason.STDIN_NOT_OPEN,
            )

    @contextlib.contextmanager
    def _while_running(self, stdin: bool = False) -> Iterator[None]:
        """Map "this execution has ended" onto ExecClosedError, whichever
        way it shows; with ``stdin``, refuse first if it has none."""
        if stdin:
            self._check_stdin()
        if self.done:
            raise ExecClosedError("the execution has ended")
        try:
            yield
        except InvalidArgumentError as exc:
            # The handle is released when the Exit arrives: the race is lost.
            if exc.code == ErrorCode.INVALID_HANDLE:
                raise error_for(ErrorCode.EXEC_CLOSED, "the execution has ended") from None
            raise

    def kill(self) -> None:
        self.signal(signal_module.SIGKILL)

    def detach(self) -> None:
        """Let go of the execution without ending it: it runs on in its box,
        keeping its recent output, for ``Box.execution(self.id)`` from this
        or another process.  Its result here says ``detached``."""
        with self._while_running():
            self._sink.native.exec_detach(self._sink.handle.value)

    def close(self) -> None:
        """Release the execution; one still running is killed and its result
        says ``force_closed``.  Closing twice, or after the end, is harmless."""
        self._sink.handle.release()

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_spec(
    argv: Sequence[str],
    *,
    env: Env | None,
    cwd: str | None,
    timeout: float | None,
    input: bytes | None,
    user: str | None,
) -> ExecSpec:
    """What ``Box.run`` runs: ``exec``'s spec, with a stdin for ``input``."""
    if input is not None:
        check_data(input, "input")
    return ExecSpec(argv, env=env, cwd=cwd, stdin=input is not None, timeout=timeout, user=user)


def run_to_end(execution: Execution, input: bytes | None) -> ExecResult:
    """``run``'s end: feed ``input`` then EOF (unless the process stops
    taking it, as ``subprocess.run`` allows), collecting output meanwhile."""
    if input is not None:
        execution._collect()  # output must not wait for the input to go in
        with contextlib.suppress(ExecClosedError):
            execution.write_stdin(input)
            execution.close_stdin()
    return execution.wait()
