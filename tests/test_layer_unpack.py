"""Unpacking OCI layers: whiteouts, opaque dirs, and archives that try to
write outside the root filesystem."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from boxlite_ffi import ImageError, oci_layout
from boxlite_ffi.layer_unpack import apply_layer, resolve_in_root

from imagebuild import Entry, tar_bytes, write_layout


def apply(root: Path, *entries: Entry) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(entries))) as tar:
        return apply_layer(root, tar)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_text("host secret\n")
    return o


def test_layers_apply_in_order_with_whiteouts(root: Path) -> None:
    apply(
        root,
        Entry("a", "dir"),
        Entry("a/one", data=b"1"),
        Entry("a/two", data=b"2"),
        Entry("b", "dir"),
        Entry("b/x", data=b"x"),
        Entry("c", data=b"c"),
    )
    apply(
        root,
        Entry("a/.wh.one"),
        Entry("b/.wh..wh..opq"),
        Entry("b/y", data=b"y"),
        Entry("c", data=b"replaced"),
    )
    assert sorted(p.name for p in (root / "a").iterdir()) == ["two"]
    assert sorted(p.name for p in (root / "b").iterdir()) == ["y"]
    assert (root / "c").read_bytes() == b"replaced"
    assert not list(root.rglob(".wh.*"))


def test_file_replaces_directory_and_symlink(root: Path) -> None:
    apply(
        root, Entry("d", "dir"), Entry("d/inner", data=b"i"), Entry("l", "symlink", target="/etc")
    )
    apply(root, Entry("d", data=b"now a file"), Entry("l", data=b"now a file too"))
    assert (root / "d").read_bytes() == b"now a file"
    assert not (root / "l").is_symlink()


def test_symlinks_resolve_inside_the_root(root: Path, outside: Path) -> None:
    apply(
        root,
        Entry("usr", "dir"),
        Entry("usr/lib", "dir"),
        Entry("lib", "symlink", target="/usr/lib"),
    )
    apply(root, Entry("lib/libc.so", data=b"elf"))
    assert (root / "usr" / "lib" / "libc.so").read_bytes() == b"elf"
    assert resolve_in_root(root, "lib/../../../x") == "x"


def test_writes_through_a_symlink_stay_inside(root: Path, outside: Path) -> None:
    apply(root, Entry("escape", "symlink", target=str(outside)))
    apply(root, Entry("escape/secret", data=b"overwritten"))
    assert (outside / "secret").read_text() == "host secret\n"
    apply(root, Entry("up", "symlink", target="../../../../.."))
    apply(root, Entry("up/etc-file", data=b"x"))
    assert (root / "etc-file").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/abs-evil"])
def test_dotdot_and_absolute_names_stay_inside(root: Path, name: str) -> None:
    apply(root, Entry(name, data=b"evil"))
    assert not (root.parent / "evil").exists()
    assert not Path("/abs-evil").exists()


def test_hardlink_outside_the_root_is_contained(root: Path, outside: Path) -> None:
    with pytest.raises(ImageError):
        apply(root, Entry("h", "hardlink", target="../outside/secret"))
    assert (outside / "secret").read_text() == "host secret\n"


def test_device_nodes_are_skipped(root: Path) -> None:
    skipped = apply(root, Entry("dev", "dir"), Entry("dev/null", "chardev"), Entry("fifo", "fifo"))
    assert skipped == 2
    assert list((root / "dev").iterdir()) == []


def test_whiteout_cannot_delete_outside(root: Path, outside: Path) -> None:
    apply(root, Entry("link", "symlink", target=str(outside)))
    apply(root, Entry("link/.wh.secret"), Entry("../.wh.outside"))
    assert (outside / "secret").exists()


def test_layout_digest_mismatch_is_an_image_error(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", [tar_bytes([Entry("f", data=b"ok")])])
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="does not match"):
        oci_layout.unpack(layout, tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("sha256-*"))


def test_layout_without_amd64_manifest(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", [tar_bytes([Entry("f")])])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "arm64"}
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="amd64"):
        oci_layout.unpack(layout, tmp_path / "cache")


def test_uncompressed_layers_unpack(tmp_path: Path) -> None:
    layout = write_layout(
        tmp_path / "layout", [tar_bytes([Entry("hello", data=b"hi")])], compress=False
    )
    rootfs = oci_layout.unpack(layout, tmp_path / "cache")
    assert (rootfs / "hello").read_bytes() == b"hi"
