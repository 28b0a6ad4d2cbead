"""An execution attached to this process (``run`` and ``exec``): its output
to our stdout and stderr, our stdin to it (``-i``), our terminal as its
pseudo-terminal (``-t``: raw mode, the window size kept in sync), and the
signals we get passed on to it.

While attached, SIGINT, SIGTERM and SIGHUP go to the execution (a second
one kills it), and SIGWINCH resizes its terminal; the handlers only post
and never wait, so they are safe wherever the main thread was.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..box import Box
from ..errors import BoxliteError
from ..execution import ExecResult, Execution
from ..state.exits import Outcome
from . import BOXLITE_FAILED

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

READ_SIZE = 64 * 1024


def exit_code(result: ExecResult) -> int:
    """The shell's code: the process's own, 128+n for signal n, 124 for a
    timeout, 126/127 when it could not be started; 125 when the box itself
    went away under it."""
    if result.outcome in (Outcome.LOST, Outcome.FORCE_CLOSED):
        return BOXLITE_FAILED
    return result.exit_code


def _writer(fd: int) -> Callable[[bytes], None]:
    """Write output whole to fd; once the reader is gone, drop the rest."""
    broken = False

    def write(data: bytes) -> None:
        nonlocal broken
        view = memoryview(data)
        while view and not broken:
            try:
                view = view[os.write(fd, view) :]
            except BrokenPipeError:
                broken = True

    return write


def terminal_size() -> tuple[int, int]:
    size = os.get_terminal_size(sys.stdin.fileno())
    return size.lines, size.columns


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Our terminal in raw mode (keys, Ctrl-C included, go to the box's
    pseudo-terminal as bytes), restored however we leave."""
    if not enabled:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _StdinPump:
    """A thread copying our stdin into the execution, EOF included; it
    stops, and is joined, when the execution ends first."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._run, name="boxlite-stdin", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # poll, not epoll: stdin may be a regular file.
        with selectors.PollSelector() as selector:
            selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
            selector.register(self.wake_r, selectors.EVENT_READ)
            with contextlib.suppress(BoxliteError, OSError):
                while True:
                    ready = {key.fd for key, _ in selector.select()}
                    if self.wake_r in ready:
                        return
                    data = os.read(sys.stdin.fileno(), READ_SIZE)
                    if not data:
                        self.execution.close_stdin()
                        return
                    self.execution.write_stdin(data)

    def close(self) -> None:
        os.write(self.wake_w, b"x")
        self.thread.join()
        os.close(self.wake_r)
        os.close(self.wake_w)


@contextlib.contextmanager
def _signals_to(execution: Execution, tty_mode: bool) -> Iterator[None]:
    received: list[int] = []

    def forward(sig: int, _frame: Any) -> None:
        received.append(sig)
        if len(received) == 1:
            execution.signal_future(sig)
        else:
            execution.signal_future(signal.SIGKILL)

    def resize(_sig: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            execution.resize_future(*terminal_size())

    saved = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    if tty_mode:
        saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_attached(
    box: Box,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None,
    cwd: str | None,
    interactive: bool,
    tty_mode: bool,
    timeout: float | None,
    user: str | None = None,
) -> int:
    """Run argv in box, attached to this process; its exit code."""
    rows, cols = terminal_size() if tty_mode else (24, 80)
    with raw_terminal(tty_mode and interactive):
        execution = box.exec(
            argv,
            env=env,
            cwd=cwd,
            stdin=interactive,
            tty=tty_mode,
            rows=rows,
            cols=cols,
            timeout=timeout,
            user=user,
            on_stdout=_writer(sys.stdout.fileno()),
            on_stderr=_writer(sys.stderr.fileno()),
        )
        with _signals_to(execution, tty_mode):
            pump = _StdinPump(execution) if interactive else None
            try:
                result = execution.wait()
            finally:
                if pump is not None:
                    pump.close()
    return exit_code(result)
