"""Warm pools: boxes started ahead, taken by a create that they can serve,
refilled in the background, never seen until taken, and gone with their
runtime, whether it closes or dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import BoxStatus
from boxlite_ffi.aio import Runtime as AsyncRuntime
from boxlite_ffi.home import store_path
from boxlite_ffi.vm import find_kernel
from boxlite_ffi.vm.engine import find_qemu

from procscan import box_processes

IMAGE = "host"


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def records(home: Path, where: str = "1") -> list[str]:
    """Ids of the store's boxes (not removed), read from the file itself."""
    with sqlite3.connect(store_path(home)) as db:
        rows = db.execute(
            f"SELECT id FROM boxes WHERE removed IS NULL AND ({where}) ORDER BY id"
        ).fetchall()
    return [row[0] for row in rows]


def pooled(home: Path) -> list[str]:
    return records(home, "json_extract(config, '$.pool') IS NOT NULL")


def shims() -> int:
    return sum(1 for _, name in box_processes() if name == "boxlite-shim")


def ready(rt: boxlite_ffi.Runtime) -> int:
    return sum(info.ready for info in rt.pools())


def test_a_create_takes_a_pooled_box_with_its_own_settings(
    rt: boxlite_ffi.Runtime, home: Path
) -> None:
    rt.pool(IMAGE, 1, wait=True)
    [waiting] = pooled(home)
    before = time.time()
    with rt.create(IMAGE, name="warm", env={"GREETING": "hi"}, workdir="/tmp") as box:
        assert box.id == waiting and box.name == "warm"
        info = box.info()
        assert info.status == BoxStatus.RUNNING and info.started is not None
        assert info.started < before <= info.created  # started by the pool
        assert info.name == "warm" and info.image == IMAGE
        result = box.run(["sh", "-c", 'echo "$GREETING"; pwd; hostname'])
        assert result.stdout == f"hi\n/tmp\n{box.id}\n".encode()  # the hostname: its id
        assert rt.get("warm") is box
        assert [i.id for i in rt.list()] == [box.id]
        # The specification follows the record (written by the pool's thread).
        spec = box.directory / "box.json"
        assert wait_until(lambda: spec.exists())
        written = json.loads(spec.read_text())
        assert written["name"] == "warm" and "pool" not in written["config"]
        assert written["config"]["env"]["GREETING"] == "hi"


def test_the_pool_refills_in_the_background(rt: boxlite_ffi.Runtime, home: Path) -> None:
    rt.pool(IMAGE, 2, wait=True)
    first = set(pooled(home))
    assert len(first) == 2 and shims() == 2
    with rt.create(IMAGE) as box:
        assert box.id in first
        assert wait_until(lambda: ready(rt) == 2)
        now = set(pooled(home))
        assert len(now) == 2 and box.id not in now and len(now & first) == 1
        assert shims() == 3  # the taken box and two pooled ones
    # A taken box never returns: closing it leaves the pool as it was.
    assert set(pooled(home)) == now and shims() == 2


def test_a_create_a_pooled_box_cannot_serve_starts_cold(
    rt: boxlite_ffi.Runtime, home: Path, tmp_path: Path
) -> None:
    rt.pool(IMAGE, 1, wait=True)
    [waiting] = pooled(home)
    cold_options: list[dict[str, object]] = [
        {"volumes": [f"{tmp_path}:/mnt"]},
        {"cmd": ["sleep", "60"]},
        {"tmp_size": "8m"},
        {"log_limit": "1m"},
        {"pids": 0},
        {"engine": "ns", "detach": True},
    ]
    for options in cold_options:
        box = rt.create(IMAGE, **options)
        try:
            assert box.id != waiting, options
            assert box.info().status == BoxStatus.CONFIGURED, options  # not started: cold
        finally:
            box.remove(force=True)
    with rt.create(rootfs=str(Path("/"))) as box:
        assert box.id != waiting and box.info().status == BoxStatus.CONFIGURED
    assert pooled(home) == [waiting] and ready(rt) == 1


def test_pooled_boxes_are_seen_by_no_listing_or_lookup(rt: boxlite_ffi.Runtime, home: Path) -> None:
    rt.pool(IMAGE, 2, wait=True)
    ids = pooled(home)
    assert len(ids) == 2
    assert rt.list() == []
    with boxlite_ffi.Runtime(home) as other:  # another runtime on the home
        assert other.list() == []
        for box_id in ids:
            for ref in (box_id, box_id[:6]):
                with pytest.raises(boxlite_ffi.NotFoundError):
                    other.get(ref)
        assert pooled(home) == ids  # reconciling them left them alone
    [info] = rt.pools()
    assert (info.image, info.size, info.ready, info.error) == (IMAGE, 2, 2, None)


