"""The asyncio surface: the same objects as the sync API, awaited.

Every blocking step of the sync API is a ``concurrent.futures.Future``
completed by the drain thread; here it is awaited with
``asyncio.wrap_future`` instead of waited on, so both surfaces run the same
code.  Filesystem work (image unpacking, deleting box directories) runs in a
thread so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import box as _box
from . import execution as _execution
from . import runtime as _runtime
from .box import BoxLogs
from .errors import ExecClosedError, UnsupportedError
from .execution import ExecResult, run_spec
from .image import images as _images
from .image.images import ImageInfo, PruneReport
from .pool import PoolInfo
from .spec import Env, ExecSpec, OutputCallback, with_exec_spec
from .state.recovery import RecoveryReport
from .state.views import BoxExit, BoxInfo
from .streams import ChunkStream, OutputChunk, OutputStream

if TYPE_CHECKING:
    from .remote import RemoteBox, RemoteImages, RemoteRuntime


class Execution:
    def __init__(self, inner: _execution.Execution) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def cursor(self) -> tuple[int, int]:
        return self._inner.cursor

    @property
    def replay_start(self) -> tuple[int, int]:
        return self._inner.replay_start

    async def detach(self) -> None:
        self._inner.detach()

    @property
    def stdout(self) -> OutputStream:
        """``async for chunk in execution.stdout``."""
        return self._inner.stdout

    @property
    def stderr(self) -> OutputStream:
        return self._inner.stderr

    @property
    def output(self) -> ChunkStream[OutputChunk]:
        """``async for chunk in execution.output`` (``ordered_output=True``)."""
        return self._inner.output

    @property
    def done(self) -> bool:
        return self._inner.done

    async def wait(self) -> ExecResult:
        """Output of streams nobody iterates is collected meanwhile (see the sync API)."""
        await asyncio.wrap_future(self._inner._collect())
        return self._inner.result()

    async def write_stdin(self, data: bytes | bytearray | memoryview) -> None:
        """Awaits until the process's stdin pipe has taken every byte."""
        for chunk in self._inner.stdin_chunks(data):
            await asyncio.wrap_future(self._inner.write_future(chunk))

    def close_stdin(self) -> None:
        self._inner.close_stdin()

    async def resize(self, rows: int, cols: int) -> None:
        await asyncio.wrap_future(self._inner.resize_future(rows, cols))

    async def signal(self, sig: int) -> None:
        """Awaits delivery; ``ExecClosedError`` if nobody was left to get it."""
        await asyncio.wrap_future(self._inner.signal_future(sig))

    async def kill(self) -> None:
        await self.signal(signal.SIGKILL)

    def close(self) -> None:
        """Release it; one still running is killed (``force_closed``)."""
        self._inner.close()


class Box:
    def __init__(self, inner: _box.Box | RemoteBox) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return repr(self._inner)

    async def __aenter__(self) -> Box:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def name(self) -> str | None:
        return self._inner.name

    @property
    def sync(self) -> _box.Box | RemoteBox:
        """The same box, through the sync API."""
        return self._inner

    async def start(self) -> None:
        await asyncio.to_thread(self._inner.start)  # it may wait out another process

    async def stop(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._inner.stop, timeout)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def wait(self) -> BoxExit:
        """How the box's run ended (see the sync API)."""
        return await asyncio.wrap_future(self._inner.wait_future())

    async def info(self) -> BoxInfo:
        return await asyncio.to_thread(self._inner.info)

    async def logs(self) -> BoxLogs:
        return await asyncio.to_thread(self._inner.logs)

    async def remove(self, *, force: bool = False) -> None:
        await asyncio.to_thread(self._inner.remove, force=force)

    async def close(self) -> None:
        await asyncio.to_thread(self._inner.close)

    @with_exec_spec
    async def exec(self, spec: ExecSpec) -> Execution:
        """Run a process in the box, starting it first if needed (see the sync API)."""
        return Execution(await asyncio.to_thread(self._inner._exec, spec))

    async def execution(
        self,
        exec_id: str,
        *,
        cursor: tuple[int, int] = (0, 0),
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        output_window: int | None = None,
    ) -> Execution:
        """Attach to a running or recently ended execution (see the sync API)."""
        inner, answered = self._inner.execution_future(
            exec_id,
            cursor=cursor,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            output_window=output_window,
        )
        await asyncio.wrap_future(answered)
        return Execution(inner)

    async def copy_in(self, src: str | os.PathLike[str], dest: str) -> None:
        await asyncio.to_thread(self._inner.copy_in, src, dest)

    async def copy_out(self, src: str, dest: str | os.PathLike[str]) -> None:
        await asyncio.to_thread(self._inner.copy_out, src, dest)

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Env | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        input: bytes | None = None,
        user: str | None = None,
    ) -> ExecResult:
        spec = run_spec(argv, env=env, cwd=cwd, timeout=timeout, input=input, user=user)
        execution = Execution(await asyncio.to_thread(self._inner._exec, spec))
        if input is not None:
            execution._inner._collect()  # output must not wait for the input to go in
            with contextlib.suppress(ExecClosedError):
                await execution.write_stdin(input)
                execution.close_stdin()
        return await execution.wait()


