"""Copying files into and out of boxes: tar streams through the agent's own
helper, modes and mtimes kept, and nothing landing outside its destination."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

import boxlite_ffi

LONG = "l" * 150  # past the 100 bytes of a tar header's name field

pytestmark = pytest.mark.parity


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "plain").write_bytes(b"plain\n")
    (tree / "script").write_bytes(b"#!/bin/sh\necho ran\n")
    (tree / "sub" / "binary").write_bytes(bytes(range(256)) * 64)
    (tree / "sub" / "deeper" / LONG).write_bytes(b"long name\n")
    (tree / "sub" / "naïve ünïcode").write_bytes(b"u\n")
    (tree / "link").symlink_to("sub/binary")
    os.chmod(tree / "plain", 0o640)
    os.chmod(tree / "script", 0o755)
    os.chmod(tree / "sub", 0o750)
    for i, path in enumerate(sorted(tree.rglob("*"))):
        os.utime(path, (1_000_000_000 + i, 1_000_000_000 + i), follow_symlinks=False)
    os.utime(tree, (999_999_999, 999_999_999))
    return tree


def snapshot(top: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry: mode, mtime (whole seconds), and content or link target.
    (tarfile does not set a symlink's own mtime on the host: left out.)"""
    entries = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        if path.is_symlink():
            entries[str(path.relative_to(top.parent))] = (st.st_mode, 0, os.readlink(path).encode())
            continue
        elif path.is_file():
            body = path.read_bytes()
        else:
            body = b""
        entries[str(path.relative_to(top.parent))] = (st.st_mode, int(st.st_mtime), body)
    return entries


def test_a_tree_round_trips_with_modes_and_mtimes(box: boxlite_ffi.Box, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    box.copy_in(tree, "/data/in")
    assert box.run(["/data/in/tree/script"]).stdout == b"ran\n"
    for name in ["plain", "link"]:  # in the box, a symlink keeps its own mtime too
        listing = box.run(["stat", "-c", "%a %Y", f"/data/in/tree/{name}"]).stdout.split()
        st = (tree / name).lstat()
        assert listing == [f"{st.st_mode & 0o777:o}".encode(), str(int(st.st_mtime)).encode()]
    box.copy_out("/data/in/tree", tmp_path / "out")
    assert snapshot(tmp_path / "out" / "tree") == snapshot(tree)


def test_single_files_and_large_ones(box: boxlite_ffi.Box, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 << 20))
    box.copy_in(big, "/tmp")
    inside = box.run(["sha256sum", "/tmp/big.bin"]).stdout.split()[0].decode()
    assert inside == hashlib.sha256(big.read_bytes()).hexdigest()
    box.run(["sh", "-c", "printf made-inside > /tmp/small"])
    box.copy_out("/tmp/small", tmp_path / "back")
    assert (tmp_path / "back" / "small").read_bytes() == b"made-inside"


def test_copy_out_refuses_links_that_leave_the_destination(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    for target in ["/etc/passwd", "../../../../../etc/passwd"]:
        box.run(["sh", "-c", f"rm -rf /tmp/evil; mkdir /tmp/evil; ln -s {target} /tmp/evil/x"])
        with pytest.raises(boxlite_ffi.UnsafePathError):
            box.copy_out("/tmp/evil", tmp_path / "dest")
    assert not (tmp_path / "dest" / "evil" / "x").exists()


def test_copy_in_refuses_links_that_leave_the_destination(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "out").symlink_to("/etc/passwd")
    with pytest.raises(boxlite_ffi.UnsafePathError, match="outside"):
        box.copy_in(tree, "/data")


def test_copy_in_does_not_write_through_a_symlink_planted_in_the_box(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    before = box.run(["cat", "/etc/passwd"]).stdout
    box.run(["sh", "-c", "mkdir -p /data && ln -s /etc /data/conf"])
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "passwd").write_bytes(b"owned\n")
    with pytest.raises(boxlite_ffi.UnsafePathError):
        box.copy_in(tmp_path / "conf", "/data")
    assert box.run(["cat", "/etc/passwd"]).stdout == before


def hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"" if kind != tarfile.REGTYPE else b"escaped\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        hostile("../escaped"),
        hostile("a/../../escaped"),
        hostile("/data/escaped"),
        hostile("h", tarfile.LNKTYPE, "../escaped"),
        hostile("s", tarfile.SYMTYPE, "../escaped"),
        hostile("fifo", tarfile.FIFOTYPE),
        b"\x01" * 1024,  # garbage
    ],
)
def test_the_helper_refuses_hostile_archives(box: boxlite_ffi.Box, archive: bytes) -> None:
    box.run(["sh", "-c", "rm -rf /data; mkdir -p /data/d"])
    result = box.run(["/proc/1/exe", "copy-in", "/data/d"], input=archive)
    assert result.exit_code in (2, 3), result
    assert box.run(["ls", "/data"]).stdout == b"d\n"


