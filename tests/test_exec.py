"""Executions on real boxes: byte-exact streams, typed outcomes, env, cwd."""

from __future__ import annotations

import hashlib
import signal
import threading
import time

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

pytestmark = pytest.mark.parity


def test_printf_is_byte_exact(box: boxlite_ffi.Box) -> None:
    result = box.run(["printf", "abc"])
    assert result.stdout == b"abc"
    assert result.stderr == b""
    assert result.outcome is Outcome.EXITED
    assert result.exit_code == 0
    assert result.signal is None


def test_streams_are_kept_apart(box: boxlite_ffi.Box) -> None:
    result = box.run(["sh", "-c", "printf out1; printf err1 >&2; printf out2; exit 7"])
    assert result.stdout == b"out1out2"
    assert result.stderr == b"err1"
    assert result.exit_code == 7


def test_nul_binary_and_invalid_utf8_survive(box: boxlite_ffi.Box) -> None:
    script = r"printf 'a\000b\377\376\300\200z'; printf '\000\000\351' >&2"
    result = box.run(["sh", "-c", script])
    assert result.stdout == b"a\x00b\xff\xfe\xc0\x80z"
    assert result.stderr == b"\x00\x00\xe9"


def test_every_byte_value_roundtrips(box: boxlite_ffi.Box) -> None:
    script = 'i=0; while [ $i -lt 256 ]; do printf "\\\\$(printf %o $i)"; i=$((i+1)); done'
    result = box.run(["sh", "-c", script])
    assert result.stdout == bytes(range(256))


def test_signal_outcome_uses_shell_convention(box: boxlite_ffi.Box) -> None:
    result = box.run(["sh", "-c", "kill -TERM $$"])
    assert result.outcome is Outcome.SIGNALED
    assert result.signal == signal.SIGTERM
    assert result.exit_code == 128 + signal.SIGTERM


def test_missing_command_fails_to_start(box: boxlite_ffi.Box) -> None:
    result = box.run(["/no/such/command"])
    assert result.outcome is Outcome.FAILED_TO_START
    assert result.exit_code == 127
    assert result.os_error == 2
    assert "No such file" in (result.error_message or "")


def test_env_and_cwd(rt: boxlite_ffi.Runtime, rootfs) -> None:
    with rt.create(rootfs=rootfs, env={"GREETING": "box"}, workdir="/etc") as b:
        assert b.run(["sh", "-c", 'printf "$GREETING $(pwd)"']).stdout == b"box /etc"
        result = b.run(
            ["sh", "-c", 'printf "$GREETING $OTHER $(pwd)"'], env={"OTHER": "x"}, cwd="/tmp"
        )
        assert result.stdout == b"box x /tmp"
        assert b.run(["pwd"], cwd="/no/such/dir").outcome is Outcome.FAILED_TO_START


def test_iterating_streams_as_they_arrive(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"])
    assert len(execution.id) == 16
    out = list(execution.stdout)
    assert b"".join(out) == b"one\nthree\n"
    assert len(out) == 2  # two writes 0.6 s apart are two chunks, not one
    assert execution.stderr.read() == b"two\n"
    result = execution.wait()
    assert result.ok and result.stdout == b"" and result.stderr == b""


@pytest.mark.local_only  # the remote client's callbacks run on its connection's thread
def test_output_callbacks_run_on_the_drain_thread(
    rt: boxlite_ffi.Runtime, box: boxlite_ffi.Box
) -> None:
    seen: list[tuple[str, bytes, int]] = []
    execution = box.exec(
        ["sh", "-c", "printf x; printf y >&2"],
        on_stdout=lambda d: seen.append(("out", d, threading.get_ident())),
        on_stderr=lambda d: seen.append(("err", d, threading.get_ident())),
    )
    result = execution.wait()
    assert sorted((s, d) for s, d, _ in seen) == [("err", b"y"), ("out", b"x")]
    assert {t for _, _, t in seen} == {rt.native.drain_thread.ident}
    assert result.stdout == b"" and result.stderr == b""


def test_invalid_argv_is_refused(box: boxlite_ffi.Box) -> None:
    for bad in ([], "echo hi", ["a\0b"], [1]):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.exec(bad)  # type: ignore[arg-type]
    for env in ({"A=B": "c"}, {"": "x"}, {"A": "b\0c"}, {"A": 1}):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.exec(["true"], env=env)  # type: ignore[dict-item]
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        box.exec(["x" * (2 << 20)])  # larger than one protocol frame


def test_signal_and_kill(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "echo ready; exec sleep 60"])
    assert next(iter(execution.stdout)) == b"ready\n"
    execution.signal(signal.SIGUSR1)
    result = execution.wait(timeout=10)
    assert result.outcome is Outcome.SIGNALED and result.signal == signal.SIGUSR1
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.kill()
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        execution.signal(65)


