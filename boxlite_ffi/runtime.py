"""Runtime: the entry point.  Owns one native runtime and its boxes."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import oci_layout
from .box import Box, env_list, remove_tree
from .core import BoxConfig, NativeRuntime
from .errors import ImageError, InvalidArgumentError, NotFoundError
from .home import libexec_dir, resolve_home
from .store import BoxRecord, Shim, Store

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_STOP_GRACE_MS = 10_000
DEFAULT_DRAIN_MS = 100

_LIVE: weakref.WeakSet[Runtime] = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    # A program that forgets close() still leaves no box behind.
    for rt in list(_LIVE):
        rt.close()


class Runtime:
    """Creates and tracks boxes.  Use as a context manager.

    ``home`` (default ``$BOXLITE_HOME`` or ``~/.boxlite``) holds box
    directories and the image cache.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        queue_capacity: int = 0,
        workers: int = 0,
        stop_grace: float = DEFAULT_STOP_GRACE_MS / 1000,
        drain_window: float = DEFAULT_DRAIN_MS / 1000,
    ) -> None:
        for value, what in ((queue_capacity, "queue_capacity"), (workers, "workers")):
            if not 0 <= value <= 0xFFFFFFFF:
                raise InvalidArgumentError(f"{what} out of range: {value}")
        self.home = resolve_home(home)
        self._grace_ms = _millis(stop_grace, "stop_grace")
        self._drain_ms = _millis(drain_window, "drain_window")
        self._store = Store(self.home / "boxlite.db")
        self._native = NativeRuntime(libexec_dir(), queue_capacity=queue_capacity, workers=workers)
        self._lock = threading.Lock()
        self._boxes: dict[str, Box] = {}
        _LIVE.add(self)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def native(self) -> NativeRuntime:
        """The core layer (for tests and SDKs built on top)."""
        return self._native

    def create(
        self,
        image: str | os.PathLike[str] | None = None,
        *,
        rootfs: str | os.PathLike[str] | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        detach: bool = False,
    ) -> Box:
        """Describe a new box (started by ``start()`` or the first exec).

        ``image`` is an OCI image layout directory; ``rootfs`` a root
        filesystem directory used read-only.  Exactly one is required.
        A box dies with this program, unless ``detach=True``: then closing
        it or the runtime lets go of it, and ``Runtime.get`` finds it again
        by id or name, from any process, with its executions.
        """
        lower = self._lower_dir(image, rootfs)
        if name is not None and not NAME_RE.fullmatch(name):
            raise InvalidArgumentError(f"invalid box name {name!r}")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidArgumentError("workdir must be an absolute path")
        env_list(env)  # refuse a bad environment now, not at the first exec
        box_id = secrets.token_hex(6)
        directory = self.home / "boxes" / box_id
        record = {
            "lowers": [str(lower)],
            "hostname": name or box_id,
            "env": dict(env or {}),
            "workdir": workdir,
            "stop_grace_ms": self._grace_ms,
            "drain_ms": self._drain_ms,
        }
        config = _native_config(directory, record, detach)
        self._store.add(box_id, name, record, detach)
        try:
            directory.mkdir(mode=0o700)
            handle = self._native.box_new(config, owner_pid=0 if detach else os.getpid())
        except BaseException:
            self._store.remove(box_id)
            remove_tree(directory)
            raise
        return self._track(handle, box_id, name, config.directory, record, kept=detach)

    def _track(
        self,
        handle: int,
        box_id: str,
        name: str | None,
        directory: Path,
        record: dict[str, Any],
        *,
        kept: bool,
    ) -> Box:
        box = Box(
            self._native,
            handle,
            box_id=box_id,
            name=name,
            directory=directory,
            env=record["env"],
            workdir=record["workdir"],
            kept=kept,
            on_close=self._forget,
            on_started=self._started if kept else None,
        )
        with self._lock:
            self._boxes[box_id] = box
        return box

    def _started(self, box: Box) -> None:
        shim = Shim.of(box.shim_pid)
        if shim is not None:
            self._store.set_shim(box.id, shim)

    def _forget(self, box: Box) -> None:
        with self._lock:
            self._boxes.pop(box.id, None)
        if not box.kept:
            self._store.remove(box.id)

    def get(self, id_or_name: str) -> Box:
        """A box by name, id or unique id prefix: one of this runtime's, or
        a running one that another runtime left (``detach=True``), connected
        to.  ``NotFoundError`` when there is none, or it no longer runs."""
        with self._lock:
            for box in self._boxes.values():
                if id_or_name in (box.id, box.name):
                    return box
        record = self._store.find(id_or_name)
        with self._lock:
            if record.id in self._boxes:
                return self._boxes[record.id]
        return self._connect(record)

    def _connect(self, record: BoxRecord) -> Box:
        shim = record.shim
        if shim is None or not shim.alive():
            raise NotFoundError(f"box {record.id} is not running")
        directory = self.home / "boxes" / record.id
        config = _native_config(directory, record.config, record.detached)
        handle = self._native.box_connect(config, shim.pid, shim.start_ticks)
        box = self._track(handle, record.id, record.name, directory, record.config, kept=True)
        box._mark_running()
        return box

    def remove(self, id_or_name: str) -> None:
        """Stop a box (of this runtime or found by ``get``) and delete it:
        its processes, directory and record."""
        box = self.get(id_or_name)
        box.stop()
        box.close()
        with contextlib.suppress(FileNotFoundError):
            remove_tree(box.directory)
        self._store.remove(box.id)

    def _lower_dir(
        self, image: str | os.PathLike[str] | None, rootfs: str | os.PathLike[str] | None
    ) -> Path:
        if (image is None) == (rootfs is None):
            raise InvalidArgumentError("give exactly one of image= or rootfs=")
        if rootfs is not None:
            path = Path(rootfs).resolve()
            if not path.is_dir():
                raise NotFoundError(f"rootfs {path} is not a directory")
            return path
        path = Path(image).resolve()  # type: ignore[arg-type]
        if not path.is_dir():
            raise ImageError(f"image {image} not found (an OCI image layout directory)")
        return oci_layout.unpack(path, self.home / "images")

    def close(self) -> None:
        """Kill every box, complete every pending operation, remove box directories."""
        self._native.close()
        with self._lock:
            boxes, self._boxes = list(self._boxes.values()), {}
        for box in boxes:
            if not box.kept:
                remove_tree(box.directory)
                self._store.remove(box.id)
        self._store.close()
        _LIVE.discard(self)


def _native_config(directory: Path, record: dict[str, Any], detached: bool) -> BoxConfig:
    """What the native core needs, from a box's stored configuration."""
    return BoxConfig(
        directory,
        tuple(Path(p) for p in record["lowers"]),
        record["hostname"],
        record["stop_grace_ms"],
        record["drain_ms"],
        detached,
    )


def _millis(seconds: float, what: str) -> int:
    ms = round(seconds * 1000)
    if not 1 <= ms <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"{what} must be between 1 ms and 49 days")
    return ms
