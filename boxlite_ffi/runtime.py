"""Runtime: the entry point.  Owns one native runtime and its boxes."""

from __future__ import annotations

import atexit
import os
import re
import secrets
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

from . import oci_layout
from .box import Box, env_list, remove_tree
from .core import NativeRuntime
from .errors import AlreadyExistsError, ImageError, InvalidArgumentError, NotFoundError
from .home import libexec_dir, resolve_home

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
    ) -> Box:
        """Describe a new box (started by ``start()`` or the first exec).

        ``image`` is an OCI image layout directory; ``rootfs`` a root
        filesystem directory used read-only.  Exactly one is required.
        """
        lower = self._lower_dir(image, rootfs)
        if name is not None and not NAME_RE.fullmatch(name):
            raise InvalidArgumentError(f"invalid box name {name!r}")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidArgumentError("workdir must be an absolute path")
        env_list(env)  # refuse a bad environment now, not at the first exec
        box_id = secrets.token_hex(6)
        with self._lock:
            if name is not None and any(b.name == name for b in self._boxes.values()):
                raise AlreadyExistsError(f"a box named {name!r} exists")
            directory = self.home / "boxes" / box_id
            directory.mkdir(mode=0o700)
            try:
                handle = self._native.box_new(
                    directory,
                    [lower],
                    hostname=name or box_id,
                    stop_grace_ms=self._grace_ms,
                    drain_ms=self._drain_ms,
                    owner_pid=os.getpid(),
                )
            except BaseException:
                remove_tree(directory)
                raise
            box = Box(
                self._native,
                handle,
                box_id=box_id,
                name=name,
                directory=directory,
                env=env,
                workdir=workdir,
                on_close=self._forget,
            )
            self._boxes[box_id] = box
        return box

    def _forget(self, box: Box) -> None:
        with self._lock:
            self._boxes.pop(box.id, None)

    def get(self, id_or_name: str) -> Box:
        with self._lock:
            for box in self._boxes.values():
                if id_or_name in (box.id, box.name):
                    return box
        raise NotFoundError(f"no box {id_or_name!r}")

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
            remove_tree(box.directory)
        _LIVE.discard(self)


def _millis(seconds: float, what: str) -> int:
    ms = round(seconds * 1000)
    if not 1 <= ms <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"{what} must be between 1 ms and 49 days")
    return ms
