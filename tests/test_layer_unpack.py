"""Unpacking OCI layers into overlayfs layer directories: whiteouts, opaque
dirs, links, and archives that try to write outside the root filesystem.
Each result is checked as the box sees it: through a real overlay mount."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import boxlite_ffi
from boxlite_ffi import DigestMismatchError, ImageError, ImageReason, ImageTooLargeError
from boxlite_ffi.image.unpack import UnpackLimits, unpack_layer

from imagebuild import Entry, tar_bytes, write_layout
from overlay_view import merged_view

try:
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]


class Stack:
    """Layers unpacked one over another, as the image cache does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers: list[Path] = []  # bottom first
        self.made = 0

    def add(self, *entries: Entry, blob: bytes | None = None, diff_id: str | None = None) -> int:
        raw = tar_bytes(entries)
        top = self.root / f"layer{self.made}"
        self.made += 1
        top.mkdir()
        skipped = unpack_layer(
            io.BufferedReader(io.BytesIO(blob if blob is not None else raw)),  # type: ignore[arg-type]
            top,
            list(reversed(self.layers)),
            diff_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        )
        self.layers.append(top)
        return skipped

    def view(self) -> dict[str, tuple[str, ...]]:
        return merged_view(list(reversed(self.layers)))


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    (tmp_path / "layers").mkdir()
    return Stack(tmp_path / "layers")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_text("host secret\n")
    return o


def test_layers_apply_in_order_with_whiteouts(stack: Stack) -> None:
    stack.add(
        Entry("a", "dir"),
        Entry("a/one", data=b"1"),
        Entry("a/two", data=b"2"),
        Entry("b", "dir"),
        Entry("b/x", data=b"x"),
        Entry("c", data=b"c"),
    )
    stack.add(
        Entry("a/.wh.one"),
        Entry("b/.wh..wh..opq"),
        Entry("b/y", data=b"y"),
        Entry("c", data=b"replaced"),
    )
    assert stack.view() == {
        "a": ("dir",),
        "a/two": ("file", "2"),
        "b": ("dir",),
        "b/y": ("file", "y"),
        "c": ("file", "replaced"),
    }


def test_whiteout_then_recreate_in_one_layer_hides_the_old_contents(stack: Stack) -> None:
    stack.add(Entry("d", "dir"), Entry("d/old", data=b"o"))
    stack.add(Entry(".wh.d"), Entry("d", "dir"), Entry("d/new", data=b"n"))
    assert stack.view() == {"d": ("dir",), "d/new": ("file", "n")}


def test_file_replaces_directory_and_symlink(stack: Stack) -> None:
    stack.add(Entry("d", "dir"), Entry("d/inner", data=b"i"), Entry("l", "symlink", target="/etc"))
    stack.add(Entry("d", data=b"now a file"), Entry("l", data=b"now a file too"))
    assert stack.view() == {"d": ("file", "now a file"), "l": ("file", "now a file too")}


def test_symlinks_resolve_in_the_merged_view(stack: Stack) -> None:
    stack.add(
        Entry("usr", "dir", mode=0o751),
        Entry("usr/lib", "dir"),
        Entry("lib", "symlink", target="/usr/lib"),
    )
    stack.add(Entry("lib/libc.so", data=b"elf"))
    assert stack.view()["usr/lib/libc.so"] == ("file", "elf")
    assert stack.view()["lib"] == ("link", "/usr/lib")
    copied_up = stack.layers[1] / "usr"
    assert copied_up.is_dir() and copied_up.stat().st_mode & 0o777 == 0o751


def test_writes_through_a_symlink_stay_inside(stack: Stack, outside: Path) -> None:
    stack.add(Entry("escape", "symlink", target=str(outside)))
    stack.add(Entry("escape/secret", data=b"overwritten"))
    stack.add(Entry("up", "symlink", target="../../../../.."), Entry("up/etc-file", data=b"x"))
    assert (outside / "secret").read_text() == "host secret\n"
    view = stack.view()
    assert view[str(outside).lstrip("/") + "/secret"] == ("file", "overwritten")
    assert view["etc-file"] == ("file", "x")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/abs-evil"])
