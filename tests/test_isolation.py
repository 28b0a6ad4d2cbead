"""The escape suite, first part: from inside a box, try what a hostile
process would; each attempt must fail in the box and leave the host as it
was.  Runs the host's python3 in boxes of the built-in host image."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import textwrap
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
    "memfd_secret": [447, 0],
    "kcmp": [312, 1, 1, 0, 0, 0],  # KCMP_FILE of PID 1 with itself
}
# As on a kernel built without it: its users fall back to plain system calls.
ABSENT = {
    "clone3": [435, 0, 0],
    "io_uring_setup": [425, 1, 0],
    "io_uring_enter": [426, -1, 0, 0, 0, 0, 0],
    "io_uring_register": [427, -1, 0, 0, 0],
}


def probe(box: boxlite_ffi.Box, calls: dict[str, list[int]]) -> dict[str, str]:
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
    assert probe(box, ABSENT) == {name: os.strerror(errno.ENOSYS) for name in ABSENT}
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


# ---- the agent (PID 1) is out of the box's reach ----

AGENT_REACH = textwrap.dedent(
    """
    import ctypes, json, os, subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    def call(nr, *args):
        ctypes.set_errno(0)
        rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
        return os.strerror(ctypes.get_errno()) if rc == -1 else "allowed"
    def attempt(fn, path):
        try:
            fn(path)
            return "allowed"
        except OSError as exc:
            return os.strerror(exc.errno)
    def read(path):
        with open(path, "rb") as f:
            f.read(64)
    def write(path):
        with open(path, "wb", buffering=0) as f:
            f.write(b"written from the box\\n")
    def run(path):
        subprocess.run([path], capture_output=True)
    seen = {
        "ptrace seize": call(101, 0x4206, 1, 0, 0),
        "ptrace attach": call(101, 16, 1, 0, 0),
        "list /proc/1/fdinfo": attempt(os.listdir, "/proc/1/fdinfo"),
        "link /proc/1/exe": attempt(os.readlink, "/proc/1/exe"),
        "link /proc/1/fd/2": attempt(os.readlink, "/proc/1/fd/2"),
        "link /proc/1/root": attempt(os.readlink, "/proc/1/root"),
        "write /proc/1/fd/1": attempt(write, "/proc/1/fd/1"),
        "write /proc/1/fd/2": attempt(write, "/proc/1/fd/2"),
        "exec /proc/1/exe": attempt(run, "/proc/1/exe"),
    }
    # Its fd numbers can be listed (the kernel shows them to its owner), but
    # none can be opened, read, written or resolved.
    for fd in os.listdir("/proc/1/fd"):
        seen[f"link /proc/1/fd/{fd}"] = attempt(os.readlink, f"/proc/1/fd/{fd}")
        seen[f"open /proc/1/fd/{fd}"] = attempt(read, f"/proc/1/fd/{fd}")
        seen[f"read /proc/1/fdinfo/{fd}"] = attempt(read, f"/proc/1/fdinfo/{fd}")
    for name in ("mem", "environ", "maps", "auxv", "pagemap", "syscall"):
        seen["read /proc/1/" + name] = attempt(read, "/proc/1/" + name)
    seen["write /proc/1/mem"] = attempt(write, "/proc/1/mem")
    pidfd = libc.syscall(434, 1, 0)  # pidfd_open needs no right; what it opens does
    for fd in (1, 2, 3):
        seen[f"pidfd_getfd {fd}"] = call(438, pidfd, fd, 0)
    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    buf = ctypes.create_string_buffer(8)
    local, remote = iovec(ctypes.addressof(buf), 8), iovec(0x10000, 8)
    for name, nr in (("process_vm_readv", 310), ("process_vm_writev", 311)):
        seen[name] = call(nr, 1, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
    print(json.dumps(seen))
    """
)


def test_the_agent_cannot_be_traced_read_or_written(box: boxlite_ffi.Box) -> None:
    assert_agent_out_of_reach(box)
    assert box.run(["echo", "still fine"]).stdout == b"still fine\n"


def assert_agent_out_of_reach(box: boxlite_ffi.Box) -> None:
    """Nothing in a box, root included, traces the agent, reads its memory or
    environment, or takes its descriptors (the host connection, its log)."""
    result = box.run(["python3", "-c", AGENT_REACH])
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    refused = {os.strerror(errno.EPERM), os.strerror(errno.EACCES)}
    assert {name for name, what in seen.items() if what not in refused} == set(), seen
    assert not (box.directory / "shim.log").read_bytes().count(b"written from the box")
    # Its own children stay debuggable: ptrace within the box works.
    traced = box.run(["python3", "-c", TRACE_OWN_CHILD])
    assert traced.stdout == b"seized 0\n", traced.stderr


TRACE_OWN_CHILD = textwrap.dedent(
    """
    import ctypes, os, signal, time
    libc = ctypes.CDLL(None, use_errno=True)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    rc = libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(child), None, None)  # PTRACE_SEIZE
    print("seized", rc if rc == 0 else os.strerror(ctypes.get_errno()))
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    """
)


def test_the_agent_holds_no_host_file(box: boxlite_ffi.Box) -> None:
    """What the agent holds, seen from the host: /dev/null, pipes to the shim
    (its own output among them), sockets to hosts, and what it made itself
    (epoll, signalfd, timerfd, its own /proc): no file of the host's."""
    assert box.run(["true"]).ok
    agent = _agent_of(box)
    held = {fd: os.readlink(f"/proc/{agent}/fd/{fd}") for fd in os.listdir(f"/proc/{agent}/fd")}
    assert held["1"].startswith("pipe:") and held["2"].startswith("pipe:"), held
    host_files = {
        fd: target
        for fd, target in held.items()
        if target.startswith("/") and target not in ("/dev/null", "/proc/1/oom_score_adj")
    }
    assert host_files == {}, held
    # Its socket's path is the host's, outside the box's root.
    assert not box.run(["ls", str(box.directory / "agent.sock")]).ok


