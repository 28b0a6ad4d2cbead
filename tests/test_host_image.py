"""The built-in ``host`` image, volumes (host paths mounted into a box),
and the busybox image one-liner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import InvalidArgumentError, NotFoundError

from imagebuild import Entry, tar_bytes, tar_directory, write_layout


def test_host_python_runs_in_a_box_read_only(rt: boxlite_ffi.Runtime) -> None:
    with rt.create("host") as box:
        result = box.run(["python3", "-c", "import ssl, sys; print(sys.executable)"])
        assert result.ok, result.stderr
        assert result.stdout.strip().startswith(b"/usr/bin/python3")
        out = box.run(["sh", "-c", "touch /usr/x; echo $?; touch /etc/x; echo $?"]).stdout
        assert out == b"1\n0\n"  # /usr is the host's, read-only; /etc is the box's own
        assert not Path("/usr/x").exists()


def test_host_etc_holds_no_secrets(rt: boxlite_ffi.Runtime) -> None:
    with rt.create("host") as box:
        listing = box.run(["find", "/etc"]).stdout.decode().split()
        for secret in (
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/ssh",
            "/etc/sudoers",
            "/etc/machine-id",
        ):
            assert secret not in listing
        assert not any("/etc/ssl/private" in p for p in listing)
        assert box.run(["cat", "/etc/passwd"]).stdout.startswith(b"root:x:0:0:")
        home = box.run(["ls", "-A", "/root", "/home"]).stdout
        assert home == b"/home:\n\n/root:\n"  # the host's homes stay out


def test_the_host_layer_is_made_once_per_host_state(rt: boxlite_ffi.Runtime) -> None:
    for _ in range(2):
        with rt.create("host") as box:
            assert box.run(["true"]).ok
    assert len(list((rt.home / "images" / "host").iterdir())) == 1
    with rt.create("host") as box:
        box.start()
        rt.images.prune()  # a layer a box runs on stays
        assert len(list((rt.home / "images" / "host").iterdir())) == 1
    rt.images.prune()
    assert list((rt.home / "images" / "host").iterdir()) == []


def test_volumes(rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path) -> None:
    shared, single = tmp_path / "shared", tmp_path / "config.txt"
    shared.mkdir()
    single.write_text("one file\n")
    volumes = [f"{shared}:/data", (str(single), "/etc/app/config.txt", "ro")]
    with rt.create(rootfs=rootfs, volumes=volumes) as box:
        script = "echo written > /data/out; cat /etc/app/config.txt; echo x >> /etc/app/config.txt"
        result = box.run(["sh", "-c", script])
        assert result.stdout == b"one file\n" and b"Read-only" in result.stderr
    assert (shared / "out").read_text() == "written\n"
    assert single.read_text() == "one file\n"


def test_volumes_are_mounted_in_the_order_given_whatever_their_mode(
    rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path
) -> None:
    """A volume inside another is mounted after it, so it shows: a read-only
    outer one listed first must not hide a writable inner one."""
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "sub").mkdir(parents=True)
    inner.mkdir()
    (outer / "from-outer").write_text("o\n")
    (inner / "from-inner").write_text("i\n")
    volumes = [(str(outer), "/data", "ro"), f"{inner}:/data/sub"]
    with rt.create(rootfs=rootfs, volumes=volumes) as box:
        seen = box.run(["sh", "-c", "cat /data/from-outer /data/sub/from-inner"]).stdout
        assert seen == b"o\ni\n"
        assert box.run(["touch", "/data/sub/written"]).ok
    assert (inner / "written").exists()


def test_a_volume_target_cannot_follow_the_images_symlinks_out(
    rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path
) -> None:
    """Symlinks of the image are followed inside the box's root, as if it
    were "/": never onto the host's paths of the same names."""
    victim = tmp_path / "victim"
    victim.mkdir()
    links = [
        Entry("mnt", "symlink", target="/etc"),
        Entry("up", "symlink", target="../../.."),
        Entry("away", "symlink", target=str(victim)),
    ]
    layout = write_layout(tmp_path / "layout", [tar_directory(rootfs), tar_bytes(links)])
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("mounted\n")
    with rt.create(layout, volumes=[f"{source}:/mnt/inside", f"{source}:/up/x"]) as box:
        assert box.run(["cat", "/etc/inside/file", "/x/file"]).stdout == b"mounted\n" * 2
    assert not Path("/etc/inside").exists() and not Path("/x").exists()
    # A target under a link to a path the box does not have is refused.
    box = rt.create(layout, volumes=[f"{source}:/away/x"])
    with pytest.raises(boxlite_ffi.EngineError, match="bind target"):
        box.start()
    box.remove(force=True)
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize(
    "volume",
    ["/nonexistent-source:/x", "/tmp:relative", "/tmp:/", "/tmp:/x:rx", "/tmp", "a:b:c:d"],
)
def test_bad_volumes(rt: boxlite_ffi.Runtime, rootfs: Path, volume: str) -> None:
    with pytest.raises((InvalidArgumentError, NotFoundError)):
        rt.create(rootfs=rootfs, volumes=[volume])
    assert rt.list() == []


def test_no_volumes(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    with rt.create(rootfs=rootfs, volumes=None) as box:
        assert box.run(["true"]).ok


def test_the_busybox_one_liner(rt: boxlite_ffi.Runtime, tmp_path: Path) -> None:
    out = tmp_path / "busybox-oci"
    subprocess.run([sys.executable, "-P", "-m", "boxlite_ffi.image.busybox", str(out)], check=True)
    (info,) = rt.images.load(out)
    assert info.tags == ("busybox:latest",) and info.config.cmd == ("sh",)
    with rt.create("busybox") as box:
        assert box.run(["busybox", "echo", "hi"]).stdout == b"hi\n"
