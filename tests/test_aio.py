"""The asyncio surface runs the same implementation as the sync one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import aio


def test_async_run_stream_and_gather(home: Path, rootfs: Path) -> None:
    async def main() -> None:
        async with aio.Runtime(home) as rt, await rt.create(rootfs=rootfs) as box:
            result = await box.run(["printf", "abc"])
            assert result.stdout == b"abc" and result.ok

            execution = await box.exec(["sh", "-c", "echo a; sleep 0.2; echo b >&2; echo c"])
            chunks = [c async for c in execution.stdout]
            assert b"".join(chunks) == b"a\nc\n"
            assert [c async for c in execution.stderr] == [b"b\n"]
            assert (await execution.wait()).ok

            results = await asyncio.gather(
                *(box.run(["sh", "-c", f"printf {i}; exit {i}"]) for i in range(10))
            )
            assert [(r.stdout, r.exit_code) for r in results] == [
                (str(i).encode(), i) for i in range(10)
            ]
            if os.geteuid() == 0:  # users other than root: a root runtime's boxes
                as_other = await box.run(["sh", "-c", "echo $(id -u):$(id -g)"], user="7:8")
                assert as_other.stdout == b"7:8\n"

    asyncio.run(main())


def test_async_exec_on_an_unstarted_box_and_stop(home: Path, rootfs: Path) -> None:
    async def main() -> None:
        async with aio.Runtime(home) as rt:
            box = await rt.create(rootfs=rootfs, name="async-box")
            assert (await rt.get("async-box")).id == box.id
            assert (await box.run(["hostname"])).stdout == b"async-box\n"
            await box.stop()
            await box.start()
            assert (await box.run(["true"])).ok
            await box.close()

    asyncio.run(main())


def test_async_wait_raises_when_the_runtime_closes(home: Path, rootfs: Path) -> None:
    async def main() -> None:
        rt = aio.Runtime(home)
        box = await rt.create(rootfs=rootfs)
        execution = await box.exec(["sleep", "60"])
        await rt.close()
        with pytest.raises(boxlite_ffi.RuntimeClosedError):
            await execution.wait()

    asyncio.run(main())


def test_async_text_and_lines(home: Path, rootfs: Path) -> None:
    async def main() -> None:
        async with aio.Runtime(home) as rt, await rt.create(rootfs=rootfs) as box:
            execution = await box.exec(
                ["sh", "-c", r"printf '\342'; sleep 0.2; printf '\202\254\nx'"]
            )
            assert [t async for t in execution.stdout.atext()] == ["€\nx"]
            execution = await box.exec(["sh", "-c", r"printf 'one\ntw'; sleep 0.2; printf 'o\n'"])
            assert [line async for line in execution.stdout.alines()] == ["one\n", "two\n"]

    asyncio.run(main())


def test_async_images(home: Path, oci_image: Path) -> None:
    async def main() -> None:
        async with aio.Runtime(home) as rt:
            seen: list[boxlite_ffi.Progress] = []
            (info,) = await rt.images.load(oci_image, tag="three:layers", progress=seen.append)
            assert seen[-1].layers_done == 3
            assert [i.id for i in await rt.images.list()] == [info.id]
            assert (await rt.images.inspect("three:layers")).layers == info.layers
            async with await rt.create("three:layers") as box:
                assert (await box.run(["cat", "/opt/app/new"])).stdout == b"new\n"
            await rt.images.remove("three:layers")
            assert (await rt.images.prune()).bytes_freed > 0

    asyncio.run(main())


def test_async_bad_arguments_and_stdin_not_opened(home: Path, rootfs: Path) -> None:
    """The same checks as the sync surface (test_exec), awaited."""
    from test_exec import BAD_EXEC_ARGUMENTS

    async def main() -> None:
        async with aio.Runtime(home) as rt, await rt.create(rootfs=rootfs) as box:
            for kwargs in BAD_EXEC_ARGUMENTS:
                with pytest.raises(boxlite_ffi.InvalidArgumentError):
                    await box.exec(["true"], **kwargs)
            with pytest.raises(boxlite_ffi.InvalidArgumentError):
                await box.run(["cat"], input="text")  # type: ignore[arg-type]
            result = await box.run(["sh", "-c", "printf $A"], env=["A=1"], timeout=float("inf"))
            assert result.stdout == b"1"
            execution = await box.exec(["sleep", "30"])
            with pytest.raises(boxlite_ffi.InvalidStateError, match="stdin was not opened"):
                await execution.write_stdin(b"x")
            with pytest.raises(boxlite_ffi.InvalidStateError, match="stdin was not opened"):
                execution.close_stdin()
            with pytest.raises(boxlite_ffi.InvalidArgumentError):
                await execution.write_stdin("text")  # type: ignore[arg-type]
            await execution.kill()
            await execution.wait()

    asyncio.run(main())