def _agent_of(box: boxlite_ffi.Box) -> int:
    """The agent's host pid: the shim's child."""
    shim = box.shim_pid
    for pid in os.listdir("/proc"):
        if pid.isdigit() and _comm(pid) == "boxlite-agent":
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == shim:
                return int(pid)
    raise AssertionError("no agent found")


SIGNAL_PID1 = textwrap.dedent(
    """
    import ctypes, os, signal, time
    libc = ctypes.CDLL(None, use_errno=True)
    delivered = []
    for sig in range(1, 65):
        try:
            os.kill(1, sig)
            delivered.append(sig)
        except OSError:
            pass
    # rt_sigqueueinfo with a forged sender: pid 0, as if from the host.
    info = (ctypes.c_int * 32)()
    info[0], info[2] = signal.SIGTERM, -1  # si_signo, si_code = SI_QUEUE; si_pid = 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        info[0] = sig
        libc.syscall(ctypes.c_long(129), ctypes.c_long(1), ctypes.c_long(sig), info)
    time.sleep(0.5)
    print(len(delivered))
    """
)


def test_signals_to_the_agent_are_harmless(box: boxlite_ffi.Box) -> None:
    """kill(1, sig) for every signal, and forged senders, from the box's root:
    the agent neither stops, dies nor ends the box; its timeouts still fire."""
    result = box.run(["python3", "-c", SIGNAL_PID1])
    assert result.ok, (result.outcome, result.stderr)
    assert box.run(["echo", "after"]).stdout == b"after\n"
    timed = box.run(["sleep", "30"], timeout=0.5)
    assert timed.outcome is boxlite_ffi.Outcome.TIMED_OUT
    assert box.status == "running"


FLOOD = r"""
#include <string.h>
#include <unistd.h>
int main(void)
{
    char line[4096];
    memset(line, 'x', sizeof line);
    line[sizeof line - 1] = '\n';
    for (int i = 0; i < 4096; i++) /* 16 MiB */
        if (write(i % 2 ? 1 : 2, line, sizeof line) != sizeof line)
            return 1;
    return write(2, "the end\n", 8) == 8 ? 0 : 1;
}
"""
SHIM_LOG_LIMIT = 1 << 20  # native/shim/shim.h


