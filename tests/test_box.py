"""Boxes on real namespaces: isolation, the writable layer, images, stop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

from procscan import box_processes

pytestmark = pytest.mark.parity


def sh(box: boxlite_ffi.Box, script: str) -> str:
    result = box.run(["sh", "-c", script])
    assert result.ok, result
    return result.stdout.decode()


def test_box_has_its_own_namespaces(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs, name="iso-box") as box:
        assert sh(box, "cat /proc/1/comm") == "boxlite-agent\n"
        assert sh(box, "hostname") == "iso-box\n"
        assert sh(box, "id -u") == "0\n"
        interfaces = sh(box, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").split()
        assert interfaces == ["lo"]
        pids = sh(box, "ls /proc | grep '^[0-9]'").split()
        assert len(pids) <= 5  # the agent, sh, ls, grep: nothing of the host


def test_box_sees_only_its_processes(box: boxlite_ffi.Box) -> None:
    out = sh(box, "for p in /proc/[0-9]*; do cat $p/comm; done")
    assert "boxlite-agent" in out.split()
    assert "pytest" not in out and "python3" not in out and "boxlite-shim" not in out


def test_minimal_dev_and_tmp(box: boxlite_ffi.Box) -> None:
    entries = set(sh(box, "ls -A /dev").split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"} <= entries
    assert not entries & {"sda", "vda", "mem", "kmsg", "kvm"}
    assert sh(box, "head -c 4 /dev/zero | od -An -tx1").split() == ["00"] * 4
    assert sh(box, "echo hi > /dev/null && echo ok") == "ok\n"
    assert sh(box, "stat -c %a /tmp") == "1777\n"
    assert sh(box, "grep -c ' /proc proc ' /proc/mounts") == "1\n"


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_image_is_read_only_under_a_writable_layer(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    before = sorted(p.name for p in (rootfs / "etc").iterdir())
    with rt.create(rootfs=rootfs) as box:
        sh(box, "echo changed > /etc/new-file; rm /etc/passwd; mkdir -p /srv/data")
        assert sh(box, "cat /etc/new-file; ls /etc/passwd 2>&1 || true") != ""
        assert (box.directory / "upper" / "etc" / "new-file").read_text() == "changed\n"
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == before
    assert (rootfs / "etc" / "passwd").exists()


def test_boxes_do_not_share_a_writable_layer(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs) as a, rt.create(rootfs=rootfs) as b:
        sh(a, "echo a > /root/mark")
        assert b.run(["cat", "/root/mark"]).exit_code != 0


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_box_from_an_oci_layout_honours_whiteouts(rt: boxlite_ffi.Runtime, oci_image: Path) -> None:
    with rt.create(oci_image) as box:
        assert sh(box, "cat /etc/motd") == "from the top layer\n"
        assert box.run(["cat", "/etc/removed"]).exit_code == 1
        assert sh(box, "ls /opt/app") == "new\n"  # the opaque dir hid "old"
        assert sh(box, "cat /opt/keep") == "kept\n"
    # The unpacked image is cached and reused by the next box.
    cached = list((rt.home / "images").iterdir())
    with rt.create(oci_image) as box:
        assert sh(box, "cat /opt/app/new") == "new\n"
    assert list((rt.home / "images").iterdir()) == cached


def test_exec_starts_the_box_and_start_is_idempotent(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs) as box:
        assert box.run(["true"]).ok
        box.start()
        box.start()
        assert box.run(["true"]).ok


def test_stop_terminates_everything_and_restart_works(box: boxlite_ffi.Box) -> None:
    box.start()
    execution = box.exec(["sh", "-c", "sleep 100 & sleep 100 & echo up; wait"])
    assert next(iter(execution.stdout)) == b"up\n"
    box.stop()
    result = execution.wait(timeout=10)
    assert result.outcome in (Outcome.SIGNALED, Outcome.LOST)
    assert box_processes() == []
    box.stop()  # stopping a stopped box succeeds
    with pytest.raises(boxlite_ffi.InvalidStateError) as refused:
        box.run(["true"])  # a stopped box is not started behind the caller's back
    assert refused.value.reason == "not_running"
    box.start()
    assert box.run(["echo", "again"]).stdout == b"again\n"


def test_a_stop_timeout_cuts_the_grace_short(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 1; done"])
    assert next(iter(execution.stdout)) == b"armed\n"
    started = time.monotonic()
    box.stop(timeout=0.5)  # the grace is 10 s
    assert time.monotonic() - started < 5
    assert execution.wait(timeout=5).outcome in (Outcome.SIGNALED, Outcome.LOST)
    assert box.status is boxlite_ffi.BoxStatus.STOPPED
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        box.stop(timeout=-1)


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_stop_kills_a_process_that_ignores_sigterm(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(rt.home.parent / "grace-home", stop_grace=0.5) as fast:
        box = fast.create(rootfs=rootfs)
        execution = box.exec(["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 1; done"])
        assert next(iter(execution.stdout)) == b"armed\n"
        started = time.monotonic()
        box.stop()
        assert time.monotonic() - started < 5
        assert execution.wait(timeout=5).outcome in (Outcome.SIGNALED, Outcome.LOST)


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_close_removes_the_box_directory(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs, name="short-lived")
    assert box.run(["touch", "/tmp/x", "/root/y"]).ok
    directory = box.directory
    assert directory.is_dir()
    box.close()
    assert not directory.exists()
    with pytest.raises(boxlite_ffi.NotFoundError):
        rt.get("short-lived")
    with pytest.raises(boxlite_ffi.InvalidStateError):
        box.exec(["true"])


def test_names_are_unique_and_validated(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs, name="alpha") as box:
        assert rt.get("alpha") is box and rt.get(box.id) is box
        with pytest.raises(boxlite_ffi.AlreadyExistsError):
            rt.create(rootfs=rootfs, name="alpha")
    for bad in ("", "-x", "a b", "x" * 65, "a/b"):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            rt.create(rootfs=rootfs, name=bad)


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_bad_sources_give_typed_errors(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path
) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create()
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create(tmp_path, rootfs=rootfs)
    with pytest.raises(boxlite_ffi.NotFoundError):
        rt.create(rootfs=tmp_path / "missing")
    with pytest.raises(boxlite_ffi.ImageError):
        rt.create(tmp_path / "missing")
    with pytest.raises(boxlite_ffi.ImageError):
        rt.create(tmp_path)  # a directory, but no OCI layout
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create(rootfs=rootfs, workdir="relative")
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create(rootfs=rootfs, env={"A=B": "c"})
    assert list((rt.home / "boxes").iterdir()) == []  # nothing left by refusals


BAD_CREATE_KEYWORDS = [
    {"workdir": 5},
    {"workdir": "/a\0b"},
    {"name": 5},
    {"cmd": "ls"},
    {"cmd": [5]},
    {"entrypoint": 5},
    {"env": 5},
    {"env": ["NOEQUALS"]},
    {"volumes": "/a:/b"},
    {"volumes": [5]},
    {"memory": object()},
    {"memory": "lots"},
    {"cpus": float("nan")},
    {"pids": -1},
    {"user": 5},
    {"disk": "1x"},
    {"tmp_size": -1},
    {"log_limit": "many"},
    {"network": "yes"},
]


@pytest.mark.local_only  # the box's directory, home or a path of the host
@pytest.mark.parametrize("keywords", BAD_CREATE_KEYWORDS, ids=repr)
def test_bad_create_keywords_are_invalid_arguments(
    rt: boxlite_ffi.Runtime, rootfs: Path, keywords: dict[str, object]
) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create(rootfs=rootfs, **keywords)  # type: ignore[arg-type]
    assert list((rt.home / "boxes").iterdir()) == []


@pytest.mark.local_only  # a rootfs outside the server's allowed directory
def test_a_rootfs_without_a_shell_still_runs_the_agent(
    rt: boxlite_ffi.Runtime, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with rt.create(rootfs=empty) as box:
        result = box.run(["/bin/sh", "-c", "true"])
        assert result.outcome is Outcome.FAILED_TO_START and result.exit_code == 127


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_close_while_starting(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    box = rt.create(rootfs=rootfs)
    starting = box.start_future()
    box.close()  # waits for the start, then stops and releases the box
    assert starting.done()
    assert not box.directory.exists()


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_a_box_that_cannot_start_names_the_failing_step(
    rt: boxlite_ffi.Runtime, tmp_path: Path
) -> None:
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    box = rt.create(rootfs=doomed)
    doomed.rmdir()  # the image vanishes before the box starts
    # Mounting it (or, for a root runtime, making its id-mapped clone) fails.
    with pytest.raises(boxlite_ffi.EngineError, match=r"mount overlay|doomed: No such file"):
        box.start()
    with pytest.raises(boxlite_ffi.EngineError):
        box.run(["true"])  # still cannot: every attempt reports it
    box.close()


@pytest.mark.local_only  # the box's directory, home or a path of the host
def test_rootfs_paths_that_overlay_cannot_express(rt: boxlite_ffi.Runtime, tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.create(rootfs=odd)