def test_many_concurrent_executions(box: boxlite_ffi.Box) -> None:
    executions = [box.exec(["sh", "-c", f"printf {i}; exit {i % 5}"]) for i in range(40)]
    for i, execution in enumerate(executions):
        result = execution.wait(timeout=30)
        assert (result.stdout, result.exit_code) == (str(i).encode(), i % 5)


def test_one_gib_of_stdout_arrives_complete(box: boxlite_ffi.Box) -> None:
    size = 1 << 30
    digest = hashlib.sha256()
    received = 0

    def consume(chunk: bytes) -> None:
        nonlocal received
        digest.update(chunk)
        received += len(chunk)

    # Every byte value, doubled into a 1 MiB file, repeated up to 1 GiB.
    pattern = 'i=0; while [ $i -lt 256 ]; do printf "\\\\$(printf %o $i)"; i=$((i+1)); done'
    double = (
        "for k in 1 2 3 4 5 6 7 8 9 10 11 12; do cat /tmp/p /tmp/p > /tmp/q; mv /tmp/q /tmp/p; done"
    )
    script = f"{pattern} > /tmp/p; {double}; while cat /tmp/p; do :; done | head -c {size}"
    result = box.exec(["sh", "-c", script], on_stdout=consume).wait(timeout=600)
    assert result.ok
    assert received == size
    expected = hashlib.sha256()
    block = bytes(range(256)) * 4096
    for _ in range(size // len(block)):
        expected.update(block)
    assert digest.hexdigest() == expected.hexdigest()


def test_text_decodes_a_character_split_across_chunks(box: boxlite_ffi.Box) -> None:
    # The euro sign's three bytes, written 0.3 s apart: two chunks.
    script = r"printf 'price \342'; sleep 0.3; printf '\202\254 10\n'"
    execution = box.exec(["sh", "-c", script])
    assert list(execution.stdout.text()) == ["price ", "€ 10\n"]
    lines = box.exec(["sh", "-c", r"printf 'a\nb'; sleep 0.2; printf 'c\n\nd'"]).stdout.lines()
    assert list(lines) == ["a\n", "bc\n", "\n", "d"]
    assert box.exec(["printf", r"\377"]).stdout.read() == b"\xff"  # bytes by default
    with pytest.raises(UnicodeDecodeError):
        list(box.exec(["printf", r"\377"]).stdout.text())
    assert list(box.exec(["printf", r"\377"]).stdout.text(errors="replace")) == ["\ufffd"]


def test_wait_never_blocks_kill_from_another_thread(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "echo up; exec sleep 60"])
    assert next(iter(execution.stdout)) == b"up\n"
    results: list[boxlite_ffi.ExecResult] = []
    waiter = threading.Thread(target=lambda: results.append(execution.wait()))
    waiter.start()
    execution.kill()  # while the other thread is blocked in wait()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert results[0].outcome is Outcome.SIGNALED and results[0].exit_code == 137


def test_ordered_output_numbers_both_streams_in_one_sequence(box: boxlite_ffi.Box) -> None:
    script = "for i in 1 2 3; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done"
    execution = box.exec(["sh", "-c", script], ordered_output=True)
    chunks = list(execution.output)
    assert [c.seq for c in chunks] == sorted(c.seq for c in chunks)
    assert [(c.stream, c.data) for c in chunks] == [
        (stream, f"{prefix}{i}\n".encode())
        for i in (1, 2, 3)
        for stream, prefix in (("stdout", "out"), ("stderr", "err"))
    ]
    result = execution.wait()
    assert result.ok and result.stdout == b"" and result.stderr == b""
    with pytest.raises(boxlite_ffi.InvalidStateError):
        _ = box.exec(["true"]).output


def test_close_force_closes_a_running_execution(box: boxlite_ffi.Box) -> None:
    with box.exec(["sh", "-c", "echo up; exec sleep 60"]) as execution:
        assert next(iter(execution.stdout)) == b"up\n"
    result = execution.wait(timeout=10)  # the with-block closed it
    assert result.outcome is Outcome.FORCE_CLOSED
    execution.close()  # twice: harmless
    with pytest.raises(boxlite_ffi.ExecClosedError):
        execution.kill()
    assert box.run(["sh", "-c", "ps -o comm | grep -c sleep || true"]).stdout == b"0\n"


