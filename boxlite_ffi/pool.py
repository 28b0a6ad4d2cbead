"""Warm pools: boxes started ahead of time, so that a create takes one
instead of starting one (``Runtime(pool=...)``, ``Runtime.pool``).

A pool holds boxes of one image and engine, each made as ``create(image,
engine=engine)`` makes a box and started.  The runtime owns them: their
records carry ``store.POOLED`` (no listing or lookup sees them) and the
runtime's process as owner, so they go with its close or its death like
any box it made (the next runtime on the home reconciles them away).

A create takes a pooled box when its start signature
(``spec.start_signature``: the configuration a start fixes) is the pool's;
taking rewrites, in one store transaction, what a start does not fix: the
name (``AlreadyExistsError`` if another box has it, and the box stays in
the pool), the environment, working directory and user every exec reads,
the image as named, ``auto_remove``.  A taken box is an ordinary box of the
runtime from then on and never returns.  An empty pool (all taken, still
refilling) means a cold start: a create never waits for a pool.

One thread per runtime (``boxlite-pool``, started by the first pool,
joined by ``close``) makes and starts boxes until every pool is full,
starting a pool's missing boxes together (a vm engine's boot takes seconds:
they overlap; the thread never waits on a start), closes the boxes no pool
may hand out any more (those of a pool made smaller while they started,
those whose supervisor ended while they waited: the monitor reports it,
``exited``), and writes a taken box's specification.  It leaves a take be
for ``AFTER_TAKE_S``.  A start that fails pauses its pool, for a time that
doubles up to ``RETRY_MAX_S``; ``PoolInfo`` says why meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .box import Box
from .errors import (
    AlreadyExistsError,
    BoxliteError,
    InternalError,
    InvalidArgumentError,
    RuntimeClosedError,
)
from .spec import TAKEN_FIELDS, is_int
from .state import boxdir
from .state.reconcile import settle
from .state.status import BoxStatus
from .state.store import POOLED, BoxRecord, Change, Store

MAX_POOL_SIZE = 64  # boxes in one pool
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# How long after a take the thread leaves it be (its refill, the taken
# box's specification): the create it served and that box's first
# executions run meanwhile without the thread's Python in their way (one
# interpreter, and cores few).  Later takes do not put it off further.
AFTER_TAKE_S = 0.05


@dataclass(frozen=True)
class PoolInfo:
    """A warm pool as ``Runtime.pools`` reports it."""

    image: str  # as the pool was asked for
    engine: str
    size: int  # boxes it keeps started
    ready: int  # started and not taken
    starting: int
    error: str | None  # why its last fill failed, until one succeeds


def check_pools(pools: object) -> dict[str, int]:
    """``Runtime(pool=...)``: a mapping of image to size."""
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        raise InvalidArgumentError(f"pool must map images to sizes, not {pools!r}")
    for image, size in pools.items():
        check_image(image)
        check_size(size)
    return dict(pools)


def check_image(image: object) -> str:
    if not isinstance(image, str) or not image:
        raise InvalidArgumentError(f"a pool's image is a name, id or path, not {image!r}")
    return image


def check_size(size: object) -> int:
    if not is_int(size) or not 0 <= size <= MAX_POOL_SIZE:
        raise InvalidArgumentError(f"pool size {size!r}: an integer from 0 to {MAX_POOL_SIZE}")
    return size


class _Pool:
    def __init__(self, image: str, engine: str, make: Callable[[], Box]) -> None:
        self.image = image
        self.engine = engine
        self.make = make  # a new pooled box of the pool's kind, not started
        self.size = 0
        self.ready: deque[Box] = deque()
        self.starting: list[Box] = []
        self.error: BoxliteError | None = None
        self.failures = 0  # in a row
        self.retry_at = 0.0  # monotonic; 0: no pause
        self.refill_at = 0.0  # monotonic: after a take (AFTER_TAKE_S)
        self.fills = 0  # starts that ended, either way

    def due(self) -> float:
        return max(self.retry_at, self.refill_at)

    def missing(self, now: float) -> int:
        """Boxes to start now (none while a pause lasts)."""
        if now < self.due():
            return 0
        return max(0, self.size - len(self.ready) - len(self.starting))

    def taken(self, now: float) -> None:
        if self.refill_at <= now:
            self.refill_at = now + AFTER_TAKE_S

    def ended(self, error: BoxliteError | None) -> None:
        """A start (or the making of a box) ended: a failure pauses the pool."""
        self.fills += 1
        self.error = error
        if error is None:
            self.failures, self.retry_at = 0, 0.0
        else:
            self.retry_at = time.monotonic() + min(RETRY_MAX_S, RETRY_MIN_S * 2**self.failures)
            self.failures += 1

    def info(self) -> PoolInfo:
        error = str(self.error) if self.error else None
        return PoolInfo(
            self.image, self.engine, self.size, len(self.ready), len(self.starting), error
        )


# What the thread has to do: boxes to close, specifications to write (of
# boxes taken AFTER_TAKE_S ago), starts that ended (box, its pool, the
# error), pools to fill (how many).
_Work = tuple[
    list[Box],
    list[Box],
    list[tuple[Box, _Pool, BoxliteError | None]],
    list[tuple[_Pool, int]],
]


class Pools:
    """The warm pools of one runtime, by start signature, and their thread."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._pools: dict[str, _Pool] = {}
        self._unwanted: list[Box] = []  # to close
        self._specs: deque[tuple[float, Box]] = deque()  # (when due, taken box)
        self._started: list[tuple[Box, _Pool, BoxliteError | None]] = []
        self._closing = False
        self._thread: threading.Thread | None = None

    # ---- callers ---------------------------------------------------------

    def resize(
        self, signature: str, image: str, engine: str, size: int, make: Callable[[], Box]
    ) -> None:
        """Keep ``size`` boxes of this signature started.  Ready boxes over
        the size are closed before this returns."""
        with self._cond:
            if self._closing:
                raise RuntimeClosedError("the runtime is closed")
            pool = self._pools.get(signature)
            if pool is None:
                pool = self._pools[signature] = _Pool(image, engine, make)
            pool.size, pool.image, pool.retry_at = size, image, 0.0
            surplus = [pool.ready.pop() for _ in range(max(0, len(pool.ready) - size))]
            if self._thread is None and size:
                self._thread = threading.Thread(target=self._loop, name="boxlite-pool", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        for box in surplus:
            box.close()

    def wait_full(self, signature: str) -> None:
        """Until the pool has all its boxes ready; a start that fails
        meanwhile raises its error."""
        with self._cond:
            pool = self._pools[signature]
            fills = pool.fills
            while len(pool.ready) < pool.size:
                if self._closing:
                    raise RuntimeClosedError("the runtime is closed")
                if pool.error is not None and pool.fills > fills:
                    raise pool.error
                self._cond.wait()

    def infos(self) -> list[PoolInfo]:
        with self._cond:
            return [pool.info() for pool in self._pools.values() if pool.size or pool.starting]

    def take(self, signature: str, config: dict[str, Any], name: str | None) -> Box | None:
        """A ready box of the pool of ``signature``, made the box of a create
        of ``config`` and ``name``; None when there is none."""
        while True:
            with self._cond:
                pool = self._pools.get(signature)
                if pool is None or not pool.ready:
                    return None
                box = pool.ready.popleft()
                pool.taken(time.monotonic())
                self._cond.notify_all()  # to refill, later
            try:
                claim = functools.partial(_taken, box=box, config=config, name=name)
                record = self._store.change(box.id, claim)
            except AlreadyExistsError:
                self._give_back(pool, box)  # it was not taken
                raise
            except BoxliteError:
                self._hand_over(self._unwanted, box)
                raise
            if POOLED not in record.config:
                box._take(record)
                with self._cond:
                    self._specs.append((time.monotonic() + AFTER_TAKE_S, box))
                    self._cond.notify_all()
                return box
            self._hand_over(self._unwanted, box)  # its run ended while it waited

    def exited(self, box_id: str) -> None:
        """On the monitor thread: a box's supervisor ended.  A ready box of a
        pool is then of no use: the thread closes it (and refills)."""
        with self._cond:
            for pool in self._pools.values():
                for box in pool.ready:
                    if box.id == box_id:
                        pool.ready.remove(box)
                        self._unwanted.append(box)
                        self._cond.notify_all()
                        return

    def stop_filling(self) -> None:
        """Start no box from now on (the runtime is closing)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close(self) -> list[Box]:
        """Join the thread (after ``stop_filling``, and after the native
        runtime's close, which ends a start in flight); every box still the
        pools', for the caller to close."""
        self.stop_filling()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            boxes = [box for pool in self._pools.values() for box in (*pool.ready, *pool.starting)]
            boxes += self._unwanted
            self._pools.clear()
            self._unwanted, self._started = [], []
            self._specs.clear()
        return boxes

    def _give_back(self, pool: _Pool, box: Box) -> None:
        with self._cond:
            if self._closing or len(pool.ready) + len(pool.starting) >= pool.size:
                self._unwanted.append(box)
            else:
                pool.ready.appendleft(box)
            self._cond.notify_all()

    def _hand_over(self, work: list[Box], box: Box) -> None:
        with self._cond:
            work.append(box)
            self._cond.notify_all()

    # ---- the thread ------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                work = self._next_work()
                while work is None and not self._closing:
                    self._cond.wait(self._pause())
                    work = self._next_work()
                if self._closing or work is None:
                    return
            unwanted, specs, started, fills = work
            steps: list[Callable[[], None]] = [
                *(functools.partial(self._write_spec, box) for box in specs),
                *(functools.partial(self._settle_start, *item) for item in started),
                *(functools.partial(_close, box) for box in unwanted),
                *(functools.partial(self._fill, pool, count) for pool, count in fills),
            ]
            for step in steps:
                try:
                    step()
                except Exception:  # noqa: BLE001 - a bug in one step must not end the pools
                    traceback.print_exc()

    def _next_work(self) -> _Work | None:
        """Under the lock: everything to do now, or None."""
        now = time.monotonic()
        fills = [(pool, n) for pool in self._pools.values() if (n := pool.missing(now))]
        specs = []
        while self._specs and self._specs[0][0] <= now:
            specs.append(self._specs.popleft()[1])
        if not (self._unwanted or specs or self._started or fills):
            return None
        work = (self._unwanted, specs, self._started, fills)
        self._unwanted, self._started = [], []
        return work

    def _pause(self) -> float | None:
        """Under the lock: until the next pause ends (None: until woken)."""
        now = time.monotonic()
        due = [p.due() for p in self._pools.values() if p.size and p.due() > now]
        if self._specs:
            due.append(self._specs[0][0])
        return max(0.0, min(due) - now) if due else None

    def _fill(self, pool: _Pool, count: int) -> None:
        """Make ``count`` boxes of the pool and start them, together (their
        starts end on other threads: ``_start_ended``)."""
        for _ in range(count):
            try:
                box = pool.make()
            except Exception as exc:  # noqa: BLE001 - any failure pauses the pool, no hot loop
                with self._cond:
                    pool.ended(_typed(exc, "making a pooled box"))
                    self._cond.notify_all()
                return
            with self._cond:
                pool.starting.append(box)
            try:
                started = box.start_future()
            except BoxliteError as exc:
                self._start_ended(box, pool, exc)
                continue
            started.add_done_callback(functools.partial(self._future_ended, box, pool))

    def _future_ended(self, box: Box, pool: _Pool, started: Future[None]) -> None:
        error = started.exception()
        self._start_ended(box, pool, _typed(error, "starting a pooled box") if error else None)

    def _start_ended(self, box: Box, pool: _Pool, error: BoxliteError | None) -> None:
        """On any thread: for the pool's thread to settle."""
        with self._cond:
            self._started.append((box, pool, error))
            self._cond.notify_all()

    def _settle_start(self, box: Box, pool: _Pool, error: BoxliteError | None) -> None:
        with self._cond:
            pool.starting.remove(box)
            pool.ended(error)
            keep = error is None and len(pool.ready) < pool.size
            if keep:
                pool.ready.append(box)
            self._cond.notify_all()
        if not keep:
            _close(box)

    def _write_spec(self, box: Box) -> None:
        """A taken box's specification, written in a store transaction: a
        removal commits before it deletes the directory, so it comes wholly
        before this (nothing written) or after (it deletes what was)."""

        def write(record: BoxRecord) -> Change:
            if not record.removed and POOLED not in record.config:
                boxdir.write_spec(box.directory, record, durable=not record.detached)
            return {}

        # Failing, the next open writes it (Runtime._reconcile_all).
        with contextlib.suppress(BoxliteError):
            self._store.change(box.id, write)


def _typed(error: BaseException, doing: str) -> BoxliteError:
    return error if isinstance(error, BoxliteError) else InternalError(f"{doing}: {error!r}")


def _close(box: Box) -> None:
    """On the pool's thread, which nothing may end early: a box that cannot
    be closed now (a full disk) is left to the next open's reconciling."""
    with contextlib.suppress(BoxliteError):
        box.close()


def _taken(record: BoxRecord, box: Box, config: dict[str, Any], name: str | None) -> Change:
    """A pooled box's record as a create of ``config`` and ``name`` wants it;
    nothing taken (only settled) when its run is over."""
    change = settle(record, box.directory)
    if change is not None or record.status != BoxStatus.RUNNING or POOLED not in record.config:
        return change or {}
    mine = {key: value for key, value in record.config.items() if key != POOLED}
    mine |= {key: config[key] for key in TAKEN_FIELDS}
    return {"config": mine, "name": name, "created": time.time()}
