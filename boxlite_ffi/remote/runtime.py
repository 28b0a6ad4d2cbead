"""``RemoteRuntime``: a ``boxlite serve`` (or any server of BoxLite's Box
API) with ``Runtime``'s API.  ``boxlite_ffi.connect`` makes one."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from ..boxapi import BOX, BOXES
from ..errors import (
    AuthenticationError,
    ConnectionLostError,
    InvalidArgumentError,
    UnsupportedError,
)
from ..spec import (
    DEFAULT_VM_READY_MS,
    DISK_MIN,
    Env,
    check_cwd,
    check_engine,
    check_name,
    env_dict,
    parse_limits,
    parse_size,
)
from ..state.status import BoxStatus, wanted_statuses
from ..state.views import BoxInfo
from .box import RemoteBox
from .images import RemoteImages
from .transport import Transport
from .views import box_info

DEFAULT_TIMEOUT_S = 300.0  # a request's answer (a vm box's start takes its boot)
DEFAULT_RETRY_S = 30.0  # how long an unreachable server is waited for

_LIVE: weakref.WeakSet[RemoteRuntime] = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    # As for a local runtime: the boxes this program owns go with it.
    for rt in list(_LIVE):
        rt.close()


class RemoteRuntime:
    """Boxes of one server.  Use as a context manager.

    ``token`` is the server's (default ``$BOXLITE_SERVE_TOKEN``);
    ``timeout`` bounds the wait for an answer, ``retry_for`` how long a
    server that cannot be reached is tried again for (requests that are
    safe to repeat, and attach sockets); ``verify`` checks an https
    server's certificate (True: the system's CAs, or a CA file, or False).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_for: float = DEFAULT_RETRY_S,
        verify: bool | str = True,
    ) -> None:
        if token is None:
            token = os.environ.get("BOXLITE_SERVE_TOKEN")
        self.url = url
        self._t = Transport(url, token, timeout=timeout, retry_for=retry_for, verify=verify)
        self._images = RemoteImages(self._t)
        self._lock = threading.Lock()
        self._boxes: dict[str, RemoteBox] = {}
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<RemoteRuntime {self.url}>"

    def __enter__(self) -> RemoteRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._t.closed

    @property
    def images(self) -> RemoteImages:
        """The server's image cache: pull, list, inspect."""
        return self._images

    def create(
        self,
        image: str | os.PathLike[str] | None = None,
        *,
        rootfs: str | os.PathLike[str] | None = None,
        name: str | None = None,
        env: Env | None = None,
        workdir: str | None = None,
        cmd: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        use_image_cmd: bool = False,
        user: str | None = None,
        volumes: Iterable[Any] | None = (),
        memory: int | str | None = None,
        cpus: float | None = None,
        pids: int | None = None,
        network: bool = False,
        host_loopback: bool = False,
        disk: int | str | None = None,
        log_limit: int | str | None = None,
        tmp_size: int | str | None = None,
        detach: bool = False,
        auto_remove: bool = False,
        engine: str | None = None,
        accel: str = "auto",
        ready_timeout: float = DEFAULT_VM_READY_MS / 1000,
    ) -> RemoteBox:
        """As ``Runtime.create``, on the server: ``image`` is one of its
        cache, ``rootfs`` a directory of its machine (under its
        ``--allow-rootfs``).  Host volumes, ``auto_remove``, ``accel`` and
        ``ready_timeout`` are the server's to decide: ``UnsupportedError``."""
        if (image is None) == (rootfs is None):
            raise InvalidArgumentError("give exactly one of image= or rootfs=")
        if isinstance(image, os.PathLike):
            raise UnsupportedError("an image archive of this machine: pull it into the server")
        if volumes:
            raise UnsupportedError("volumes of this machine's paths in a server's box")
        if auto_remove:
            raise UnsupportedError("auto_remove (the contract's auto_delete is not served)")
        if accel != "auto" or ready_timeout != DEFAULT_VM_READY_MS / 1000:
            raise UnsupportedError("accel and ready_timeout: the server's own settings")
        check_name(name)
        limits = parse_limits(memory, cpus, pids, log_limit, tmp_size)
        body = {
            "image": image,
            "rootfs_path": os.fspath(rootfs) if rootfs is not None else None,
            "name": name,
            "env": env_dict(env) or None,
            "working_dir": check_cwd(workdir, "workdir"),
            "cmd": list(cmd) if cmd is not None else None,
            "entrypoint": list(entrypoint) if entrypoint is not None else None,
            "user": user,
            "network": {"outbound": {"mode": "enabled"}} if network else None,
            "boxlite_host_loopback": host_loopback,
            "boxlite_use_image_cmd": use_image_cmd,
            "boxlite_memory": limits.get("memory_limit"),
            "boxlite_cpus": limits["cpu_millis"] / 1000 if "cpu_millis" in limits else None,
            "boxlite_pids": pids,
            "boxlite_log_limit": limits.get("log_limit"),
            "boxlite_tmp_size": limits.get("tmp_size"),
            "boxlite_disk": parse_size(disk, "disk", DISK_MIN) if disk is not None else None,
            "boxlite_engine": check_engine(engine, "engine") if engine is not None else None,
        }
        body = {k: v for k, v in body.items() if v is not None}
        reply = self._t.call(self._t.request("POST", BOXES, json=body, idempotent=True))
        return self._track(RemoteBox(self._t, reply.json(), owned=not detach, forget=self._forget))

    def _track(self, box: RemoteBox) -> RemoteBox:
        with self._lock:
            return self._boxes.setdefault(box.id, box)

    def _forget(self, box: RemoteBox) -> None:
        with self._lock:
            if self._boxes.get(box.id) is box:
                del self._boxes[box.id]

    def get(self, id_or_name: str) -> RemoteBox:
        """A box by id or name (exactly: no id prefixes over HTTP)."""
        view = self._t.call(self._t.request("GET", BOX.format(box_id=id_or_name)))
        with self._lock:
            known = self._boxes.get(view.json()["box_id"])
        if known is not None:
            return known
        return self._track(RemoteBox(self._t, view.json(), owned=False, forget=self._forget))

    def list(
        self, status: BoxStatus | str | Iterable[BoxStatus | str] | None = None
    ) -> list[BoxInfo]:
        """Every box of the server (oldest first); only those in ``status``."""
        wanted = wanted_statuses(status)
        with self._lock:
            owned = {i for i, b in self._boxes.items() if not b.detached}
        views = self._t.call(self._t.every(BOXES, "boxes"))
        infos = [box_info(v, detached=v["box_id"] not in owned) for v in views]
        return [i for i in infos if wanted is None or i.status in wanted]

    def remove(self, id_or_name: str, *, force: bool = False) -> None:
        self.get(id_or_name).remove(force=force)

    def close(self) -> None:
        """Close every box (those this client owns are removed), then the connection."""
        if self._t.closed:
            return
        with self._lock:
            boxes = list(self._boxes.values())
        try:
            for box in boxes:
                with contextlib.suppress(ConnectionLostError, AuthenticationError):
                    box.close()  # a server gone keeps them: nothing more to do here
        finally:
            self._t.close()
            _LIVE.discard(self)


def connect(
    url: str,
    token: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_for: float = DEFAULT_RETRY_S,
    verify: bool | str = True,
) -> RemoteRuntime:
    """A runtime whose boxes are a server's (``boxlite serve``), with the
    same API as ``Runtime``.  See ``RemoteRuntime``."""
    return RemoteRuntime(url, token, timeout=timeout, retry_for=retry_for, verify=verify)