def test_a_signal_nobody_receives_is_not_reported_as_sent(home, rootfs) -> None:
    # The main process has exited; a daemon in another session holds the
    # pipes, so the execution is still draining, but its group is empty.
    with boxlite_ffi.Runtime(home, drain_window=5) as rt, rt.create(rootfs=rootfs) as box:
        execution = box.exec(["sh", "-c", "setsid sleep 3 & echo bye"])
        assert next(iter(execution.stdout)) == b"bye\n"
        time.sleep(0.3)  # the shell has exited by now
        assert not execution.done
        with pytest.raises(boxlite_ffi.ExecClosedError):
            execution.signal(signal.SIGTERM)
        assert execution.wait(timeout=20).ok


NAN, INF = float("nan"), float("inf")
# Every exec keyword given what a caller might try: each is an
# InvalidArgumentError (before: ValueError, OverflowError, TypeError or
# AttributeError for most of them).
BAD_EXEC_ARGUMENTS = [
    *({"timeout": v} for v in (NAN, -INF, -1, 0, "5", True, [1], 1e300)),
    *({"env": v} for v in ("A=B", 5, ["A"], ["=x"], [5], {"A": None}, {1: "a"})),
    *({"cwd": v} for v in (5, b"/tmp", "/a\0b", "", "relative", ["/"])),
    *({"user": v} for v in (5, b"root", "a b")),
    *({"tty": True, "rows": v} for v in ("24", 24.5, True, -1, NAN, None)),
    *({"tty": True, "cols": v} for v in ("80", 0, 1 << 16)),
    *({"output_window": v} for v in ("1k", 1.5, True, -1, NAN)),
    {"on_stdout": 5},
    {"on_stderr": "print"},
]


@pytest.mark.parametrize("kwargs", BAD_EXEC_ARGUMENTS, ids=repr)
def test_bad_exec_arguments_are_typed_errors(box: boxlite_ffi.Box, kwargs: dict) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        box.exec(["true"], **kwargs)


@pytest.mark.parametrize("argv", [5, None, [b"ls"], ["true", 5]], ids=repr)
def test_bad_argv_is_a_typed_error(box: boxlite_ffi.Box, argv: object) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        box.exec(argv)  # type: ignore[arg-type]


def test_env_as_docker_list_and_an_infinite_timeout(rt: boxlite_ffi.Runtime, rootfs) -> None:
    with rt.create(rootfs=rootfs, env=["BOX=1", "EMPTY="]) as b:
        result = b.run(["sh", "-c", 'printf "$BOX $A [$EMPTY]"'], env=["A=b=c"], timeout=INF)
        assert result.ok and result.stdout == b"1 b=c []"


def test_bad_arguments_of_an_executions_methods(box: boxlite_ffi.Box) -> None:
    for value in ("str", 5, [1]):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.run(["cat"], input=value)  # type: ignore[arg-type]
    execution = box.exec(["sleep", "30"], stdin=True, tty=True)
    for timeout in (NAN, -1, "x"):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            execution.wait(timeout)  # type: ignore[arg-type]
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            execution.write_stdin(b"x", timeout)  # type: ignore[arg-type]
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.wait(timeout)  # type: ignore[arg-type]
    for data in ("str", 5, None):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            execution.write_stdin(data)  # type: ignore[arg-type]
    for sig in ("9", 9.5, None, True):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            execution.signal(sig)  # type: ignore[arg-type]
    for size in (("24", 80), (24.5, 80), (None, 80)):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            execution.resize(*size)  # type: ignore[arg-type]
    with pytest.raises(boxlite_ffi.BoxliteTimeoutError):
        execution.wait(0.05)
    assert not execution.done  # nothing above harmed it
    execution.kill()
    assert execution.wait(10).outcome is Outcome.SIGNALED


def test_stdin_not_opened_says_so(box: boxlite_ffi.Box) -> None:
    """(Before: 'invalid state' or ExecClosedError('exec closed') for a
    running execution.)"""
    execution = box.exec(["sleep", "30"])
    for attempt in (lambda: execution.write_stdin(b"x"), execution.close_stdin):
        with pytest.raises(boxlite_ffi.InvalidStateError, match="stdin was not opened") as e:
            attempt()
        assert e.value.reason == boxlite_ffi.StateReason.STDIN_NOT_OPEN
    assert not execution.done
    execution.kill()
    execution.wait(10)