def test_a_compromised_agent_cannot_fill_the_hosts_disk(tmp_path: Path, rootfs: Path) -> None:
    """The agent holds no host file: its stdout and stderr are a pipe the
    shim empties into shim.log, which keeps at most SHIM_LOG_LIMIT bytes
    (the newest).  An 'agent' that floods both shows it."""
    import subprocess

    from boxlite_ffi.home import libexec_dir

    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("needs a C compiler")
    (tmp_path / "flood.c").write_text(FLOOD)
    agent = tmp_path / "flood"
    subprocess.run([cc, "-static", "-O1", "-o", agent, tmp_path / "flood.c"], check=True)
    box_dir = tmp_path / "box"
    box_dir.mkdir(mode=0o700)
    ours, theirs = socket.socketpair()
    status_r, status_w = os.pipe()

    def fds() -> None:
        os.dup2(theirs.fileno(), 3)
        os.dup2(status_w, 4)

    argv = [libexec_dir() / "boxlite-shim", "--box-dir", box_dir, "--agent", agent]
    with open(box_dir / "shim.log", "ab") as log:
        shim = subprocess.Popen(
            [*argv, "--lower", rootfs], stdout=log, stderr=log, preexec_fn=fds, close_fds=False
        )
    theirs.close()
    os.close(status_w)
    with os.fdopen(status_r, "rb") as status:
        assert status.readline().startswith(b"ok "), (box_dir / "shim.log").read_text()[-500:]
    assert shim.wait(timeout=60) == 0
    ours.close()
    current = (box_dir / "shim.log").read_bytes()
    older = (box_dir / "shim.log.1").read_bytes()
    assert len(current) + len(older) <= SHIM_LOG_LIMIT
    assert (older + current).endswith(b"x\nthe end\n")  # the newest is kept


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "//",
        "/proc",
        "/proc/sys",
        "/proc/",
        "//proc",
        "/./dev",
        "/usr/../proc",
        "/dev",
        "/dev/shm",
        "/dev/null",
        "/sys",
        "/sys/fs/cgroup",
    ],
)
def test_volumes_over_the_kernels_interfaces_are_refused(
    rt: boxlite_ffi.Runtime, tmp_path: Path, target: str
) -> None:
    """The root, /proc, /dev and /sys, and anything under them, are the
    box's own: a volume there is refused at create (runc refuses them too)."""
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="volume"):
        rt.create("host", volumes=[f"{tmp_path}:{target}"])
    assert rt.list() == []


def test_volumes_next_to_them_are_fine(rt: boxlite_ffi.Runtime, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("here\n")
    volumes = [f"{tmp_path}:{target}:ro" for target in ("/process", "/devices", "/system")]
    with rt.create("host", volumes=volumes) as box:
        assert box.run(["cat", "/process/f", "/devices/f", "/system/f"]).stdout == b"here\n" * 3


@pytest.mark.parametrize("link", ["/proc", "/dev", "/"])
def test_an_images_symlink_cannot_point_a_volume_at_them(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path, link: str
) -> None:
    """Resolved inside the box's root, /data -> /proc is /proc: the start
    refuses it (the image's contents are only known then)."""
    private = tmp_path / "root"
    shutil.copytree(rootfs, private, symlinks=True)
    (private / "data").symlink_to(link)
    volume = tmp_path / "volume"
    volume.mkdir()
    box = rt.create(rootfs=private, volumes=[f"{volume}:/data"])
    with box, pytest.raises(boxlite_ffi.EngineError, match="reserved"):
        box.start()


@pytest.mark.parametrize("network", [False, True])
def test_the_hosts_sockets_stay_out_of_reach(rt: boxlite_ffi.Runtime, network: bool) -> None:
    """Neither the agent's socket (a path outside the box's root) nor the
    host's abstract unix sockets (its network namespace has its own), with
    or without network=True."""
    with socket.socket(socket.AF_UNIX) as host, rt.create("host", network=network) as box:
        name = f"\0boxlite-test-{os.getpid()}"
        host.bind(name)
        host.listen()
        code = (
            "import socket, sys\n"
            "for where in sys.argv[1:]:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n"
            "        s.connect(where.replace('@', '\\0'))\n"
            "        print('connected')\n"
            "    except OSError as exc:\n"
            "        print(type(exc).__name__)\n"
        )
        agent_sock = str(box.directory / "agent.sock")
        result = box.run(["python3", "-c", code, "@" + name[1:], agent_sock])
        assert result.stdout.split() == [b"ConnectionRefusedError", b"FileNotFoundError"]
