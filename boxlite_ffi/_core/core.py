"""The core layer: one native runtime, its drain thread, and typed calls.

Every native event is dispatched on the drain thread (invariant 1), which
takes them from the native queue in batches (``boxlite_runtime_take``).  Asynchronous
native operations complete ``concurrent.futures.Future`` objects, which the
sync API waits on and the asyncio API awaits (``asyncio.wrap_future``), so
both surfaces share this one implementation.

Lifetime: ``close()`` asks the native runtime to close; the drain thread keeps
draining until the native side reports that every event was delivered, then
frees the runtime itself.  Calls from other threads hold ``_lock`` so that free
never races a call in progress.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .._native import ffi, lib
from ..errors import ErrorCode, RuntimeClosedError, check, error_for
from . import callbacks as _callbacks
from .tokens import TOKENS

DRAIN_BATCH = 256
CHECK_MESSAGE_MAX = 512  # the native error type's bound (native/common/error.h)
WRITE_MAX = lib.BOXLITE_EXEC_WRITE_MAX
T = TypeVar("T")


class ExecSink(Protocol):
    """Receives one execution's events on the drain thread."""

    def on_output(self, stream: int, data: bytes) -> None: ...

    def on_exit(self, outcome: int, code: int, signal: int, error: int, os_error: int) -> None: ...

    def on_closed(self) -> None: ...


class _DoneSink:
    """Turns a native completion into the result of a Future."""

    __slots__ = ("future",)

    def __init__(self, future: Future[None]) -> None:
        self.future = future

    def on_done(self, status: int, message: str | None) -> None:
        if status == ErrorCode.OK:
            self.future.set_result(None)
        else:
            self.future.set_exception(error_for(status, message))

    def on_closed(self) -> None:
        self.future.set_exception(RuntimeClosedError())


def then(first: Future[Any], step: Callable[[], Future[T]]) -> Future[T]:
    """A Future of ``step()`` started once ``first`` settles, whatever its result."""
    out: Future[T] = Future()

    def forward(done: Future[T]) -> None:
        exc = done.exception()
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(done.result())

    def run_step(_: Future[Any]) -> None:
        try:
            step().add_done_callback(forward)
        except Exception as exc:  # noqa: BLE001 - any error of step belongs to the caller
            out.set_exception(exc)

    first.add_done_callback(run_step)
    return out


def signaled_status(sig: int) -> int:
    """The shell's exit status of a process ended by signal sig (128 + sig),
    by the native core's own rule (boxlite_exit_status)."""
    ended = ffi.new("boxlite_exit *", {"outcome": lib.BOXLITE_OUTCOME_SIGNALED, "signal": sig})
    return int(lib.boxlite_exit_status(ended))


def failed_status(error: int) -> int:
    """The exit status of a command that could not start with errno error:
    127 not found, 126 found but not runnable (boxlite_exit_status)."""
    failed = {"outcome": lib.BOXLITE_OUTCOME_FAILED_TO_START, "os_error": error}
    ended = ffi.new("boxlite_exit *", failed)
    return int(lib.boxlite_exit_status(ended))


def _cstring(value: str, keep: list[Any]) -> Any:
    """An owned ``char[]``; ``keep`` holds it alive for the native call.

    Reading a pointer field back gives a non-owning view, so the owner must
    be kept here, not fetched from the struct afterwards.
    """
    buf = ffi.new("char[]", value.encode())
    keep.append(buf)
    return buf


def _cstrings(values: Sequence[str], keep: list[Any]) -> Any:
    """A NULL-terminated ``char *[]``; ``keep`` holds the buffers alive."""
    arr = ffi.new("char *[]", len(values) + 1)
    for i, value in enumerate(values):
        arr[i] = _cstring(value, keep)
    keep.append(arr)
    return arr


def _token_ptr(token: int) -> Any:
    return ffi.cast("void *", token)


@dataclass(frozen=True)
class VmConfig:
    """What the "vm" engine runs a box's VM with (boxlite_vm_options)."""

    qemu: str
    kernel: str
    initrd: str
    root_image: str | None  # the layers' ext4 image; None: the lowers are shared
    accel: str  # "kvm" or "tcg"
    ready_ms: int = 0  # 0: the native default
    kernel_args: str | None = None  # after the guest kernel's own command line