class Images:
    """``Runtime.images``, awaited: pulls and loads run in a thread (their
    progress callback runs there too, one call at a time)."""

    def __init__(self, inner: _images.Images | RemoteImages) -> None:
        self._inner = inner

    async def load(self, path: str | os.PathLike[str], **options: Any) -> list[ImageInfo]:
        return await asyncio.to_thread(lambda: self._inner.load(path, **options))

    async def pull(self, ref: str, **options: Any) -> ImageInfo:
        return await asyncio.to_thread(lambda: self._inner.pull(ref, **options))

    async def list(self) -> list[ImageInfo]:
        return await asyncio.to_thread(self._inner.list)

    async def inspect(self, ref: str) -> ImageInfo:
        return await asyncio.to_thread(self._inner.inspect, ref)

    async def remove(self, ref: str) -> None:
        await asyncio.to_thread(self._inner.remove, ref)

    async def prune(self) -> PruneReport:
        return await asyncio.to_thread(self._inner.prune)


class Runtime:
    """``async with boxlite_ffi.aio.Runtime() as rt: ...``"""

    def __init__(self, home: str | os.PathLike[str] | None = None, **options: Any) -> None:
        self._inner: _runtime.Runtime | RemoteRuntime = _runtime.Runtime(home, **options)

    @classmethod
    def over(cls, inner: _runtime.Runtime | RemoteRuntime) -> Runtime:
        """The asyncio surface of a runtime made already (``connect``'s)."""
        runtime = cls.__new__(cls)
        runtime._inner = inner
        return runtime

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def home(self) -> os.PathLike[str]:
        if isinstance(self._inner, _runtime.Runtime):
            return self._inner.home
        raise UnsupportedError("a server's runtime has no home on this machine")

    @property
    def sync(self) -> _runtime.Runtime | RemoteRuntime:
        return self._inner

    @property
    def images(self) -> Images:
        return Images(self._inner.images)

    @staticmethod
    async def recover(home: str | os.PathLike[str] | None = None) -> RecoveryReport:
        """``Runtime.recover``, off the event loop."""
        return await asyncio.to_thread(_runtime.Runtime.recover, home)

    async def create(self, image: str | os.PathLike[str] | None = None, **options: Any) -> Box:
        return Box(await asyncio.to_thread(lambda: self._inner.create(image, **options)))

    async def pool(
        self, image: str, size: int, *, engine: str | None = None, wait: bool = False
    ) -> None:
        """``Runtime.pool``, off the event loop (a local runtime's only)."""
        local = self._local("warm pools")
        await asyncio.to_thread(local.pool, image, size, engine=engine, wait=wait)

    def pools(self) -> list[PoolInfo]:
        return self._local("warm pools").pools()

    def _local(self, what: str) -> _runtime.Runtime:
        if isinstance(self._inner, _runtime.Runtime):
            return self._inner
        raise UnsupportedError(f"a server's runtime has no {what} here")

    async def get(self, id_or_name: str) -> Box:
        return Box(await asyncio.to_thread(self._inner.get, id_or_name))

    async def list(self, status: Any = None) -> list[BoxInfo]:
        return await asyncio.to_thread(self._inner.list, status)

    async def remove(self, id_or_name: str, *, force: bool = False) -> None:
        await asyncio.to_thread(self._inner.remove, id_or_name, force=force)

    async def close(self) -> None:
        await asyncio.to_thread(self._inner.close)


def connect(url: str, token: str | None = None, **options: Any) -> Runtime:
    """``boxlite_ffi.connect`` for asyncio: a server's boxes, awaited."""
    from .remote import connect as connect_remote

    return Runtime.over(connect_remote(url, token, **options))


__all__ = ["Box", "ExecResult", "Execution", "Images", "Runtime", "connect"]