def test_dotdot_and_absolute_names_stay_inside(stack: Stack, name: str) -> None:
    stack.add(Entry(name, data=b"evil"))
    assert not (stack.root.parent / "evil").exists()
    assert not Path("/abs-evil").exists()
    assert stack.view().get(name.rsplit("/", 1)[-1]) == ("file", "evil")


def test_hardlinks(stack: Stack, outside: Path) -> None:
    with pytest.raises(ImageError, match="no regular file"):
        stack.add(Entry("h", "hardlink", target="../outside/secret"))
    assert (outside / "secret").read_text() == "host secret\n"
    stack.add(Entry("bin", "dir"), Entry("bin/busybox", data=b"bb"))
    stack.add(
        Entry("bin/sh", "hardlink", target="bin/busybox"),
        Entry("same", "hardlink", target="/bin/sh"),
    )
    top = stack.layers[-1]
    assert (top / "bin/sh").samefile(top / "bin/busybox")  # copied up: a link never spans layers
    assert stack.view()["same"] == ("file", "bb")


def test_devices_are_skipped_fifos_kept(stack: Stack) -> None:
    skipped = stack.add(Entry("dev", "dir"), Entry("dev/null", "chardev"), Entry("fifo", "fifo"))
    assert skipped == 1
    assert stack.view() == {"dev": ("dir",), "fifo": ("other",)}


def test_whiteout_cannot_delete_outside(stack: Stack, outside: Path) -> None:
    stack.add(Entry("link", "symlink", target=str(outside)))
    stack.add(Entry("link/.wh.secret"), Entry("../.wh.outside"))
    with pytest.raises(ImageError, match="malformed whiteout"):
        stack.add(Entry(".wh..."))
    assert (outside / "secret").exists() and outside.exists()


def test_symlink_loops_are_an_error(stack: Stack) -> None:
    stack.add(Entry("x", "symlink", target="y"), Entry("y", "symlink", target="x"))
    with pytest.raises(ImageError, match="too many levels"):
        stack.add(Entry("x/file", data=b"loop"))


@pytest.mark.parametrize("compress", ["gzip", "zstd", "plain"])
def test_compressions(stack: Stack, compress: str) -> None:
    raw = tar_bytes([Entry("hello", data=b"hi")])
    blob = {"gzip": gzip.compress, "zstd": zstd.compress, "plain": bytes}[compress](raw)
    stack.add(Entry("hello", data=b"hi"), blob=blob)
    assert stack.view() == {"hello": ("file", "hi")}


def test_diff_id_mismatch(stack: Stack) -> None:
    with pytest.raises(DigestMismatchError):
        stack.add(Entry("f", data=b"x"), diff_id="sha256:" + "0" * 64)