def test_missing_sources_are_typed_errors(box: boxlite_ffi.Box, tmp_path: Path) -> None:
    with pytest.raises(boxlite_ffi.NotFoundError):
        box.copy_in(tmp_path / "nope", "/data")
    with pytest.raises(boxlite_ffi.SystemCallError, match="No such file"):
        box.copy_out("/no/such/file", tmp_path)


@pytest.mark.local_only  # a host volume
@pytest.mark.parametrize(
    ("path", "kind"),
    [("/dev/zero", "character device"), ("/data/fifo", "fifo"), ("/vol/sock", "socket")],
)
def test_copy_out_of_a_special_file_is_refused_naming_it(
    rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path, path: str, kind: str
) -> None:
    """/dev/zero would stream forever; a fifo blocks; none is file content.
    (Before: success, and nothing copied.)"""
    vol = tmp_path / "vol"
    vol.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(vol / "sock"))
        with rt.create(rootfs=rootfs, volumes=[(str(vol), "/vol")]) as box:
            box.run(["sh", "-c", "mkdir -p /data && mkfifo /data/fifo"])
            with pytest.raises(boxlite_ffi.InvalidArgumentError, match=f"{path} is an? {kind}"):
                box.copy_out(path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_special_files_inside_a_copied_directory_are_left_out(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    box.run(["sh", "-c", "mkdir -p /data/d && mkfifo /data/d/fifo && echo x > /data/d/file"])
    box.copy_out("/data/d", tmp_path)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["file"]


def test_a_read_error_fails_the_copy(box: boxlite_ffi.Box, tmp_path: Path) -> None:
    """A process's mem reports size 0 and reading it at offset 0 is EIO
    (the copy's own: the agent's, /proc/1/mem, is out of the box's reach).
    (Before: success, and an empty file.)"""
    with pytest.raises(boxlite_ffi.SystemCallError, match="mem: Input/output error"):
        box.copy_out("/proc/self/mem", tmp_path / "out")
    with pytest.raises(boxlite_ffi.SystemCallError, match="mem: Permission denied"):
        box.copy_out("/proc/1/mem", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_files_that_report_size_zero_are_copied_as_read(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    """/proc files say 0 bytes but have content: what read() gives is copied
    (before: an empty file)."""
    box.copy_out("/proc/self/status", tmp_path)
    status = (tmp_path / "status").read_bytes()
    assert status.startswith(b"Name:") and b"\nPid:" in status
    box.run(["sh", "-c", "mkdir -p /data && : > /data/empty"])
    box.copy_out("/data/empty", tmp_path)
    assert (tmp_path / "empty").read_bytes() == b""


def test_a_file_that_reports_size_zero_is_read_to_a_bound(
    box: boxlite_ffi.Box, tmp_path: Path
) -> None:
    """/proc/self/pagemap says 0 bytes and reads as the whole address space."""
    with pytest.raises(boxlite_ffi.SystemCallError, match="pagemap says it has 0 bytes"):
        box.copy_out("/proc/self/pagemap", tmp_path / "out")