@dataclass(frozen=True)
class BoxConfig:
    """What the native core needs to describe a box (also what is stored)."""

    directory: Path
    lowers: tuple[Path, ...]
    hostname: str
    stop_grace_ms: int
    drain_ms: int
    detached: bool
    # The main command: argv, "K=V" environment and working directory.
    main_argv: tuple[str, ...] | None = None
    main_env: tuple[str, ...] = ()
    main_cwd: str | None = None
    mounts: tuple[Mount, ...] = ()
    # Resource limits (0: none): bytes, processes, CPU milliseconds per second.
    memory_limit: int = 0
    pids_limit: int = 0
    cpu_millis: int = 0
    # pids_limit is a default: left out where it cannot be set.
    pids_optional: bool = False
    # The main command's output kept per stream (0: the native default).
    log_limit: int = 0
    # Bytes of each of /tmp and /dev/shm (0: the native default, 1 GiB).
    tmp_size: int = 0
    # Outbound network: slirp4netns's path (None: loopback only).
    network_helper: str | None = None
    host_loopback: bool = False
    # The writable layer's ext4 image (None: in the box directory, unlimited).
    disk_image: str | None = None
    # The engine "vm" and its VM (None: the engine "ns").
    vm: VmConfig | None = None


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into a box."""

    source: str
    target: str
    readonly: bool = True


def _box_options(config: BoxConfig, owner_pid: int, keep: list[Any]) -> Any:
    opts = ffi.new("boxlite_box_options *")
    opts.box_dir = _cstring(str(config.directory), keep)
    opts.hostname = _cstring(config.hostname, keep)
    opts.lower_dirs = _cstrings([str(p) for p in config.lowers], keep)
    opts.stop_grace_ms = config.stop_grace_ms
    opts.drain_ms = config.drain_ms
    opts.owner_pid = owner_pid
    opts.flags = (
        (lib.BOXLITE_BOX_DETACHED if config.detached else 0)
        | (lib.BOXLITE_BOX_HOST_LOOPBACK if config.host_loopback else 0)
        | (lib.BOXLITE_BOX_PIDS_OPTIONAL if config.pids_optional else 0)
    )
    if config.network_helper is not None:
        opts.network_helper = _cstring(config.network_helper, keep)
    if config.disk_image is not None:
        opts.disk_image = _cstring(config.disk_image, keep)
    if config.main_argv is not None:
        opts.main_argv = _cstrings(config.main_argv, keep)
        opts.main_env = _cstrings(config.main_env, keep)
        opts.main_cwd = _cstring(config.main_cwd or "/", keep)
    if config.mounts:
        mounts = ffi.new("boxlite_mount[]", len(config.mounts))
        keep.append(mounts)
        for slot, mount in zip(mounts, config.mounts, strict=True):
            slot.source = _cstring(mount.source, keep)
            slot.target = _cstring(mount.target, keep)
            slot.flags = lib.BOXLITE_MOUNT_READONLY if mount.readonly else 0
        opts.mounts = mounts
        opts.n_mounts = len(config.mounts)
    opts.memory_limit = config.memory_limit
    opts.pids_limit = config.pids_limit
    opts.cpu_millis = config.cpu_millis
    opts.log_limit = config.log_limit
    opts.tmp_size = config.tmp_size
    if config.vm is not None:
        opts.engine = _cstring("vm", keep)
        vm = ffi.new("boxlite_vm_options *")
        keep.append(vm)
        for field in ("qemu", "kernel", "initrd", "root_image", "accel", "kernel_args"):
            if (value := getattr(config.vm, field)) is not None:
                setattr(vm, field, _cstring(value, keep))
        vm.ready_ms = config.vm.ready_ms
        opts.vm = vm
    return opts


class NativeRuntime:
    def __init__(self, libexec: Path, *, queue_capacity: int = 0, workers: int = 0) -> None:
        keep: list[Any] = []
        opts = ffi.new("boxlite_runtime_options *")
        opts.queue_capacity = queue_capacity
        opts.worker_threads = workers
        opts.libexec_dir = _cstring(str(libexec), keep)
        out = ffi.new("boxlite_runtime **")
        check(lib.boxlite_runtime_new(opts, out), f"cannot start the runtime (libexec {libexec})")
        self._rt: Any = out[0]
        # Reentrant: a finalizer (a dropped Execution) may run, and call in,
        # while this thread is between the native calls of a `_use` block.
        self._lock = threading.RLock()
        self._closing = False
        self._freed = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="boxlite-drain", daemon=True)
        self._thread.start()

    # ---- lifetime ----------------------------------------------------

    @property
    def drain_thread(self) -> threading.Thread:
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closing

    def _drain_loop(self) -> None:
        batch = _callbacks.Batch(DRAIN_BATCH)
        rt, events = self._rt, batch.events
        while (n := lib.boxlite_runtime_take(rt, events, DRAIN_BATCH, -1)) >= 0:
            try:
                batch.dispatch(n)
            finally:
                lib.boxlite_runtime_release(rt, events, n)
        with self._lock:
            rt, self._rt = self._rt, None
        lib.boxlite_runtime_free(rt)
        # Safety net: the native side completes everything it accepted, so
        # this finds nothing unless a completion was lost.
        for sink in TOKENS.claim_all(self):
            sink.on_closed()
        self._freed.set()

    def close(self) -> None:
        """Close the native runtime and wait until it is freed (idempotent)."""
        with self._lock:
            if not self._closing:
                self._closing = True
                lib.boxlite_runtime_close(self._rt)
        if threading.current_thread() is not self._thread:
            self._freed.wait()

    @contextlib.contextmanager
    def _use(self) -> Iterator[Any]:
        """The native runtime, kept alive for the duration of one call."""
        if threading.current_thread() is self._thread:
            # Only the drain thread frees it, so it is alive here.
            if self._rt is None:
                raise RuntimeClosedError()
            yield self._rt
            return
        with self._lock:
            if self._closing or self._rt is None:
                raise RuntimeClosedError()
            yield self._rt

    def _call_registered(self, token: int, call: Callable[[Any], int]) -> None:
        """Run a native call that takes ownership of ``token`` only on success.

        A refused call will never call back, so its token is withdrawn here.
        """
        try:
            with self._use() as rt:
                status = call(rt)
        except BaseException:
            TOKENS.claim(token)
            raise
        if status != ErrorCode.OK:
            TOKENS.claim(token)
            check(status)

    def _call(self, call: Any, *args: Any) -> None:
        """A synchronous native call; its status raised as a typed error."""
        with self._use() as rt:
            check(call(rt, *args))

    def _begin(self, call: Any, *args: Any) -> Future[None]:
        """Start an asynchronous native operation; its Future completes once."""
        future: Future[None] = Future()
        token = TOKENS.register(self, _DoneSink(future))
        self._call_registered(token, lambda rt: call(rt, *args, _callbacks.DONE, _token_ptr(token)))
        return future

    # ---- boxes -------------------------------------------------------

    def box_new(self, config: BoxConfig, *, owner_pid: int) -> int:
        """A box described by config; it dies with owner_pid (0: none)."""
        keep: list[Any] = []
        out = ffi.new("boxlite_handle *")
        self._call(lib.boxlite_box_new, _box_options(config, owner_pid, keep), out)
        return int(out[0])

    def box_check(self, config: BoxConfig) -> None:
        """Refuse, as a typed error saying why, what box_new (and so a start) would."""
        keep: list[Any] = []
        message = ffi.new("char[]", CHECK_MESSAGE_MAX)
        opts = _box_options(config, 0, keep)
        with self._use():
            status = lib.boxlite_box_config_check(opts, message, len(message))
        check(status, ffi.string(message).decode(errors="replace") or None)

    def box_connect(self, config: BoxConfig, shim_pid: int, shim_start_ticks: int) -> int:
        """The running box that shim runs (started by another runtime)."""
        keep: list[Any] = []
        out = ffi.new("boxlite_handle *")
        opts = _box_options(config, 0, keep)
        self._call(lib.boxlite_box_connect, opts, shim_pid, shim_start_ticks, out)
        return int(out[0])

    def box_pid(self, box: int) -> int:
        out = ffi.new("int32_t *")
        self._call(lib.boxlite_box_pid, box, out)
        return int(out[0])

    def box_start(self, box: int) -> Future[None]:
        return self._begin(lib.boxlite_box_start, box)

    def box_stop(self, box: int) -> Future[None]:
        return self._begin(lib.boxlite_box_stop, box)

    def box_state(self, box: int) -> int:
        out = ffi.new("int *")
        self._call(lib.boxlite_box_state, box, out)
        return int(out[0])

    def box_free(self, box: int) -> None:
        self._call(lib.boxlite_box_free, box)

    # ---- executions ----------------------------------------------------

    def exec_start(
        self,
        box: int,
        argv: Sequence[str],
        env: Sequence[str],
        cwd: str | None,
        sink: ExecSink,
        *,
        stdin: bool = False,
        timeout_ms: int = 0,
        tty: tuple[int, int] | None = None,
        window: int = 0,
        ack_output: bool = True,
    ) -> int:
        """With ack_output, the sink acknowledges output (exec_ack) as its
        reader takes it; otherwise the core does once on_output returns."""
        keep: list[Any] = []
        opts = ffi.new("boxlite_exec_options *")
        opts.flags = (
            (lib.BOXLITE_EXEC_ACK_OUTPUT if ack_output else 0)
            | (lib.BOXLITE_EXEC_STDIN if stdin else 0)
            | (lib.BOXLITE_EXEC_TTY if tty else 0)
        )
        opts.timeout_ms = timeout_ms
        opts.window = window
        if tty:
            opts.rows, opts.cols = tty
        opts.argv = _cstrings(argv, keep)
        opts.env = _cstrings(env, keep)
        if cwd is not None:
            opts.cwd = _cstring(cwd, keep)
        callbacks = ffi.new("boxlite_exec_callbacks *")
        callbacks.on_output = _callbacks.OUTPUT
        callbacks.on_exit = _callbacks.EXIT
        token = TOKENS.register(self, sink)
        callbacks.user_data = _token_ptr(token)
        out = ffi.new("boxlite_handle *")
        self._call_registered(
            token, lambda rt: lib.boxlite_exec_start(rt, box, opts, callbacks, out)
        )
        return int(out[0])

    def exec_attach(
        self, box: int, exec_id: int, cursor: tuple[int, int], sink: ExecSink, *, window: int = 0
    ) -> tuple[int, Future[None]]:
        """A handle on execution exec_id of a running box, and the Future
        of the box's answer (NotFoundError, InvalidStateError if held)."""
        opts = ffi.new("boxlite_attach_options *")
        opts.stdout_from, opts.stderr_from = cursor
        opts.flags = lib.BOXLITE_EXEC_ACK_OUTPUT
        opts.window = window
        callbacks = ffi.new("boxlite_exec_callbacks *")
        callbacks.on_output = _callbacks.OUTPUT
        callbacks.on_exit = _callbacks.EXIT
        token = TOKENS.register(self, sink)
        callbacks.user_data = _token_ptr(token)
        answered: Future[None] = Future()
        answer_token = TOKENS.register(self, _DoneSink(answered))
        out = ffi.new("boxlite_handle *")
        try:
            self._call_registered(
                token,
                lambda rt: lib.boxlite_exec_attach(
                    rt,
                    box,
                    exec_id,
                    opts,
                    callbacks,
                    _callbacks.DONE,
                    _token_ptr(answer_token),
                    out,
                ),
            )
        except BaseException:
            TOKENS.claim(answer_token)
            raise
        return int(out[0]), answered

    def exec_attach_info(self, execution: int) -> Any:
        info = ffi.new("boxlite_attach_info *")
        self._call(lib.boxlite_exec_attach_info, execution, info)
        return info

    def exec_id(self, execution: int) -> int:
        out = ffi.new("uint64_t *")
        self._call(lib.boxlite_exec_id, execution, out)
        return int(out[0])

    def exec_detach(self, execution: int) -> None:
        self._call(lib.boxlite_exec_detach, execution)

    def exec_write(self, execution: int, data: bytes | bytearray | memoryview) -> Future[None]:
        """Completes once the process's stdin pipe has taken every byte."""
        return self._begin(lib.boxlite_exec_write, execution, ffi.from_buffer(data), len(data))

    def exec_resize(self, execution: int, rows: int, cols: int) -> Future[None]:
        return self._begin(lib.boxlite_exec_resize, execution, rows, cols)

    def exec_close_stdin(self, execution: int) -> None:
        self._call(lib.boxlite_exec_close_stdin, execution)

    def exec_signal(self, execution: int, sig: int) -> Future[None]:
        """Completes once delivered; ExecClosedError if nobody was left to get it."""
        return self._begin(lib.boxlite_exec_signal, execution, sig)

    def exec_ack(self, execution: int, stream: int, n: int) -> None:
        """The reader took n bytes of stream: reopen its window."""
        self._call(lib.boxlite_exec_ack, execution, stream, n)

    def exec_free(self, execution: int) -> None:
        self._call(lib.boxlite_exec_free, execution)
