"""Faults of the store (deleted, emptied, corrupt, half gone, a directory,
read-only, a full disk): every outcome is a typed error, no box's data is
lost, and ``Runtime.recover`` is the way back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import boxlite_ffi
import boxlite_ffi.aio
from boxlite_ffi import BoxStatus, ErrorCode, StoreReason
from boxlite_ffi._core.core import BoxConfig
from boxlite_ffi.state.boxdir import MARKER, SPEC
from boxlite_ffi.state.shim import KILL_NOW, shim_pid, signal_shim

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounts a small filesystem (root)")


@pytest.fixture
def populated(home: Path, oci_image: Path) -> Iterator[Path]:
    """A home with a tagged image and a detached box running from it, with
    data in its writable layer; the box is removed at the end."""
    with boxlite_ffi.Runtime(home) as rt:
        rt.images.load(oci_image, tag="faults/img:1")
        box = rt.create(image="faults/img:1", name="keeper", detach=True)
        assert box.run(["sh", "-c", "echo precious > /data"]).ok
        box.close()
    yield home
    with contextlib.suppress(boxlite_ffi.BoxliteError), boxlite_ffi.Runtime(home) as rt:
        for info in rt.list():
            rt.remove(info.id, force=True)


def _shim_alive(home: Path) -> int:
    (box_dir,) = [d for d in (home / "boxes").iterdir() if not d.name.startswith(".")]
    pid = shim_pid(box_dir)
    assert pid is not None, "the box's shim is gone"
    return pid


def _snapshot(home: Path) -> dict[str, str]:
    """Every file under the home's boxes and image blobs, with a hash (the
    data nothing may delete)."""
    seen = {}
    for top in ("boxes", "images/blobs"):
        for path in sorted((home / top).rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name not in ("lock",):
                with contextlib.suppress(PermissionError):
                    seen[str(path.relative_to(home))] = hashlib.sha256(
                        path.read_bytes()
                    ).hexdigest()
    return seen


def _recovered_intact(home: Path, shim: int) -> None:
    """After recover: the same box found running (same shim), its data as
    written, the image there by id."""
    report = boxlite_ffi.Runtime.recover(home)
    assert [(b.name, b.status) for b in report.boxes] == [("keeper", BoxStatus.RUNNING)]
    assert len(report.images) == 1
    assert report.lost_tags == ("faults/img:1",)  # only the store knew it
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.get("keeper")
        assert box.status == BoxStatus.RUNNING and box.shim_pid == shim
        assert box.run(["cat", "/data"]).stdout == b"precious\n"
        assert [i.id for i in rt.images.list()] == list(report.images)
    assert boxlite_ffi.Runtime.recover(home).boxes == ()  # idempotent


LOSSES: dict[str, Callable[[Path], None]] = {
    "deleted": lambda db: db.unlink(),
    "emptied": lambda db: os.truncate(db, 0),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_a_lost_store_is_refused_and_recovered(populated: Path, loss: str) -> None:
    home = populated
    shim = _shim_alive(home)
    before = _snapshot(home)
    db = home / "boxlite.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    LOSSES[loss](db)
    with pytest.raises(boxlite_ffi.StoreLostError) as caught:
        boxlite_ffi.Runtime(home)
    err = caught.value
    assert err.code is ErrorCode.STORE and err.reason is StoreReason.LOST
    assert "boxlite recover" in err.message and "Runtime.recover()" in err.message
    assert _shim_alive(home) == shim  # not killed
    assert _snapshot(home) == before  # nothing deleted
    assert not db.exists() or db.stat().st_size == 0  # and no store made over it
    _recovered_intact(home, shim)


def _corrupt(db: Path) -> None:
    with open(db, "r+b") as f:
        f.seek(100)
        f.write(os.urandom(256))


def _halve(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "corrupt": _corrupt,
    "half": _halve,
    "directory": _directory,
}


def _checkpointed(home: Path) -> Path:
    """The store with its WAL folded in and gone (so damage hits the data)."""
    import sqlite3

    db = home / "boxlite.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return db


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_store_is_a_typed_error_and_kept(populated: Path, damage: str) -> None:
    home = populated
    shim = _shim_alive(home)
    db = _checkpointed(home)
    DAMAGE[damage](db)
    kept = db.read_bytes() if db.is_file() else None
    before = _snapshot(home)
    for _ in range(2):  # the same answer every time: nothing was "repaired"
        with pytest.raises(boxlite_ffi.StoreCorruptError) as caught:
            boxlite_ffi.Runtime(home)
        assert caught.value.code is ErrorCode.STORE
        assert caught.value.reason is StoreReason.CORRUPT
        assert "boxlite recover" in caught.value.message
    assert (db.read_bytes() if db.is_file() else None) == kept
    assert _snapshot(home) == before and _shim_alive(home) == shim
    # The CLI says the same in one line, and recovers.
    cli = [sys.executable, "-P", "-m", "boxlite_ffi.cli", "--home", str(home)]
    ls = subprocess.run([*cli, "ls"], capture_output=True, text=True, timeout=60)
    assert ls.returncode == 125 and "boxlite recover" in ls.stderr
    out = subprocess.run([*cli, "recover"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "recovered, running" in out.stdout and "old store kept as" in out.stdout
    aside = [p for p in home.iterdir() if p.name.startswith("boxlite.db.lost-")]
    assert len(aside) >= 1  # moved, not deleted
    if kept is not None:
        assert any(p.is_file() and p.read_bytes() == kept for p in aside)
    with boxlite_ffi.Runtime(home) as rt:
        box = rt.get("keeper")
        assert box.shim_pid == shim and box.run(["cat", "/data"]).stdout == b"precious\n"


@contextlib.contextmanager
def _small_fs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", where],
                   check=True)  # fmt: skip
    try:
        yield where
    finally:  # a failed test's boxes die before their home goes
        for box_dir in (where / "boxes").glob("*"):
            signal_shim(box_dir, KILL_NOW, wait=True)
        subprocess.run(["umount", "-l", where], check=True)


@needs_root
def test_a_read_only_store_is_a_typed_error(tmp_path: Path, rootfs: Path) -> None:
    with _small_fs(tmp_path / "fs", "20m") as home:
        with boxlite_ffi.Runtime(home) as rt:
            rt.create(rootfs=rootfs, name="kept", detach=True).close()
        before = _snapshot(home)
        subprocess.run(["mount", "-o", "remount,ro", home], check=True)
        # The home as a whole is unusable, said before the store is read.
        with pytest.raises(boxlite_ffi.InvalidArgumentError, match="read-only filesystem"):
            boxlite_ffi.Runtime(home)
        subprocess.run(["mount", "-o", "remount,rw", home], check=True)
        assert _snapshot(home) == before
        with boxlite_ffi.Runtime(home) as rt:
            assert [i.name for i in rt.list()] == ["kept"]
            rt.remove("kept")


FILL = "dd if=/dev/zero of=/fill bs=64k 2>/dev/null; test -s /fill"


@needs_root
def test_a_full_disk_still_stops_removes_and_closes(tmp_path: Path, oci_image: Path) -> None:
    with _small_fs(tmp_path / "fs", "20m") as home:
        with boxlite_ffi.Runtime(home) as rt:
            rt.images.load(oci_image, tag="faults/img:1")
            owned = rt.create(image="faults/img:1")  # goes with the runtime's close
            owned.start()
            kept = rt.create(image="faults/img:1", name="kept", detach=True)
            assert kept.run(["sh", "-c", FILL]).ok  # the disk is full now
            assert os.statvfs(home).f_bavail == 0
            with pytest.raises(boxlite_ffi.DiskFullError) as caught:
                rt.images.load(oci_image, tag="faults/again")  # no raw OSError
            assert caught.value.code is ErrorCode.NO_SPACE
            with pytest.raises(boxlite_ffi.DiskFullError):
                rt.create(image="faults/img:1")
            assert len(rt.list()) == 2  # the failed create left nothing
            kept.stop()
            assert kept.status == BoxStatus.STOPPED
        assert not owned.directory.exists()  # close worked, on the full disk
        with boxlite_ffi.Runtime(home) as rt:  # and the home opens again
            assert [i.name for i in rt.list()] == ["kept"]
            box = rt.get("kept")
            box.start()  # its layer is as it was
            assert box.run(["sh", "-c", "test -s /fill"]).ok
            box.remove(force=True)  # frees the room
            assert rt.list() == []
            assert rt.images.load(oci_image, tag="faults/again")


@needs_root
def test_a_box_filling_the_disk_is_removed_by_force(tmp_path: Path, rootfs: Path) -> None:
    with _small_fs(tmp_path / "fs", "20m") as home, boxlite_ffi.Runtime(home) as rt:
        box = rt.create(rootfs=rootfs, detach=True)
        assert box.run(["sh", "-c", FILL]).ok
        (home / "boxlite.reserve").unlink()  # the reserve spent already: still removed
        box.remove(force=True)
        assert rt.list() == [] and not box.directory.exists()


def test_the_sweep_deletes_only_provable_garbage(home: Path, rootfs: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:
        rt.create(rootfs=rootfs, name="real", detach=True).close()
        real = rt.get("real").directory
    boxes = home / "boxes"
    unfinished = boxes / "aaaaaaaaaaaa"  # a create that crashed before its record
    (unfinished / "upper").mkdir(parents=True)
    (unfinished / MARKER).touch()
    orphan = boxes / "bbbbbbbbbbbb"  # a box whose record is gone: its spec says so
    orphan.mkdir(mode=0o700)
    (orphan / MARKER).touch()
    spec = (real / SPEC).read_text().replace(real.name, orphan.name).replace('"real"', '"orph"')
    (orphan / SPEC).write_text(spec)
    (orphan / "upper").mkdir()
    (orphan / "upper" / "data").write_text("mine\n")
    foreign = boxes / "not-ours"  # no marker: nothing proves it is ours
    foreign.mkdir()
    (foreign / "file").write_text("keep\n")
    with boxlite_ffi.Runtime(home) as rt:
        assert [i.name for i in rt.list()] == ["real"]
    assert not unfinished.exists()
    assert (orphan / "upper" / "data").read_text() == "mine\n"
    assert (foreign / "file").read_text() == "keep\n"
    report = boxlite_ffi.Runtime.recover(home)  # takes the orphan in
    assert [(b.id, b.name, b.status) for b in report.boxes] == [
        (orphan.name, "orph", BoxStatus.STOPPED)
    ]
    assert [p for p, _ in report.skipped] == [foreign]
    with boxlite_ffi.Runtime(home) as rt:
        assert sorted(i.name or "" for i in rt.list()) == ["orph", "real"]
        orph = rt.get("orph")
        orph.start()  # stopped: it ran before, its layer is there
        assert orph.run(["cat", "/data"]).stdout == b"mine\n"
        rt.remove("orph", force=True)
        rt.remove("real")
    assert foreign.exists()


def test_a_box_directory_is_checked_by_the_native_core(rt: boxlite_ffi.Runtime, tmp_path: Path,
                                                       rootfs: Path) -> None:  # fmt: skip
    etc_mode = os.stat("/etc").st_mode
    plain = tmp_path / "plain"
    plain.mkdir(mode=0o700)
    for directory in (Path("/etc"), plain):
        config = BoxConfig(directory, (rootfs,), "box", 1000, 100, False)
        with pytest.raises(boxlite_ffi.NotABoxDirectoryError) as caught:
            rt.native.box_new(config, owner_pid=0)
        assert caught.value.code is ErrorCode.NOT_BOX_DIR
    assert os.stat("/etc").st_mode == etc_mode
    assert not (plain / "lock").exists()
    (plain / MARKER).touch()
    config = BoxConfig(plain, (rootfs,), "box", 1000, 100, False)
    rt.native.box_free(rt.native.box_new(config, owner_pid=0))


def test_a_fresh_home_and_a_home_of_images_only(home: Path, oci_image: Path) -> None:
    with boxlite_ffi.Runtime(home) as rt:  # fresh: a store is made
        rt.images.load(oci_image, tag="faults/img:1")
    (home / "boxlite.db").unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{home / 'boxlite.db'}{extra}").unlink(missing_ok=True)
    with pytest.raises(boxlite_ffi.StoreLostError):
        boxlite_ffi.Runtime(home)  # image blobs, no store: lost, not fresh
    report = asyncio.run(boxlite_ffi.aio.Runtime.recover(home))  # the same, for asyncio
    assert report.boxes == () and len(report.images) == 1
    with boxlite_ffi.Runtime(home) as rt:
        (info,) = rt.images.list()
        assert info.tags == () and info.id == report.images[0]
