"""The escape suite, first part: from inside a box, try what a hostile
process would; each attempt must fail in the box and leave the host as it
was.  Runs the host's python3 in boxes of the built-in host image."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite_ffi

# The set OCI runtimes keep by default (see native/shim/confine.c).
KEPT = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}

PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def call(nr, *args):
        ctypes.set_errno(0)
        rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
        return os.strerror(ctypes.get_errno()) if rc == -1 else "allowed"
    print(json.dumps({name: call(*spec) for name, spec in json.loads(sys.argv[1]).items()}))
    """
)
# x86-64 numbers; arguments that would do harm if the call went through.
SYSCALLS = {
    "keyctl": [250, 0, 0, 0, 0],  # KEYCTL_GET_KEYRING_ID
    "add_key": [248, 0, 0, 0, 0],
    "request_key": [249, 0, 0, 0, 0],
    "bpf": [321, 0, 0, 0],
    "perf_event_open": [298, 0, 0, -1, -1, 0],
    "kexec_load": [246, 0, 0, 0, 0],
    "init_module": [175, 0, 0, 0],
    "finit_module": [313, -1, 0, 0],
    "delete_module": [176, 0, 0],
    "clock_settime": [227, 0, 0],
    "settimeofday": [164, 0, 0],
    "adjtimex": [159, 0],
    "mount": [165, 0, 0, 0, 0, 0],
    "umount2": [166, 0, 0],
    "pivot_root": [155, 0, 0],
    "unshare_user": [272, 0x10000000],  # CLONE_NEWUSER
    "unshare_net": [272, 0x40000000],  # CLONE_NEWNET
    "setns": [308, -1, 0],
    "swapon": [167, 0, 0],
    "acct": [163, 0],
    "syslog": [103, 3, 0, 0],
    "open_by_handle_at": [304, -1, 0, 0],
    "clone_newns": [56, 0x00020000 | 17, 0, 0, 0, 0],  # CLONE_NEWNS | SIGCHLD
}


def probe(box: boxlite_ffi.Box, calls: dict[str, list[int]]) -> dict[str, str]:
    import json

    result = box.run(["python3", "-c", PROBE, json.dumps(calls)])
    assert result.ok, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def box(rt: boxlite_ffi.Runtime):  # type: ignore[no-untyped-def]
    with rt.create("host") as b:
        yield b


def test_refused_system_calls(box: boxlite_ffi.Box) -> None:
    seen = probe(box, SYSCALLS)
    assert seen == {name: os.strerror(errno.EPERM) for name in SYSCALLS}
    assert probe(box, {"clone3": [435, 0, 0]})["clone3"] == os.strerror(errno.ENOSYS)
    # The box's own work goes on: processes, files, pipes.
    assert box.run(["sh", "-c", "echo x | cat > /tmp/f && cat /tmp/f"]).stdout == b"x\n"


def test_bounded_capabilities_and_no_new_privileges(box: boxlite_ffi.Box) -> None:
    status = box.run(["cat", "/proc/self/status"]).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bounding = int(fields["CapBnd"], 16)
    assert {bit for bit in range(64) if bounding >> bit & 1} == KEPT
    assert int(fields["CapEff"], 16) & ~bounding == 0
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"


def test_proc_reveals_nothing_of_the_host(box: boxlite_ffi.Box) -> None:
    script = (
        "for f in /proc/keys /proc/timer_list /proc/sched_debug; do"
        " [ -e $f ] && wc -c < $f; done; ls /proc/acpi 2>/dev/null | wc -l;"
        " echo x > /proc/sys/kernel/domainname; echo sysctl=$?"
    )
    out = box.run(["sh", "-c", script]).stdout.decode().split()
    assert all(n == "0" for n in out[:-1]), out
    assert out[-1] == "sysctl=2"
    pids = box.run(["sh", "-c", "ls /proc | grep -E '^[0-9]+$'"]).stdout.split()
    assert len(pids) <= 4 and b"1" in pids  # the agent, sh, ls, grep: nothing of the host


def test_host_processes_cannot_be_signalled_or_traced(box: boxlite_ffi.Box) -> None:
    """Our pid means nothing in the box's pid namespace (a box has a handful)."""
    assert os.getpid() > 100
    # kill(pid, SIGKILL); ptrace(PTRACE_ATTACH, pid)
    seen = probe(box, {"kill_host": [62, os.getpid(), 9], "ptrace_host": [101, 16, os.getpid()]})
    assert seen == {"kill_host": os.strerror(errno.ESRCH), "ptrace_host": os.strerror(errno.ESRCH)}


