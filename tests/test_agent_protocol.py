"""boxlite-agent speaking the protocol directly (outside a box), built with
AddressSanitizer + UndefinedBehaviorSanitizer: hostile host input, ordering,
backpressure, stop and abandonment."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_ffi  # noqa: E402  (the source tree's, beside the tests)

HELLO, STARTED, STDOUT, STDERR, EXIT, STDIN_ACK, STDIN_CLOSED, RESULT, ATTACHED = range(64, 73)
EXEC, SIGNAL, STDIN, STDIN_CLOSE, RESIZE, CREDIT, ATTACH = range(1, 8)
ATTACHED_STDIN, ATTACHED_TTY, ATTACHED_ENDED = 1, 2, 4
REPLAY_MAX = 1 << 20
UNLIMITED = 0xFFFFFFFF
EXITED, SIGNALED, FAILED, TIMED_OUT = 1, 2, 3, 4


def build_agent(out: Path, sanitize: bool) -> Path:
    # The package's own command, without -static (the sanitizers need libc's
    # dynamic loader) and with -O1 for readable reports.
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"] if sanitize else []
    cmd = [a for a in build_ffi.executable_command("boxlite-agent", out, flags) if a != "-static"]
    subprocess.run([*cmd, "-O1"], check=True)
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


class Conn:
    """One host connection to the agent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
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


_SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test() -> Iterator[None]:
    yield
    while _SPAWNED:  # a failed test must not leave a detached agent running
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Agent(Conn):
    """The agent as a process; the object itself is the creator's connection
    (fd 3).  With listen=, fd 4 is a listening socket at that path."""

    def __init__(self, binary: Path, *args: str, listen: Path | None = None) -> None:
        ours, theirs = socket.socketpair()
        # Sources above any target, so no dup2 below clobbers another source.
        fds = {3: fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 100)}
        extra: list[str] = []
        if listen is not None:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(listen))
            server.listen()
            fds[4] = fcntl.fcntl(server.fileno(), fcntl.F_DUPFD_CLOEXEC, 100)
            extra = ["--listen-fd", "4"]
        self.proc = subprocess.Popen(
            [str(binary), *args, *extra],
            pass_fds=[*fds, *fds.values()],
            preexec_fn=lambda: [os.dup2(src, dst) for dst, src in fds.items()] and None,
            stderr=subprocess.PIPE,
            env={"ASAN_OPTIONS": "detect_leaks=1:exitcode=99", "UBSAN_OPTIONS": "halt_on_error=1"},
        )
        _SPAWNED.append(self.proc)
        theirs.close()
        if listen is not None:
            server.close()
        for fd in fds.values():
            os.close(fd)
        super().__init__(ours)

    def finish(self) -> str:
        self.sock.close()
        _, err = self.proc.communicate(timeout=30)
        stderr = err.decode(errors="replace")
        assert self.proc.returncode == 0, stderr
        assert "ERROR: AddressSanitizer" not in stderr and "runtime error" not in stderr, stderr
        return stderr


def exit_of(payload: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("<Iiii", payload)


def connect(path: Path) -> Conn:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return Conn(sock)


def attach(
    conn: Conn, ident: int, out_from: int = 0, err_from: int = 0, window: int = UNLIMITED
) -> tuple[int, int, int, int]:
    """(errno, flags, stdout start, stderr start) of an ATTACH."""
    conn.send(ATTACH, ident, struct.pack("<QQII", out_from, err_from, window, 0))
    kind, fid, body = conn.recv()
    assert (kind, fid) == (ATTACHED, ident)
    return struct.unpack("<iIQQ", body)


def outputs_until_exit(conn: Conn, ident: int) -> tuple[bytes, bytes, tuple[int, int, int, int]]:
    got = {STDOUT: b"", STDERR: b""}
    for kind, body in conn.frames_until_exit(ident):
        if kind in got:
            got[kind] += body
        elif kind == EXIT:
            return got[STDOUT], got[STDERR], exit_of(body)
    raise AssertionError("no EXIT")


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


def test_reattach_after_the_host_left_replays_then_goes_live(
    agents: dict[str, Path], tmp_path: Path
) -> None:
    sock_path = tmp_path / "agent.sock"
    agent = Agent(agents["asan"], "--detached", listen=sock_path)
    script = 'echo one; read x; echo "got $x"; echo err >&2; exit 3'
    agent.send(EXEC, 7, exec_payload(["sh", "-c", script], flags=1))
    assert agent.recv()[0] == STARTED
    assert agent.recv() == (STDOUT, 7, b"one\n")
    agent.sock.close()  # the creator goes; a detached box runs on

    second = connect(sock_path)
    assert attach(second, 8) == (errno.ENOENT, 0, 0, 0)
    assert attach(second, 7) == (0, ATTACHED_STDIN, 0, 0)
    assert second.recv() == (STDOUT, 7, b"one\n")  # the replay
    assert attach(connect(sock_path), 7)[0] == errno.EBUSY  # one host at a time
    second.send(STDIN, 7, b"hi\n")
    out, err, code = outputs_until_exit(second, 7)
    assert (out, err, code) == (b"got hi\n", b"err\n", (EXITED, 3, 0, 0))

    # Ended: still there for a while, replayed from a cursor, with its EXIT.
    third = connect(sock_path)
    assert attach(third, 7, out_from=4) == (0, ATTACHED_STDIN | ATTACHED_ENDED, 4, 0)
    assert outputs_until_exit(third, 7) == (b"got hi\n", b"err\n", (EXITED, 3, 0, 0))
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0


def test_output_without_a_host_keeps_the_newest_replay_bytes(
    agents: dict[str, Path], tmp_path: Path
) -> None:
    sock_path = tmp_path / "agent.sock"
    agent = Agent(agents["asan"], "--detached", listen=sock_path)
    total = 3 * REPLAY_MAX + 12345
    done = tmp_path / "written"
    script = f"head -c {total} /dev/zero | tr '\\0' x; echo; touch {done}; read x || exit 5"
    agent.send(EXEC, 9, exec_payload(["sh", "-c", script], flags=1, window=1000))
    assert agent.recv()[0] == STARTED
    assert agent.recv()[0] == STDOUT
    agent.sock.close()
    # Nobody reads: the process must still get to its `read` (not blocked on
    # a window), and the newest REPLAY_MAX bytes must be kept.
    deadline = time.monotonic() + 20
    while not done.exists():
        assert time.monotonic() < deadline, "the writer blocked without a host"
        time.sleep(0.01)
    conn = connect(sock_path)
    rc, _, start, _ = attach(conn, 9, window=64 << 10)
    assert rc == 0 and start == total + 1 - REPLAY_MAX
    replayed = 0
    conn.sock.settimeout(0.5)
    try:
        while True:
            kind, _, body = conn.recv()
            assert kind == STDOUT
            replayed += len(body)
    except TimeoutError:
        pass
    assert replayed == 64 << 10  # the replay counts against the new window
    conn.sock.settimeout(30)
    conn.send(CREDIT, 9, struct.pack("<II", UNLIMITED, UNLIMITED))
    conn.send(STDIN_CLOSE, 9, b"")
    out, _, code = outputs_until_exit(conn, 9)
    assert replayed + len(out) == REPLAY_MAX and code == (EXITED, 5, 0, 0)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
