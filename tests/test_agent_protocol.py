"""boxlite-agent speaking the protocol directly (outside a box), built with
AddressSanitizer + UndefinedBehaviorSanitizer: hostile host input, ordering,
backpressure, stop and abandonment."""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELLO, STARTED, STDOUT, STDERR, EXIT, STDIN_ACK, STDIN_CLOSED, RESULT = (
    64,
    65,
    66,
    67,
    68,
    69,
    70,
    71,
)
EXEC, SIGNAL, STDIN, STDIN_CLOSE, RESIZE, CREDIT = 1, 2, 3, 4, 5, 6
UNLIMITED = 0xFFFFFFFF
EXITED, SIGNALED, FAILED, TIMED_OUT = 1, 2, 3, 4


def build_agent(out: Path, sanitize: bool) -> Path:
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"] if sanitize else []
    sources = [
        str(ROOT / "native" / "protocol.c"),
        *map(str, (ROOT / "native" / "agent").glob("*.c")),
    ]
    cmd = [
        "cc",
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O1",
        *flags,
        f"-I{ROOT / 'native'}",
        *sources,
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("agent")
    return {"asan": build_agent(d / "asan", True), "plain": build_agent(d / "plain", False)}


def exec_payload(
    argv: list[str],
    env: tuple[str, ...] = ("PATH=/usr/bin:/bin",),
    cwd: str = "",
    *,
    flags: int = 0,
    timeout_ms: int = 0,
    kill_grace_ms: int = 2000,
    rows: int = 24,
    cols: int = 80,
    window: int = 0xFFFFFFFF,
) -> bytes:
    body = struct.pack(
        "<IIIIIII",
        len(argv),
        len(env),
        flags,
        timeout_ms,
        kill_grace_ms,
        rows << 16 | cols,
        window,
    )
    for s in [*argv, *env, cwd]:
        body += s.encode() + b"\0"
    return body


def frame(kind: int, ident: int, payload: bytes) -> bytes:
    return struct.pack("<IHHQ", len(payload), kind, 0, ident) + payload


class Agent:
    def __init__(self, binary: Path, *args: str) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [str(binary), *args],
            pass_fds=[3, fd],
            preexec_fn=lambda: os.dup2(fd, 3),
            stderr=subprocess.PIPE,
            env={"ASAN_OPTIONS": "detect_leaks=1:exitcode=99", "UBSAN_OPTIONS": "halt_on_error=1"},
        )
        theirs.close()
        self.sock.settimeout(30)  # a missing frame fails the test, never hangs it
        self.buf = b""
        assert self.recv()[0] == HELLO

    def send(self, kind: int, ident: int, payload: bytes) -> None:
        self.sock.sendall(frame(kind, ident, payload))

    def recv(self) -> tuple[int, int, bytes]:
        while True:
            if len(self.buf) >= 16:
                length, kind, _, ident = struct.unpack("<IHHQ", self.buf[:16])
                if len(self.buf) >= 16 + length:
                    payload, self.buf = self.buf[16 : 16 + length], self.buf[16 + length :]
                    return kind, ident, payload
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data

    def frames_until_exit(self, ident: int) -> Iterator[tuple[int, bytes]]:
        while True:
            kind, fid, payload = self.recv()
            if fid == ident:
                yield kind, payload
                if kind == EXIT:
                    return

    def finish(self) -> str:
        self.sock.close()
        _, err = self.proc.communicate(timeout=30)
        stderr = err.decode(errors="replace")
        assert self.proc.returncode == 0, stderr
        assert "ERROR: AddressSanitizer" not in stderr and "runtime error" not in stderr, stderr
        return stderr


