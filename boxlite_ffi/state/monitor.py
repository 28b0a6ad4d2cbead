"""The runtime's lifecycle thread: it notices shims that exit (a pidfd
each) and does the store writes that must not happen on the drain thread.

When a watched shim exits, ``on_exit(box_id)`` runs here; its result (or
error) completes every Future handed out by ``ended`` for that box.  Jobs
submitted from other threads (native completions) run here in order.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import RuntimeClosedError


class Monitor:
    def __init__(self, on_exit: Callable[[str], Any]) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._closed = False
        self._pidfds: dict[int, str] = {}  # pidfd -> box id
        self._waiters: dict[str, list[Future[Any]]] = {}
        self._jobs: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._loop, name="boxlite-monitor", daemon=True)
        self._thread.start()

    def watch(self, box_id: str, pid: int | None, still_it: Callable[[], bool]) -> None:
        """Report when process ``pid`` (None: already gone) exits.  ``still_it``
        is asked once a pidfd holds the pid: a reused pid counts as gone."""
        pidfd = -1
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid) if pid is not None else -1
        if pidfd >= 0 and not still_it():
            os.close(pidfd)
            pidfd = -1
        if pidfd < 0:
            self.submit(lambda: self.report_exit(box_id))
            return
        with self._lock:
            if self._closed:
                os.close(pidfd)
                raise RuntimeClosedError("the runtime is closed")
            self._pidfds[pidfd] = box_id
            self._wake_locked()

    def watching(self, box_id: str) -> bool:
        with self._lock:
            return box_id in self._pidfds.values()

    def ended(self, box_id: str) -> Future[Any]:
        """Completed with ``on_exit``'s result when the box's watched shim exits."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("the runtime is closed")
            self._waiters.setdefault(box_id, []).append(future)
        return future

    def discard(self, box_id: str, future: Future[Any]) -> None:
        """Drop a waiter from ``ended`` that is no longer needed."""
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._waiters[box_id].remove(future)

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("the runtime is closed")
            self._jobs.append(job)
            self._wake_locked()

    def close(self) -> None:
        """Stop watching; pending waiters get RuntimeClosedError.  Joins the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake_locked()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _wake_locked(self) -> None:
        """Under the lock, which ``_shut_down`` takes to close the pipe: never
        a write to a closed fd whose number someone else may hold by now."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: set[int] = set()
        while True:
            with self._lock:
                closed, jobs, self._jobs = self._closed, self._jobs, []
                pidfds = set(self._pidfds)
            for job in jobs:
                self._run(job)
            if closed:
                break
            for fd in pidfds - registered:
                poller.register(fd, select.POLLIN)
            registered = pidfds
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                poller.unregister(fd)
                registered.discard(fd)
                with self._lock:
                    box_id = self._pidfds.pop(fd)
                os.close(fd)
                self.report_exit(box_id)
        self._shut_down()

    @staticmethod
    def _run(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - a bug in a job must not end the monitoring
            traceback.print_exc()

    def report_exit(self, box_id: str) -> None:
        """The box's shim is gone: run on_exit, complete its waiters."""
        with self._lock:
            waiters = self._waiters.pop(box_id, [])
        try:
            result = self._on_exit(box_id)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, not lost
            for future in waiters:
                future.set_exception(exc)
            return
        for future in waiters:
            future.set_result(result)

    def _shut_down(self) -> None:
        with self._lock:
            pidfds, self._pidfds = list(self._pidfds), {}
            waiters, self._waiters = self._waiters, {}
            for fd in [*pidfds, self._wake_r, self._wake_w]:
                os.close(fd)
        for futures in waiters.values():
            for future in futures:
                future.set_exception(RuntimeClosedError("the runtime is closed"))
