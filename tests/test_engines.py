"""Box-level behaviour, once per engine: the namespace engine ("ns") and the
micro-VM engine ("vm", each box its own kernel under QEMU; emulated here).

A VM box takes seconds to boot under emulation, so the tests that allow it
share one box per engine (``shared``); the others make their own.  The
VM-only part at the end checks what only a kernel of the box's own gives:
its own kernel and kernel state, and a VM that dies is that box's loss alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_isolation import (
    ABSENT,
    KEPT,
    SYSCALLS,
    assert_agent_out_of_reach,
    probe,
)

import boxlite_ffi
from boxlite_ffi import BoxStatus, EngineError, InvalidArgumentError
from boxlite_ffi.execution import Outcome
from boxlite_ffi.home import libexec_dir
from boxlite_ffi.vm import engine as vm_engine
from boxlite_ffi.vm import find_kernel

from cli_driver import boxlite
from procscan import box_processes

ENGINES = ["ns", "vm"]


def vm_missing() -> str | None:
    try:
        vm_engine.find_qemu()
        find_kernel()
    except EngineError as exc:
        return str(exc)
    return None


# tests/run.sh provides QEMU and the kernel: CI must not skip the vm engine.
needs_vm = pytest.mark.skipif(
    vm_missing() is not None and not os.environ.get("CI"), reason=str(vm_missing())
)


@pytest.fixture(
    scope="module", params=[pytest.param(e, marks=needs_vm if e == "vm" else ()) for e in ENGINES]
)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines") / "home"


@pytest.fixture(scope="module")
def shared_rt(module_home: Path) -> Iterator[boxlite_ffi.Runtime]:
    with boxlite_ffi.Runtime(module_home) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def shared(
    shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path
) -> Iterator[boxlite_ffi.Box]:
    """One running box of the engine for the tests that may share it."""
    with shared_rt.create(oci_image, engine=engine, env={"FROM_CREATE": "1"}) as box:
        box.start()
        yield box


def run(box: boxlite_ffi.Box, script: str, **kw: object) -> boxlite_ffi.ExecResult:
    return box.run(["sh", "-c", script], **kw)  # type: ignore[arg-type]


# ---- executions ----


def test_output_env_cwd_and_exit_code(shared: boxlite_ffi.Box, engine: str) -> None:
    r = run(shared, "echo $FROM_CREATE $B; pwd; echo oops >&2; exit 3", env={"B": "2"}, cwd="/tmp")
    assert (r.outcome, r.exit_code) == (Outcome.EXITED, 3)
    assert r.stdout == b"1 2\n/tmp\n" and r.stderr == b"oops\n"
    assert shared.info().engine == engine


def test_a_rootfs_directory(shared_rt: boxlite_ffi.Runtime, engine: str, rootfs: Path) -> None:
    with shared_rt.create(rootfs=rootfs, engine=engine) as box:
        r = run(box, "echo written > /etc/new; cat /etc/new; ls /bin/busybox")
        assert r.stdout == b"written\n/bin/busybox\n"
        box.stop()
    assert not (rootfs / "etc" / "new").exists()  # used read-only, under the box's own layer


def test_a_user_other_than_root(shared: boxlite_ffi.Box) -> None:
    r = shared.run(["sh", "-c", "id -u; touch /root/x 2>/dev/null || echo denied"], user="65534")
    assert r.stdout == b"65534\ndenied\n"


def test_the_image_layers_with_their_whiteouts(shared: boxlite_ffi.Box) -> None:
    r = run(shared, "cat /etc/motd; ls /opt/app; test -e /etc/removed || echo removed")
    assert r.stdout == b"from the top layer\nnew\nremoved\n"


def test_a_tty(shared: boxlite_ffi.Box) -> None:
    ex = shared.exec(["sh", "-c", "tty; stty size"], tty=True, rows=30, cols=100)
    r = ex.wait(30)
    assert r.stdout.startswith(b"/dev/pts/") and b"30 100" in r.stdout


def test_stdin_byte_exact(shared: boxlite_ffi.Box) -> None:
    data = os.urandom(3 << 20)
    ex = shared.exec(["sha256sum"], stdin=True)
    ex.write_stdin(data)
    ex.close_stdin()
    r = ex.wait(60)
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_signals_and_timeouts(shared: boxlite_ffi.Box) -> None:
    ex = shared.exec(["sleep", "30"])
    time.sleep(0.3)
    ex.signal(signal.SIGINT)
    r = ex.wait(30)
    assert (r.outcome, r.signal, r.exit_code) == (Outcome.SIGNALED, signal.SIGINT, 130)
    r = shared.run(["sleep", "30"], timeout=0.5)
    assert r.outcome == Outcome.TIMED_OUT


def test_exit_does_not_wait_for_an_orphan_holding_stdout(shared: boxlite_ffi.Box) -> None:
    t = time.monotonic()
    r = run(shared, "(sleep 20; echo late) & echo early")
    assert r.stdout == b"early\n" and r.exit_code == 0
    assert time.monotonic() - t < 15


def test_ordered_output_of_a_slow_reader(shared: boxlite_ffi.Box) -> None:
    """More than every window on the way, read slowly: nothing lost, each
    stream in order, the two interleaved as they were written."""
    script = "for i in $(seq 1 3000); do echo o$i; echo e$i >&2; done; seq 1 200000"
    ex = shared.exec(["sh", "-c", script], ordered_output=True)
    out, err = bytearray(), bytearray()
    for n, chunk in enumerate(ex.output):
        (out if chunk.stream == "stdout" else err).extend(chunk.data)
        if n < 100:
            time.sleep(0.01)
    assert ex.wait(60).exit_code == 0
    first = b"".join(b"o%d\n" % i for i in range(1, 3001))
    assert bytes(out) == first + b"".join(b"%d\n" % i for i in range(1, 200001))
    assert bytes(err) == b"".join(b"e%d\n" % i for i in range(1, 3001))


def test_a_stream_of_64_mib(shared: boxlite_ffi.Box) -> None:
    r = run(shared, "head -c 67108864 /dev/zero", timeout=300)
    assert r.exit_code == 0 and r.stdout == bytes(64 << 20)


def test_copy_in_and_out(shared: boxlite_ffi.Box, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data").write_bytes(os.urandom(200_000))
    (src / "link").symlink_to("sub/data")
    shared.copy_in(src, "/tmp/in")
    r = run(shared, "sha256sum /tmp/in/tree/sub/data; readlink /tmp/in/tree/link")
    assert (
        r.stdout.split()[0].decode()
        == hashlib.sha256((src / "sub" / "data").read_bytes()).hexdigest()
    )
    assert r.stdout.split()[-1] == b"sub/data"
    out = tmp_path / "out"
    out.mkdir()
    shared.copy_out("/tmp/in/tree", out)
    assert (out / "tree" / "sub" / "data").read_bytes() == (src / "sub" / "data").read_bytes()


def test_an_execution_is_found_from_another_process(
    shared: boxlite_ffi.Box, module_home: Path
) -> None:
    ex = shared.exec(["sh", "-c", "sleep 1; echo from-the-box"])
    ex_id = ex.id
    ex.detach()  # it runs on, for whoever attaches next
    code = textwrap.dedent(
        f"""
        import json, boxlite_ffi
        with boxlite_ffi.Runtime({str(module_home)!r}) as rt:
            r = rt.get({shared.id!r}).execution({ex_id!r}).wait(60)
            print(json.dumps([r.exit_code, r.stdout.decode()]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[0, "from-the-box\\n"]'


def test_the_same_confinement(shared: boxlite_ffi.Box) -> None:
    """A vm box's processes are confined as a ns box's (the same shim builds
    both): bounded capabilities, no new privileges, the seccomp filter, and
    PID 1, their agent, out of their reach (not dumpable)."""
    status = run(shared, "cat /proc/self/status").stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bounding = int(fields["CapBnd"], 16)
    assert {bit for bit in range(64) if bounding >> bit & 1} == KEPT
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    script = (
        "for f in exe root cwd fd/0 fd/3; do readlink /proc/1/$f >/dev/null 2>&1 && echo $f; done"
    )
    script += "; for f in environ maps mem; do cat /proc/1/$f >/dev/null 2>&1 && echo $f; done"
    assert run(shared, script).stdout == b""
    assert run(shared, "cat /proc/1/comm").stdout == b"boxlite-agent\n"


def test_volumes_read_write_and_read_only(
    shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path, tmp_path: Path
) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given").write_text("from the host\n")
    volumes = [f"{rw}:/data", f"{ro}:/in:ro"]
    with shared_rt.create(oci_image, engine=engine, volumes=volumes) as box:
        r = run(
            box, "cat /in/given; echo made > /data/out; echo x > /in/no 2>/dev/null || echo refused"
        )
        assert r.stdout == b"from the host\nrefused\n"
        box.stop()
    assert (rw / "out").read_text() == "made\n" and not (ro / "no").exists()


@pytest.fixture(scope="module")
def host_box(shared_rt: boxlite_ffi.Runtime, engine: str) -> Iterator[boxlite_ffi.Box]:
    """A box of the host image (its python3 runs the escape probes)."""
    with shared_rt.create("host", engine=engine) as box:
        box.start()
        yield box


def test_the_escape_probes(host_box: boxlite_ffi.Box) -> None:
    """test_isolation's probes, in each engine: the system calls the filter
    refuses, and the agent out of reach of everything in the box."""
    assert probe(host_box, SYSCALLS) == {name: os.strerror(errno.EPERM) for name in SYSCALLS}
    assert probe(host_box, ABSENT) == {name: os.strerror(errno.ENOSYS) for name in ABSENT}
    assert_agent_out_of_reach(host_box)


# ---- boxes ----


def test_the_main_command_its_logs_and_exit(
    shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path
) -> None:
    script = "echo out; echo err >&2; seq 1 20000; exit 7"
    with shared_rt.create(oci_image, engine=engine, cmd=["sh", "-c", script]) as box:
        box.start()
        ended = box.wait(120)
        assert (ended.status, ended.exit_code) == (BoxStatus.EXITED, 7)
        logs = box.logs()
        assert logs.stdout == b"out\n" + b"".join(b"%d\n" % i for i in range(1, 20001))
        assert logs.stderr == b"err\n"


def test_the_writable_layer_survives_a_restart(
    shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path
) -> None:
    with shared_rt.create(oci_image, engine=engine) as box:
        run(box, "echo kept > /root/file; rm /etc/motd")
        box.stop()
        assert box.status == BoxStatus.STOPPED
        box.start()
        r = run(box, "cat /root/file; test -e /etc/motd || echo gone")
        assert r.stdout == b"kept\ngone\n"
        box.stop()
        box.remove()


def test_a_detached_box_is_found_by_the_next_runtime(
    home: Path, engine: str, oci_image: Path
) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.create(oci_image, engine=engine, detach=True, name="kept")
        ex = box.exec(["sh", "-c", "sleep 2; echo done"])
        ex_id = ex.id
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.get("kept")
        assert box.status == BoxStatus.RUNNING
        assert box.execution(ex_id).wait(60).stdout == b"done\n"
        assert run(box, "echo again").stdout == b"again\n"
        box.stop()
        box.remove()


def test_a_box_dies_with_its_owner(home: Path, engine: str, oci_image: Path) -> None:
    before = set(box_processes())
    code = textwrap.dedent(
        f"""
        import os, signal, boxlite_ffi
        rt = boxlite_ffi.Runtime({str(home)!r})
        box = rt.create({str(oci_image)!r}, engine={engine!r})
        box.start()
        print(box.shim_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    supervisor = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{supervisor}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{supervisor}")
    assert set(box_processes()) <= before


def test_auto_remove(shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path) -> None:
    box = shared_rt.create(oci_image, engine=engine, cmd=["true"], auto_remove=True)
    box.start()
    box.wait(120)
    deadline = time.monotonic() + 10
    while any(i.id == box.id for i in shared_rt.list()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(i.id != box.id for i in shared_rt.list())
    assert not (shared_rt.home / "boxes" / box.id).exists()


def test_the_cli_runs_a_box(home: Path, engine: str, oci_image: Path) -> None:
    before = set(box_processes())
    done = boxlite(
        home,
        "run",
        "--rm",
        "--engine",
        engine,
        str(oci_image),
        "sh",
        "-c",
        "echo hi; exit 4",
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (4, b"hi\n"), done.stderr
    assert set(box_processes()) <= before


def test_limits(shared_rt: boxlite_ffi.Runtime, engine: str, oci_image: Path) -> None:
    limits = {"memory": "256m", "cpus": 2, "pids": 40, "disk": "64m"}
    with shared_rt.create(oci_image, engine=engine, **limits) as box:  # type: ignore[arg-type]
        full = run(box, "dd if=/dev/zero of=/root/big bs=1M count=100 2>&1; rm /root/big")
        assert b"No space left" in full.stdout, full
        r = run(box, "for i in $(seq 60); do sleep 2 & done; echo all-started")
        assert b"all-started" not in r.stdout and b"fork" in r.stderr.lower(), r
        time.sleep(2.5)  # the box lives on once its processes end
        assert run(box, "echo alive").stdout == b"alive\n"
        if engine == "vm":  # the guest's RAM and vCPUs
            mem = run(box, "grep MemTotal /proc/meminfo").stdout.split()[1]
            assert 150 << 10 < int(mem) <= 256 << 10
            assert run(box, "nproc").stdout == b"2\n"
            # QEMU itself is bounded on the host: the RAM and emulation's overhead.
            said = (box.directory / "shim.log").read_text()
            assert "QEMU bounded to 512 MiB (guest RAM 256 + 256)" in said
            (memory,) = [
                ln.split()[1]
                for ln in (box.directory / "cgroups").read_text().splitlines()
                if ln.startswith("memory ")
            ]
            qemu = [int(p) for p in Path(memory, "cgroup.procs").read_text().split()]
            assert [_ppid(p) for p in qemu] == [box.shim_pid]
        box.stop()


def reach(box: boxlite_ffi.Box, port: int, *addresses: str) -> dict[str, str]:
    """What the box reads from each address's port (busybox nc), or ''.
    nc's stdin stays open until the server has spoken: the vm engine's passt
    (Debian 12's) loses a reply to a connection whose client half-closed."""
    script = "; ".join(f"echo {a}=$(sleep 2 | timeout 10 nc -w 3 {a} {port})" for a in addresses)
    lines = run(box, script, timeout=60).stdout.decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize("loopback", [False, True])
def test_outbound_network_and_the_hosts_loopback(
    shared_rt: boxlite_ffi.Runtime,
    engine: str,
    oci_image: Path,
    host_server: tuple[str, int],
    loopback: bool,
) -> None:
    address, port = host_server
    with shared_rt.create(oci_image, engine=engine, network=True, host_loopback=loopback) as box:
        seen = reach(box, port, address, "10.0.2.2", "127.0.0.1")
        box.stop()
    hello = "hello from the host"
    assert seen == {address: hello, "10.0.2.2": hello if loopback else "", "127.0.0.1": ""}


def test_no_network_without_asking(shared: boxlite_ffi.Box, host_server: tuple[str, int]) -> None:
    address, port = host_server
    assert reach(shared, port, address, "10.0.2.2") == {address: "", "10.0.2.2": ""}


# ---- the vm engine only ----


vm_only = pytest.mark.parametrize("engine", [pytest.param("vm", marks=needs_vm)], indirect=True)


@vm_only
def test_the_box_has_a_kernel_of_its_own(shared: boxlite_ffi.Box) -> None:
    r = run(
        shared, "uname -r; cat /proc/version; cat /proc/modules | cut -d' ' -f1; ps -o pid,comm"
    )
    lines = r.stdout.decode().splitlines()
    assert lines[0] != os.uname().release and "Debian" in lines[1]
    assert lines[1] != Path("/proc/version").read_text().strip()
    # The guest's own modules (the host's kernel may have none at all).
    assert "virtio_console" in lines[2:]
    assert "boxlite-vmm" not in r.stdout.decode() and "pytest" not in r.stdout.decode()
    assert shared.info().accelerator in ("kvm", "tcg")
    said = (shared.directory / "shim.log").read_text()
    assert f"accel {shared.info().accelerator}" in said


@vm_only
def test_a_vm_that_dies_ends_only_its_box(
    shared_rt: boxlite_ffi.Runtime, shared: boxlite_ffi.Box, oci_image: Path
) -> None:
    with shared_rt.create(oci_image, engine="vm") as box:
        box.start()
        vmm = box.shim_pid
        qemu = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == vmm]
        assert qemu, "no QEMU under the box's supervisor"
        os.kill(qemu[0], signal.SIGKILL)  # what a guest's kernel panic comes to (panic=-1)
        ended = box.wait(60)
        assert ended.status == BoxStatus.LOST, ended
    assert run(shared, "echo alive").stdout == b"alive\n"


@vm_only
def test_a_kernel_panic_ends_only_its_box(
    engine: str, home: Path, shared: boxlite_ffi.Box, oci_image: Path
) -> None:
    """A real panic of the guest's kernel (told to panic on running out of
    memory, which the box then does): the box is lost, its log says why,
    other boxes run on, and nothing of the VM is left."""
    with boxlite_ffi.Runtime(home, vm_kernel_args="sysctl.vm.panic_on_oom=2") as rt:
        box = rt.create(oci_image, engine="vm", memory="128m")
        assert box.info().config["vm"]["kernel_args"] == "sysctl.vm.panic_on_oom=2"
        box.start()
        vmm = box.shim_pid
        qemu = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == vmm]
        # Lines without end, held whole: each allocation alone fits, all do not.
        hog = box.exec(["sh", "-c", "for i in 1 2 3 4; do tail /dev/zero & done; wait"])
        ended = box.wait(120)
        assert hog.wait(10).outcome == Outcome.LOST
        assert ended.status == BoxStatus.LOST and "boxlite-vmm" in str(ended.reason), ended
        assert (
            "Kernel panic - not syncing: Out of memory" in (box.directory / "shim.log").read_text()
        )
        assert qemu and not any(_alive(pid) for pid in (vmm, *qemu))
        box.remove()
    assert run(shared, "echo alive").stdout == b"alive\n"


@needs_vm
@pytest.mark.parametrize("args", ["a\nb", "x" * 257, "\u00e9", 7])
def test_bad_kernel_arguments_are_refused(home: Path, args: object) -> None:
    with pytest.raises(InvalidArgumentError, match="vm_kernel_args"):
        boxlite_ffi.Runtime(home, vm_kernel_args=args)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


@vm_only
def test_what_the_vm_engine_refuses(
    engine: str, shared_rt: boxlite_ffi.Runtime, rootfs: Path, oci_image: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match="directories"):
        shared_rt.create(oci_image, engine="vm", volumes=[f"{rootfs}/bin/busybox:/data"])
    with pytest.raises(InvalidArgumentError, match="memory"):
        shared_rt.create(oci_image, engine="vm", memory="64m")
    with pytest.raises(InvalidArgumentError, match="engine"):
        shared_rt.create(oci_image, engine="xen")
    with pytest.raises(InvalidArgumentError, match="accel"):
        shared_rt.create(oci_image, engine="vm", accel="hvf")


@vm_only
def test_kvm_that_cannot_run_a_guest_is_a_typed_error(
    shared_rt: boxlite_ffi.Runtime, shared: boxlite_ffi.Box, oci_image: Path
) -> None:
    if shared.info().accelerator == "kvm":
        pytest.skip("KVM runs guests on this machine")
    with pytest.raises(EngineError, match="kvm"):
        shared_rt.create(oci_image, engine="vm", accel="kvm")
    assert "emulation" in shared.info().config["vm"]["accel_reason"]


@vm_only
def test_the_accelerator_probe_is_the_users_not_a_homes(
    engine: str, tmp_path: Path, oci_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second home asks the user's cache, not KVM again; a user whose
    cache directory cannot be made keeps the answers in the home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reasons = []
    for name in ("one", "two"):
        with boxlite_ffi.Runtime(tmp_path / name) as rt:
            reasons.append(rt.create(oci_image, engine="vm").info().config["vm"]["accel_reason"])
        assert not (tmp_path / name / vm_engine.BOOT_CACHE / "accel.json").exists()
    assert reasons[0] == reasons[1]
    if Path("/dev/kvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert (tmp_path / "cache" / "boxlite" / "accel.json").is_file()
        (tmp_path / "file").touch()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # no directory there
        with boxlite_ffi.Runtime(tmp_path / "three") as rt:
            assert (
                rt.create(oci_image, engine="vm").info().config["vm"]["accel_reason"] == reasons[0]
            )
        assert (tmp_path / "three" / vm_engine.BOOT_CACHE / "accel.json").is_file()


@needs_vm
def test_the_default_engine(home: Path, oci_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_ENGINE", "vm")
    with boxlite_ffi.Runtime(home) as rt:
        assert rt.create(oci_image).info().engine == "vm"
    with boxlite_ffi.Runtime(home, engine="ns") as rt:
        assert rt.create(oci_image).info().engine == "ns"
    monkeypatch.setenv("BOXLITE_ENGINE", "bhyve")
    with pytest.raises(InvalidArgumentError, match="bhyve"):
        boxlite_ffi.Runtime(home)


@vm_only
def test_a_kernel_the_user_names(engine: str, home: Path, oci_image: Path) -> None:
    kernel = find_kernel()
    assert kernel.modules is not None
    with boxlite_ffi.Runtime(home, vm_kernel=kernel.modules.parent.parent.parent) as rt:
        vm = rt.create(oci_image, engine="vm").info().config["vm"]
        assert vm["kernel"] == str(kernel.vmlinuz) and vm["kernel_release"] == kernel.release
    with (
        boxlite_ffi.Runtime(home, vm_kernel=home / "no-such-kernel") as rt,
        pytest.raises(EngineError, match="no-such-kernel"),
    ):
        rt.create(oci_image, engine="vm")


def _uids(pid: int) -> set[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [ln for ln in status.splitlines() if ln.startswith("Uid:")]
    return {int(u) for u in line.split()[1:]}


@vm_only
@pytest.mark.skipif(os.geteuid() != 0, reason="a root runtime's QEMU drops its ids")
def test_qemu_runs_as_an_id_of_its_own(shared: boxlite_ffi.Box) -> None:
    (qemu,) = [
        int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == shared.shim_pid
    ]
    assert 0 not in _uids(qemu)


@vm_only
@pytest.mark.skipif(
    not Path("/dev/kvm").exists() or os.geteuid() != 0, reason="needs /dev/kvm, root"
)
def test_under_kvm_qemu_is_unprivileged_too(shared: boxlite_ffi.Box) -> None:
    """Its own /dev/kvm node (the same device) in its mount namespace: KVM
    without root, whether or not the host's node is open to anyone but root."""
    vm = shared.info().config["vm"]
    vmm = str(libexec_dir() / "boxlite-vmm")
    probe = subprocess.Popen(
        [vmm, "probe", vm["qemu"], vm["kernel"], vm["initrd"], "kvm", "4000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 3
        held: list[str] = []
        while not held and time.monotonic() < deadline:
            for p in os.listdir("/proc"):
                if p.isdigit() and _ppid(int(p)) == probe.pid:
                    with contextlib.suppress(OSError):
                        fds = [
                            os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")
                        ]
                        if any("kvm-vm" in f for f in fds):
                            held.append(p)
                            assert 0 not in _uids(int(p))
            time.sleep(0.05)
    finally:
        _, err = probe.communicate(timeout=30)
    assert b"Permission denied" not in err
    # Seen holding its VM, or (real KVM) booted and gone before a look.
    assert held or probe.returncode == 0, err


UNPRIVILEGED_VM = """
import os, boxlite_ffi
boxlite_ffi.preload()  # while the interpreter's files are readable
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
with boxlite_ffi.Runtime({home!r}) as rt:
    box = rt.create({layout!r}, engine="vm")
    r = box.run(["sh", "-c", "id -u; stat -c %u /etc/motd; echo kept > /root/f"])
    box.stop()
    box.start()
    print(r.stdout.decode() + box.run(["cat", "/root/f"]).stdout.decode(), end="")
    box.stop()
"""


@vm_only
@pytest.mark.skipif(os.geteuid() != 0, reason="becoming nobody needs root")
def test_an_unprivileged_runtimes_vm_box(engine: str, oci_image: Path) -> None:
    """The image's files (the runtime's uid on its root image) are root's in
    the box; its writable layer is the box's root's, and survives a restart."""
    # Outside pytest's root-only temporary directory, where nobody can reach.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"boxlite-vm-nobody-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        shutil.copytree(oci_image, base / "layout")
        shutil.copytree(libexec_dir(), base / "libexec")  # the installed ones may be in root's home
        for path in [base, *base.rglob("*")]:
            os.lchown(path, 65534, 65534)
        script = UNPRIVILEGED_VM.format(home=str(base / "home"), layout=str(base / "layout"))
        env = {**os.environ, "BOXLITE_LIBEXEC": str(base / "libexec")}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
        )
    finally:
        shutil.rmtree(base)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n0\nkept\n"
