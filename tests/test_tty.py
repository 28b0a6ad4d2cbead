"""Executions on a pseudo-terminal: a controlling tty of the asked size,
input typed into it, resize, and nothing lost at exit."""

from __future__ import annotations

import time

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

pytestmark = pytest.mark.parity


def test_a_tty_of_the_asked_size(box: boxlite_ffi.Box) -> None:
    result = box.exec(
        ["sh", "-c", "tty; stty size; [ -t 1 ] && echo is-a-tty"], tty=True, rows=33, cols=101
    ).wait(timeout=10)
    lines = result.stdout.decode().split("\r\n")  # a terminal ends lines with CR LF
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "33 101" and lines[2] == "is-a-tty"
    assert result.stderr == b""  # one terminal carries both streams


def test_input_resize_and_eof(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "read line; stty size; echo got:$line; cat"], tty=True)
    execution.resize(50, 132)
    execution.write_stdin(b"hello\n")
    execution.close_stdin()  # on a terminal: ^D, so cat sees end of input
    result = execution.wait(timeout=10)
    out = result.stdout.decode()
    assert "50 132" in out and "got:hello" in out
    assert result.outcome is Outcome.EXITED and result.exit_code == 0
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.resize(10, 10)


def test_ctrl_c_reaches_the_foreground_process(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "echo ready; exec sleep 60"], tty=True)
    assert next(iter(execution.stdout)).startswith(b"ready")
    time.sleep(0.1)
    execution.write_stdin(b"\x03")  # the terminal turns it into SIGINT
    result = execution.wait(timeout=10)
    assert result.outcome is Outcome.SIGNALED and result.signal == 2


def test_nothing_is_lost_when_the_process_exits(box: boxlite_ffi.Box) -> None:
    result = box.exec(["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; exit 7"], tty=True).wait(
        timeout=30
    )
    assert result.exit_code == 7
    assert result.stdout.count(b"a") == 200_000


def test_resize_needs_a_tty(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sleep", "5"])
    with pytest.raises(boxlite_ffi.InvalidStateError):
        execution.resize(10, 10)
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        box.exec(["true"], tty=True, rows=0)
    execution.close()