def test_host_files_outside_mounts_are_not_there(box: boxlite_ffi.Box, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    result = box.run(["cat", str(secret), "/etc/shadow", "/root/.bash_history"])
    assert result.stdout == b"" and result.exit_code != 0
    # Writing there lands in the box's own /tmp (a tmpfs), not in the host's.
    assert box.run(["sh", "-c", f"mkdir -p {tmp_path} && echo box > {secret}"]).ok
    assert secret.read_text() == "host secret\n"
    assert box.run(["sh", "-c", "ls -A /home; ls -A /root"]).stdout == b""


def test_image_layers_stay_unwritten(rt: boxlite_ffi.Runtime, oci_image: Path) -> None:
    rt.images.load(oci_image, tag="layers")
    layers = rt.home / "images/layers"
    before = {p: p.read_bytes() for p in layers.rglob("*") if p.is_file() and not p.is_symlink()}
    with rt.create("layers") as box:
        assert box.run(["sh", "-c", "echo changed > /etc/motd; rm -rf /bin/ls"]).ok
        assert box.run(["cat", "/etc/motd"]).stdout == b"changed\n"
    assert before and {p: p.read_bytes() for p in before} == before
    assert all(
        (p.parent.parent / "bin/ls").exists()
        for p in before
        if (p.parent.parent / "bin/ls").exists()
    )
    with rt.create("layers") as box:  # a new box sees the image as it was
        assert box.run(["cat", "/etc/motd"]).stdout == b"from the top layer\n"


def test_the_hosts_loopback_is_out_of_reach(box: boxlite_ffi.Box) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        result = box.run(["python3", "-c", code])
        assert result.exit_code != 0 and b"ConnectionRefused" in result.stderr
        interfaces = box.run(["ls", "/sys/class/net"]).stdout.split()
        assert interfaces in ([], [b"lo"])


CONNECT = textwrap.dedent(
    """
    import socket, sys
    for host in sys.argv[2:]:
        try:
            with socket.create_connection((host, int(sys.argv[1])), timeout=5) as s:
                print(host, s.recv(100).decode().strip())
        except OSError as exc:
            print(host, type(exc).__name__)
    """
)


@pytest.fixture
def host_server() -> Iterator[tuple[str, int]]:
    """A TCP server on every address of the host, and the host's own
    (non-loopback) address."""
    import threading

    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello from the host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_socket:
        probe_socket.connect(("192.0.2.1", 9))  # no packet is sent: it picks a route
        address = probe_socket.getsockname()[0]
    yield address, server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
    server.close()
    thread.join()


def connect(box: boxlite_ffi.Box, port: int, *hosts: str) -> dict[str, str]:
    out = box.run(["python3", "-c", CONNECT, str(port), *hosts]).stdout.decode()
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_no_network_by_default(rt: boxlite_ffi.Runtime, host_server: tuple[str, int]) -> None:
    address, port = host_server
    with rt.create("host") as box:
        seen = connect(box, port, address, "127.0.0.1", "10.0.2.2")
    assert seen == {
        address: "OSError",
        "127.0.0.1": "ConnectionRefusedError",
        "10.0.2.2": "OSError",
    }


def test_outbound_network_without_the_hosts_loopback(
    rt: boxlite_ffi.Runtime, host_server: tuple[str, int]
) -> None:
    address, port = host_server
    with rt.create("host", network=True) as box:
        seen = connect(box, port, address, "10.0.2.2", "127.0.0.1")
    assert seen == {
        address: "hello from the host",  # out through the user-mode stack
        "10.0.2.2": "OSError",  # the host's loopback, refused
        "127.0.0.1": "ConnectionRefusedError",  # the box's own loopback
    }


def test_the_hosts_loopback_when_asked_for(
    rt: boxlite_ffi.Runtime, host_server: tuple[str, int]
) -> None:
    _, port = host_server
    with rt.create("host", network=True, host_loopback=True) as box:
        assert connect(box, port, "10.0.2.2") == {"10.0.2.2": "hello from the host"}
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create("host", host_loopback=True)


ROOT_RUNTIME = pytest.mark.skipif(os.geteuid() != 0, reason="a root runtime's boxes get a range")


@ROOT_RUNTIME
def test_root_in_the_box_is_not_root_on_the_host(box: boxlite_ffi.Box) -> None:
    """A runtime running as root gives its boxes a subordinate id range:
    their root is an otherwise unused uid on the host."""
    assert box.run(["id", "-u"]).stdout == b"0\n"
    uid_map = box.run(["cat", "/proc/self/uid_map"]).stdout.split()
    assert uid_map[0] == b"0" and int(uid_map[1]) >= 100_000 and uid_map[2] == b"65536"
    agents = [
        int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        for pid in os.listdir("/proc")
        if pid.isdigit() and _comm(pid) == "boxlite-agent"
    ]
    assert agents and all(uid >= 100_000 for uid in agents)
    assert box.run(["sh", "-c", "echo mine > /created"]).ok
    created = box.directory / "upper" / "created"
    assert created.stat().st_uid == int(uid_map[1])  # what the box writes is the range's


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@ROOT_RUNTIME
def test_the_image_is_root_owned_inside_and_untouched_outside(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path
) -> None:
    """Files of host root (a root runtime's layers, rootfs=, volumes) show
    as the box's root's: private ones stay readable, existing ones writable;
    volumes are written as their host owner."""
    private = tmp_path / "root"
    shutil.copytree(rootfs, private, symlinks=True)
    (private / "etc" / "secret").write_text("for root\n")
    (private / "etc" / "secret").chmod(0o600)
    volume = tmp_path / "volume"
    volume.mkdir()
    with rt.create(rootfs=private, volumes=[f"{volume}:/v"]) as box:
        script = "cat /etc/secret; echo more >> /etc/passwd && echo appended; echo v > /v/f"
        result = box.run(["sh", "-c", script + "; stat -c %u /etc/secret"])
        assert result.stdout == b"for root\nappended\n0\n", result.stderr
    assert (private / "etc" / "passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"
    assert (volume / "f").stat().st_uid == 0
