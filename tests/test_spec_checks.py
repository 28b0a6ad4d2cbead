"""``create`` refuses what ``start`` would: the box's description is checked by
the one check the shim runs on its command line (native/common/shim_spec.c),
so each case here is refused by ``create`` and by the real shim alike."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi._core.core import BoxConfig, Mount, VmConfig
from boxlite_ffi.home import libexec_dir

SHIM_STATUS_FD = 4  # native/common/shim_spec.h
SUN_PATH_MAX = 107  # bytes of a unix socket's path, its NUL aside


def shim_refusal(args: list[str]) -> str:
    """The status line of the installed shim given args, which it refuses."""
    read_end, write_end = os.pipe()
    conn, peer = socket.socketpair()
    with conn, peer, open(os.devnull, "rb") as null:
        shim = str(libexec_dir() / "boxlite-shim")
        agent = str(libexec_dir() / "boxlite-agent")
        try:
            pid = os.posix_spawn(
                shim,
                [shim, "--agent", agent, *args],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
                    (os.POSIX_SPAWN_DUP2, null.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, null.fileno(), 2),
                    (os.POSIX_SPAWN_DUP2, peer.fileno(), 3),
                    (os.POSIX_SPAWN_DUP2, write_end, SHIM_STATUS_FD),
                ],
            )
        finally:
            os.close(write_end)
        with open(read_end, "rb") as status:
            line = status.read().decode()
        _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 2, line  # refused its arguments
    assert line.startswith("error "), line
    return line


def box_dir(parent: Path, name: str = "box") -> Path:
    """A box directory (boxlite_box_marker) as the runtime makes them."""
    path = parent / name
    path.mkdir(mode=0o700, parents=True)
    (path / ".boxlite-box").touch()
    return path


def refused_by_create(rt: boxlite_ffi.Runtime, config: BoxConfig) -> str:
    with pytest.raises(boxlite_ffi.InvalidArgumentError) as caught:
        rt.native.box_check(config)
    return caught.value.message


@pytest.mark.parametrize("char", ["\\", ",", ":"])
def test_rootfs_with_an_overlay_separator(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path, char: str
) -> None:
    weird = tmp_path / f"root{char}fs"
    weird.mkdir()
    with pytest.raises(boxlite_ffi.InvalidArgumentError) as caught:
        rt.create(rootfs=weird)
    assert str(weird) in caught.value.message
    assert rt.list() == []
    assert list((rt.home / "boxes").iterdir()) == []
    line = shim_refusal(["--box-dir", str(box_dir(tmp_path)), "--lower", str(weird)])
    assert caught.value.message in line
    rt.create(rootfs=rootfs).remove()  # the same runtime still creates boxes


def test_box_dir_too_long_for_the_agents_socket(tmp_path: Path, rootfs: Path) -> None:
    # <home>/boxes/<12 hex>/agent.sock is one byte past a unix socket path.
    boxes = len("/boxes/") + 12 + len("/agent.sock")
    home = tmp_path / ("h" * (SUN_PATH_MAX + 1 - boxes - len(str(tmp_path)) - 1))
    assert len(str(home)) + boxes == SUN_PATH_MAX + 1
    with boxlite_ffi.Runtime(home) as rt:
        with pytest.raises(boxlite_ffi.InvalidArgumentError) as caught:
            rt.create(rootfs=rootfs)
        assert "too long" in caught.value.message
        assert rt.list() == []
        assert list((home / "boxes").iterdir()) == []
    long_dir = box_dir(home / "boxes", "b" * 12)
    line = shim_refusal(["--box-dir", str(long_dir), "--lower", str(rootfs)])
    assert caught.value.message.split(": ", 1)[1] in line  # the same but for the path
    # One byte shorter fits, and the box runs.
    shorter = tmp_path / ("h" * (len(home.name) - 1))
    with boxlite_ffi.Runtime(shorter) as rt, rt.create(rootfs=rootfs) as box:
        assert box.run(["true"]).ok


def base_config(directory: Path, rootfs: Path) -> BoxConfig:
    return BoxConfig(directory, (rootfs,), "box", 0, 0, False)


# What the C API takes that the Python layer does not check itself.
CASES = {
    "relative layer": lambda c: dataclasses.replace(c, lowers=(Path("rootfs"),)),
    "mount on /proc": lambda c: dataclasses.replace(c, mounts=(Mount("/usr", "/proc/x"),)),
    "mount on /dev": lambda c: dataclasses.replace(c, mounts=(Mount("/usr", "/dev"),)),
    "mount on / by ..": lambda c: dataclasses.replace(c, mounts=(Mount("/usr", "/a/.."),)),
    "mount on /sys by ..": lambda c: dataclasses.replace(c, mounts=(Mount("/usr", "/a/../sys"),)),
    "relative mount source": lambda c: dataclasses.replace(c, mounts=(Mount("usr", "/x"),)),
    "hostname of 65": lambda c: dataclasses.replace(c, hostname="h" * 65),
    "relative network helper": lambda c: dataclasses.replace(c, network_helper="slirp4netns"),
    "relative disk image": lambda c: dataclasses.replace(c, disk_image="disk.img"),
}


def shim_args(config: BoxConfig) -> list[str]:
    """The command line the ns engine writes for config (the parts used here)."""
    args = ["--box-dir", str(config.directory), "--hostname", config.hostname]
    for lower in config.lowers:
        args += ["--lower", str(lower)]
    for mount in config.mounts:
        args += ["--bind-ro" if mount.readonly else "--bind", mount.source, mount.target]
    if config.network_helper is not None:
        args += ["--network", config.network_helper]
    if config.disk_image is not None:
        args += ["--disk-image", config.disk_image]
    return args


@pytest.mark.parametrize("case", sorted(CASES))
def test_create_and_the_shim_refuse_alike(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path, case: str
) -> None:
    config = CASES[case](base_config(box_dir(tmp_path), rootfs))
    message = refused_by_create(rt, config)
    assert message in shim_refusal(shim_args(config))


def test_what_is_accepted_is_accepted_by_both(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        base_config(box_dir(tmp_path), rootfs),
        hostname="h" * 64,
        mounts=(Mount("/usr", "/process"), Mount("/usr", "/devices/x")),
    )
    rt.native.box_check(config)  # no error
    rt.native.box_free(rt.native.box_new(config, owner_pid=0))


def test_shim_usage_lists_every_flag() -> None:
    usage = subprocess.run(
        [str(libexec_dir() / "boxlite-shim"), "--help"], capture_output=True, check=True
    ).stdout.decode()
    flags = {line.split()[0] for line in usage.splitlines()[1:]}
    written = {"--box-dir", "--agent", "--lower", "--bind", "--bind-ro", "--hostname"}
    assert written <= flags
    assert {"--memory", "--pids", "--cpu-millis", "--pids-optional", "--tmp-size"} <= flags
    assert {"--guest", "--guest-network", "--vm-qemu", "--vm-kernel-args"} <= flags  # one table
    assert len(flags) == 31


@pytest.mark.parametrize(("args", "said"), [("a\nb", "printable"), ("x" * 257, "longer than 256")])
def test_the_core_refuses_bad_vm_kernel_arguments(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path, args: str, said: str
) -> None:
    """What the Python layer refuses first, the C API refuses too."""
    vm = VmConfig("/usr/bin/qemu", "/k", "/i", None, "tcg", kernel_args=args)
    config = dataclasses.replace(
        base_config(box_dir(tmp_path), rootfs), disk_image=str(tmp_path / "disk"), vm=vm
    )
    assert said in refused_by_create(rt, config)
    rt.native.box_check(dataclasses.replace(config, vm=dataclasses.replace(vm, kernel_args="a=b")))