def test_truncated_and_garbage_layers(stack: Stack) -> None:
    raw = gzip.compress(tar_bytes([Entry("big", data=b"x" * 100_000)]))
    for blob in (raw[: len(raw) // 2], b"\x1f\x8b" + b"garbage" * 50, b"not a tar at all" * 64):
        with pytest.raises(ImageError):
            stack.add(Entry("big", data=b"x"), blob=blob)


# -- random layer stacks against a model ------------------------------------

DIR_PATHS = ["a", "b", "a/a", "a/b", "b/a", "b/b"]
LEAF_PATHS = [f"{d}/{leaf}".lstrip("/") for d in ["", *DIR_PATHS] for leaf in ("f", "g")]
TARGETS = ["f", "/a", "../b", "a/f", "/nowhere"]
Model = dict[str, tuple[str, ...]]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _drop(model: Model, top: str) -> None:
    for path in [p for p in model if _under(p, top)]:
        del model[path]


def _model_apply(model: Model, whiteouts: list[str], opaques: list[str], entries: list) -> None:
    """The OCI layer semantics, on a flat dictionary."""
    for path in whiteouts:
        _drop(model, path)
    for path in opaques:
        for child in [p for p in model if p.startswith(path + "/")]:
            del model[child]
    for kind, path, payload in entries:
        parts = path.split("/")
        for i in range(1, len(parts)):
            model.setdefault("/".join(parts[:i]), ("dir",))
        if kind == "dir":
            if model.get(path) != ("dir",):
                _drop(model, path)
                model[path] = ("dir",)
        else:
            _drop(model, path)
            model[path] = (kind, payload)


def _entry(kind: str, path: str, payload: str) -> Entry:
    if kind == "file":
        return Entry(path, data=payload.encode())
    if kind == "link":
        return Entry(path, "symlink", target=payload)
    return Entry(path, "dir")


def _free(path: str, whiteouts: list[str]) -> bool:
    return not any(_under(path, w) or _under(w, path) for w in whiteouts)


def _draw_layer(data: st.DataObject, model: Model) -> tuple[list[str], list[str], list]:
    """Whiteouts of what is there, then dirs, files and symlinks elsewhere,
    and opaque markers on some of the listed dirs."""
    existing = sorted(model)
    whiteouts = []
    if existing:
        whiteouts = data.draw(st.lists(st.sampled_from(existing), max_size=3, unique=True))
    dirs = [p for p in DIR_PATHS if _free(p, whiteouts)]
    leaves = [p for p in LEAF_PATHS if _free(p, whiteouts)]
    kinds = [
        st.tuples(st.just("file"), st.sampled_from(leaves), st.text("xyz", max_size=3)),
        st.tuples(st.just("link"), st.sampled_from(leaves), st.sampled_from(TARGETS)),
    ]
    if dirs:
        kinds.append(st.tuples(st.just("dir"), st.sampled_from(dirs), st.just("")))
    entries = data.draw(st.lists(st.one_of(kinds), max_size=8))
    listed = [path for kind, path, _ in entries if kind == "dir"]
    opaques = []
    if listed:
        opaques = data.draw(st.lists(st.sampled_from(listed), max_size=2, unique=True))
    return whiteouts, opaques, entries


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_layer_stacks_match_the_model(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    model: Model = {}
    for _layer in range(data.draw(st.integers(1, 4), label="layers")):
        whiteouts, opaques, entries = _draw_layer(data, model)
        tar = [Entry(_whiteout_name(p)) for p in whiteouts]
        tar += [Entry(f"{p}/.wh..wh..opq") for p in opaques]
        tar += [_entry(*e) for e in entries]
        stack.add(*tar)
        _model_apply(model, whiteouts, opaques, entries)
    assert stack.view() == model


def _whiteout_name(path: str) -> str:
    parent, _, name = path.rpartition("/")
    return f"{parent}/.wh.{name}".lstrip("/")


# -- bounds ------------------------------------------------------------------


def _sparse_tar(tmp_path: Path, size: int, fmt: str) -> bytes:
    """A tar, written by GNU tar, of one sparse file of ``size`` bytes with
    no data in it: a few KiB however large the file it declares."""
    src = tmp_path / f"src-{fmt}"
    src.mkdir()
    with open(src / "zeros", "wb") as f:
        f.truncate(size)
    return subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-C", str(src), "-cf", "-", "zeros"],
        check=True,
        capture_output=True,
    ).stdout


def _unpack(tmp_path: Path, raw: bytes, limits: UnpackLimits, blob: bytes | None = None) -> Path:
    top = tmp_path / "top"
    top.mkdir()
    unpack_layer(
        io.BufferedReader(io.BytesIO(blob if blob is not None else raw)),  # type: ignore[arg-type]
        top,
        [],
        "sha256:" + hashlib.sha256(raw).hexdigest(),
        limits,
    )
    return top


def _disk_use(path: Path) -> int:
    return sum(os.lstat(p).st_blocks * 512 for p in path.rglob("*"))


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar makes the sparse layers")
def test_a_sparse_layer_through_load_is_refused_before_it_fills_the_disk(
    tmp_path: Path,
) -> None:
    """The case of issue 16: a 10 KiB layer whose sparse member tarfile
    expands to 1 GiB of zeros on disk."""
    raw = _sparse_tar(tmp_path, 1 << 30, "gnu")
    assert len(raw) <= 10 << 10
    layout = write_layout(tmp_path / "layout", [raw])
    home = tmp_path / "home"
    with boxlite_ffi.Runtime(home, max_layer_size="512m") as rt:
        with pytest.raises(ImageTooLargeError, match="zeros") as caught:
            rt.images.load(layout)
        assert caught.value.reason == ImageReason.TOO_LARGE
        assert isinstance(caught.value, ImageError)
        assert rt.images.list() == []
    layers = home / "images" / "layers"
    assert list(layers.iterdir()) == []  # no layer, no staging directory
    assert _disk_use(home / "images" / "layers") == 0


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar makes the sparse layers")
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_members_count_what_they_expand_to(tmp_path: Path, fmt: str) -> None:
    raw = _sparse_tar(tmp_path, 64 << 20, fmt)
    with pytest.raises(ImageTooLargeError):
        _unpack(tmp_path, raw, UnpackLimits(max_bytes=32 << 20))
    (tmp_path / "fits").mkdir()
    top = _unpack(tmp_path / "fits", raw, UnpackLimits(max_bytes=64 << 20))
    assert (top / "zeros").stat().st_size == 64 << 20


def test_the_budget_counts_every_file_of_the_layer(tmp_path: Path) -> None:
    files = [Entry(f"f{i}", data=b"x" * 1000) for i in range(10)]
    _unpack(tmp_path, tar_bytes(files), UnpackLimits(max_bytes=10_000))  # exactly the budget
    (tmp_path / "over").mkdir()
    with pytest.raises(ImageTooLargeError, match="10000 bytes"):
        _unpack(
            tmp_path / "over",
            tar_bytes([*files, Entry("one-more", data=b"x")]),
            UnpackLimits(max_bytes=10_000),
        )


def test_entries_are_bounded(tmp_path: Path) -> None:
    entries = [Entry(f"e{i}") for i in range(20)]
    _unpack(tmp_path, tar_bytes(entries), UnpackLimits(max_entries=20))
    (tmp_path / "over").mkdir()
    with pytest.raises(ImageTooLargeError, match="20 entries"):
        _unpack(
            tmp_path / "over", tar_bytes([*entries, Entry("e20")]), UnpackLimits(max_entries=20)
        )


def test_a_decompression_bomb_after_the_end_of_the_tar_is_refused(tmp_path: Path) -> None:
    """Zeros after the end-of-archive blocks are part of the diff_id, so they
    are read (hashed): the stream itself is bounded too."""
    raw = tar_bytes([Entry("f", data=b"f")]) + bytes(64 << 20)
    limits = UnpackLimits(max_bytes=16 << 20, max_entries=1000)
    assert limits.max_stream < len(raw)
    with pytest.raises(ImageTooLargeError, match="uncompressed tar"):
        _unpack(tmp_path, raw, limits, blob=gzip.compress(raw))


@pytest.mark.parametrize("size", ["1k", "0", "lots", True])
def test_runtime_layer_limits_are_checked(tmp_path: Path, size: object) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="max_layer_size"):
        boxlite_ffi.Runtime(tmp_path, max_layer_size=size)  # type: ignore[arg-type]
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="max_layer_entries"):
        boxlite_ffi.Runtime(tmp_path, max_layer_entries=0)