def test_close_leaves_nothing(home: Path) -> None:
    with boxlite_ffi.Runtime(home, pool={IMAGE: 2}) as rt:
        rt.pool(IMAGE, 2, wait=True)
        taken = rt.create(IMAGE)
        assert wait_until(lambda: ready(rt) == 2)
        assert shims() == 3 and len(records(home)) == 3
        assert taken.status == BoxStatus.RUNNING
    assert box_processes() == []
    assert records(home) == []
    assert list((home / "boxes").iterdir()) == []


def test_a_pool_made_smaller_closes_its_idle_boxes(rt: boxlite_ffi.Runtime, home: Path) -> None:
    rt.pool(IMAGE, 2, wait=True)
    rt.pool(IMAGE, 1)
    assert len(pooled(home)) == 1 and shims() == 1
    rt.pool(IMAGE, 0)
    assert pooled(home) == [] and box_processes() == []
    assert list((home / "boxes").iterdir()) == []
    assert rt.pools() == []


OWNER = textwrap.dedent(
    """
    import sys, boxlite_ffi
    rt = boxlite_ffi.Runtime({home!r}, pool={{{image!r}: 2}})
    rt.pool({image!r}, 2, wait=True)
    rt.create({image!r}, name="taken").run(["true"])
    rt.pool({image!r}, 2, wait=True)  # refilled
    print("ready", flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_the_death_of_its_owner_leaves_nothing(home: Path) -> None:
    script = OWNER.format(home=str(home), image=IMAGE)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline() == b"ready\n"
            assert shims() == 3  # two pooled, one taken
            assert len(pooled(home)) == 2 and len(records(home)) == 3
            owner.kill()  # SIGKILL: no atexit, no close
            owner.wait()
        finally:
            owner.kill()
    assert wait_until(lambda: box_processes() == [])
    with boxlite_ffi.Runtime(home) as rt:  # reconciles: the owner is gone
        assert rt.list() == []
        assert records(home) == []
        assert list((home / "boxes").iterdir()) == []


def test_concurrent_creates_from_a_pool_of_one(rt: boxlite_ffi.Runtime, home: Path) -> None:
    rt.pool(IMAGE, 1, wait=True)
    [waiting] = pooled(home)
    barrier = threading.Barrier(2)
    boxes: list[boxlite_ffi.Box] = []

    def create() -> None:
        barrier.wait()
        boxes.append(rt.create(IMAGE))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        warm = [box for box in boxes if box.id == waiting]
        cold = [box for box in boxes if box.id != waiting]
        assert len(warm) == 1 and len(cold) == 1
        assert cold[0].info().status == BoxStatus.CONFIGURED
        assert cold[0].run(["true"]).ok and warm[0].run(["true"]).ok
    finally:
        for box in boxes:
            box.close()


def test_a_name_in_use_leaves_the_pooled_box_in_the_pool(
    rt: boxlite_ffi.Runtime, home: Path
) -> None:
    rt.pool(IMAGE, 2, wait=True)
    with rt.create(IMAGE, name="only"):
        assert wait_until(lambda: ready(rt) == 2)
        waiting = pooled(home)
        with pytest.raises(boxlite_ffi.AlreadyExistsError):
            rt.create(IMAGE, name="only")
        assert pooled(home) == waiting and ready(rt) == 2


def test_a_pooled_box_whose_supervisor_died_is_replaced(
    rt: boxlite_ffi.Runtime, home: Path
) -> None:
    rt.pool(IMAGE, 1, wait=True)
    [dead] = pooled(home)
    os.kill(_shim_of(home, dead), signal.SIGKILL)
    assert wait_until(lambda: pooled(home) not in ([], [dead]) and ready(rt) == 1)
    with rt.create(IMAGE) as box:
        assert box.id != dead and box.run(["true"]).ok


def _shim_of(home: Path, box_id: str) -> int:
    directory = str(home / "boxes" / box_id).encode()
    for pid, name in box_processes():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if name == "boxlite-shim" and directory in cmdline:
            return pid
    raise AssertionError(f"no shim for box {box_id}")


@pytest.mark.parametrize(
    "pool",
    [["host"], "host", {"host": -1}, {"host": True}, {"host": 65}, {"host": 1.0}, {"": 1}, {1: 1}],
)
def test_bad_pool_arguments_are_typed_errors(home: Path, pool: object) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        boxlite_ffi.Runtime(home, pool=pool)  # type: ignore[arg-type]


def test_bad_pools_of_a_runtime(rt: boxlite_ffi.Runtime, home: Path) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.pool(IMAGE, "2")  # type: ignore[arg-type]
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        rt.pool(IMAGE, 1, engine="xen")
    with pytest.raises(boxlite_ffi.ImageNotFoundError):
        rt.pool("nosuch:latest", 1)
    assert rt.pools() == [] and records(home) == []


def test_a_pool_of_an_unknown_image_fails_the_runtime_cleanly(home: Path) -> None:
    threads = set(threading.enumerate())
    with pytest.raises(boxlite_ffi.ImageNotFoundError):
        boxlite_ffi.Runtime(home, pool={"nosuch:latest": 1})
    assert wait_until(lambda: set(threading.enumerate()) <= threads)


def test_asyncio_pools(home: Path) -> None:
    async def main() -> None:
        async with AsyncRuntime(home, pool={IMAGE: 1}) as rt:
            await rt.pool(IMAGE, 1, wait=True)
            [waiting] = pooled(home)
            box = await rt.create(IMAGE, env={"X": "y"})
            assert box.id == waiting
            assert (await box.run(["sh", "-c", "echo $X"])).stdout == b"y\n"
            await box.close()

    asyncio.run(main())
    assert box_processes() == [] and records(home) == []


def vm_missing() -> str | None:
    try:
        find_qemu()
        find_kernel()
    except boxlite_ffi.EngineError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(vm_missing() is not None and not os.environ.get("CI"), reason="no vm")
def test_a_pool_of_vm_boxes(home: Path, oci_image: Path) -> None:
    """The engine is part of a pool's key; a VM's start in flight (the
    refill after the take) ends with close."""
    with boxlite_ffi.Runtime(home) as rt:
        [image] = rt.images.load(oci_image)
        rt.pool(image.id, 1, engine="vm", wait=True)
        [waiting] = pooled(home)
        before = time.time()
        box = rt.create(image.id, engine="vm", env={"IN": "vm"})
        assert box.id == waiting and box.info().engine == "vm"
        assert box.info().started < before  # type: ignore[operator]
        assert box.run(["sh", "-c", "echo $IN"]).stdout == b"vm\n"
        cold = rt.create(image.id, engine="ns")
        assert cold.id != waiting and cold.info().status == BoxStatus.CONFIGURED
        assert wait_until(lambda: any(info.starting for info in rt.pools()), timeout=5)
    assert box_processes() == [] and records(home) == []


def test_a_pool_whose_boxes_cannot_start_says_why(
    rt: boxlite_ffi.Runtime, home: Path, oci_image: Path
) -> None:
    [image] = rt.images.load(oci_image)
    layer = rt.images.resolve(image.id).lowers[0]
    aside = layer.with_name(layer.name + ".aside")
    layer.rename(aside)  # its boxes cannot mount their root
    try:
        with pytest.raises(boxlite_ffi.EngineError, match="No such file"):
            rt.pool(image.id, 1, wait=True)
        [info] = rt.pools()
        assert info.error and info.ready == 0
        assert wait_until(lambda: pooled(home) == [])  # the failed box is gone
    finally:
        aside.rename(layer)
    rt.pool(image.id, 1, wait=True)  # asked again: no pause, and now it starts
    [info] = rt.pools()
    assert (info.ready, info.error) == (1, None)


def test_two_creates_of_one_name_from_a_pool(rt: boxlite_ffi.Runtime, home: Path) -> None:
    """Both take a pooled box; the store's unique name lets one have it,
    the other's box goes back to the pool."""
    rt.pool(IMAGE, 2, wait=True)
    waiting = set(pooled(home))
    barrier = threading.Barrier(2)
    made: list[boxlite_ffi.Box] = []
    refused: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            made.append(rt.create(IMAGE, name="same"))
        except boxlite_ffi.AlreadyExistsError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [box] = made
    assert len(refused) == 1
    try:
        assert box.name == "same" and rt.get("same") is box
        assert box.id in waiting or box.info().status == BoxStatus.CONFIGURED
        assert wait_until(lambda: ready(rt) == 2)
        assert box.id not in pooled(home)
    finally:
        box.close()