def exit_of(payload: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("<Iiii", payload)


def test_output_then_exactly_one_exit(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(EXEC, 7, exec_payload(["sh", "-c", "printf 'a\\000b'; printf e >&2; exit 4"]))
    frames = list(agent.frames_until_exit(7))
    kinds = [k for k, _ in frames]
    assert kinds[0] == STARTED and kinds[-1] == EXIT and kinds.count(EXIT) == 1
    assert b"".join(p for k, p in frames if k == STDOUT) == b"a\0b"
    assert b"".join(p for k, p in frames if k == STDERR) == b"e"
    assert exit_of(frames[-1][1]) == (EXITED, 4, 0, 0)
    agent.finish()


def test_hostile_host_frames(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(EXEC, 1, b"\x01\x00\x00\x00garbage")  # malformed EXEC (too short)
    assert list(agent.frames_until_exit(1)) == [
        (EXIT, struct.pack("<Iiii", FAILED, 0, 0, errno.EINVAL))
    ]
    agent.send(EXEC, 2, exec_payload(["/no/such/program"]))
    assert exit_of(list(agent.frames_until_exit(2))[-1][1]) == (FAILED, 0, 0, errno.ENOENT)
    agent.send(EXEC, 3, exec_payload(["sleep", "30"]))
    assert agent.recv()[:2] == (STARTED, 3)
    agent.send(EXEC, 3, exec_payload(["true"]))  # duplicate id
    assert exit_of(list(agent.frames_until_exit(3))[-1][1]) == (FAILED, 0, 0, errno.EEXIST)
    agent.send(999, 3, b"future frame type")  # ignored
    agent.send(SIGNAL, 3, b"\x01")  # wrong length: ignored
    agent.send(SIGNAL, 3, struct.pack("<II", 0, 5))  # out of range: refused
    assert agent.recv() == (RESULT, 3, struct.pack("<Ii", 5, errno.EINVAL))
    agent.send(SIGNAL, 3, struct.pack("<II", signal.SIGKILL, 6))
    assert agent.recv() == (RESULT, 3, struct.pack("<Ii", 6, 0))
    assert exit_of(list(agent.frames_until_exit(3))[-1][1]) == (SIGNALED, 0, signal.SIGKILL, 0)
    agent.finish()


def test_oversized_frame_abandons_everything(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(EXEC, 1, exec_payload(["sleep", "30"]))
    pid = struct.unpack("<I", agent.recv()[2])[0]
    agent.sock.sendall(struct.pack("<IHHQ", (1 << 20) + 1, EXEC, 0, 2))
    assert "protocol violation" in agent.finish()
    time.sleep(0.1)
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_sigterm_ends_executions_then_the_agent(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"], "--grace-ms", "300")
    agent.send(EXEC, 1, exec_payload(["sleep", "30"]))
    agent.send(
        EXEC,
        2,
        exec_payload(["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.05; done"]),
    )
    seen = set()
    while (STDOUT, 2) not in seen:  # armed: the trap is in place
        seen.add(agent.recv()[:2])
    assert (STARTED, 1) in seen
    agent.proc.send_signal(signal.SIGTERM)
    exits = {}
    while len(exits) < 2:
        kind, ident, payload = agent.recv()
        if kind == EXIT:
            exits[ident] = exit_of(payload)
    assert exits[1] == (SIGNALED, 0, signal.SIGTERM, 0)
    assert exits[2] == (SIGNALED, 0, signal.SIGKILL, 0)  # ignored TERM: killed after grace
    assert agent.proc.wait(timeout=10) == 0
    agent.finish()


def test_a_host_that_stops_reading_bounds_agent_memory(agents: dict[str, Path]) -> None:
    agent = Agent(agents["plain"])
    agent.send(EXEC, 1, exec_payload(["yes"]))
    time.sleep(1.0)  # the host reads nothing meanwhile
    rss_kib = int(
        next(
            line
            for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        ).split()[1]
    )
    assert rss_kib < 16 * 1024
    agent.send(SIGNAL, 1, struct.pack("<II", signal.SIGKILL, 0))  # no reply wanted
    kinds = [k for k, _ in agent.frames_until_exit(1)]
    assert kinds.count(STDOUT) > 8 and kinds[-1] == EXIT
    agent.finish()


def test_stdin_frames_are_acknowledged_as_the_pipe_takes_them(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(EXEC, 1, exec_payload(["cat"], flags=1))  # BL_EXEC_STDIN
    assert agent.recv()[:2] == (STARTED, 1)
    agent.send(STDIN, 1, b"hello ")
    agent.send(STDIN, 1, b"world")
    agent.send(STDIN_CLOSE, 1, b"")
    acked, out = 0, b""
    for kind, body in agent.frames_until_exit(1):
        if kind == STDIN_ACK:
            acked += struct.unpack("<I", body)[0]
        elif kind == STDOUT:
            out += body
    assert (acked, out) == (11, b"hello world")
    agent.send(STDIN, 1, b"too late")  # the execution is gone: ignored
    agent.send(EXEC, 2, exec_payload(["sleep", "30"]))  # no stdin pipe
    agent.send(STDIN, 2, b"x")
    assert agent.recv()[:2] == (STARTED, 2)
    assert agent.recv()[:2] == (STDIN_CLOSED, 2)
    agent.send(SIGNAL, 2, struct.pack("<II", signal.SIGKILL, 0))
    assert list(agent.frames_until_exit(2))[-1][0] == EXIT
    agent.finish()


def test_timeout_frames(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(
        EXEC, 1, exec_payload(["sh", "-c", "echo hi; sleep 30"], timeout_ms=200, kill_grace_ms=100)
    )
    frames = list(agent.frames_until_exit(1))
    assert b"".join(p for k, p in frames if k == STDOUT) == b"hi\n"
    assert exit_of(frames[-1][1]) == (TIMED_OUT, 0, signal.SIGTERM, 0)
    agent.finish()


def test_resize_results(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    agent.send(EXEC, 1, exec_payload(["sleep", "30"], flags=2, rows=10, cols=20))  # BL_EXEC_TTY
    assert agent.recv()[:2] == (STARTED, 1)
    agent.send(RESIZE, 1, struct.pack("<HHI", 40, 120, 9))
    assert agent.recv() == (RESULT, 1, struct.pack("<Ii", 9, 0))
    agent.send(EXEC, 2, exec_payload(["sleep", "30"]))  # no terminal
    assert agent.recv()[:2] == (STARTED, 2)
    agent.send(RESIZE, 2, struct.pack("<HHI", 40, 120, 10))
    assert agent.recv() == (RESULT, 2, struct.pack("<Ii", 10, errno.ENOTTY))
    for ident in (1, 2):
        agent.send(SIGNAL, ident, struct.pack("<II", signal.SIGKILL, 0))
        assert list(agent.frames_until_exit(ident))[-1][0] == EXIT
    agent.finish()


def test_output_stops_at_the_window_and_resumes_with_credit(agents: dict[str, Path]) -> None:
    agent = Agent(agents["asan"])
    # More than the window plus the agent's 1 MiB pipe: head must block.
    script = "head -c 3000000 /dev/zero; head -c 5000 /dev/zero >&2"
    agent.send(EXEC, 1, exec_payload(["sh", "-c", script], window=100_000))
    agent.sock.settimeout(0.5)
    got = {STDOUT: 0, STDERR: 0}
    try:
        while True:
            kind, _, body = agent.recv()
            got[kind] = got.get(kind, 0) + len(body)
    except TimeoutError:
        pass
    assert got[STDOUT] == 100_000 and got[STDERR] == 0  # the writer is blocked
    agent.sock.settimeout(30)
    agent.send(CREDIT, 1, struct.pack("<II", 150_000, 0))
    agent.send(CREDIT, 1, struct.pack("<I", 1))  # malformed: ignored
    agent.send(CREDIT, 99, struct.pack("<II", 1, 1))  # unknown execution: ignored
    agent.send(CREDIT, 1, struct.pack("<II", UNLIMITED, 1000))  # stderr stays bounded
    for kind, body in agent.frames_until_exit(1):
        got[kind] = got.get(kind, 0) + len(body)
        if kind == STDERR and got[STDERR] == 1000:
            agent.send(CREDIT, 1, struct.pack("<II", 0, 4000))
    assert got[STDOUT] == 3_000_000 and got[STDERR] == 5000
    agent.finish()
