"""Events per second through the native queue and the drain thread.

A producer thread posts completions with boxlite_runtime_post (blocking when
the queue is full); the runtime's own drain thread dispatches them into
Python.  Baseline: the same number of items through a ``queue.Queue``
between two Python threads.
"""

from __future__ import annotations

import queue
import shutil
import sys
import threading
import time

import boxlite_ffi
from boxlite_ffi._core import callbacks as _callbacks
from boxlite_ffi._core.tokens import TOKENS
from boxlite_ffi._native import ffi, lib

from common import scratch

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()

    def on_done(self, status: int, message: str | None) -> None:
        self.count += 1
        if self.count == N:
            self.done.set()


def native_rate(rt: boxlite_ffi.Runtime) -> float:
    counter = Counter()
    tokens = [TOKENS.register(rt.native, counter) for _ in range(N)]
    start = time.perf_counter()
    with rt.native._use() as raw:
        for token in tokens:
            rc = lib.boxlite_runtime_post(raw, _callbacks.DONE, ffi.cast("void *", token), 0, -1)
            assert rc == 0
    counter.done.wait()
    return N / (time.perf_counter() - start)


def python_queue_rate() -> float:
    q: queue.Queue[int] = queue.Queue(maxsize=4096)
    done = threading.Event()

    def consume() -> None:
        for _ in range(N):
            q.get()
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    start = time.perf_counter()
    for i in range(N):
        q.put(i)
    done.wait()
    return N / (time.perf_counter() - start)


def main() -> None:
    base = scratch()
    with boxlite_ffi.Runtime(base / "home") as rt:
        native = max(native_rate(rt) for _ in range(3))
    baseline = max(python_queue_rate() for _ in range(3))
    print(f"## events through queue and drain ({N} per run, best of 3)")
    print(f"  boxlite post -> drain -> Python callback  {native / 1e3:8.1f} k events/s")
    print(f"  queue.Queue between two Python threads   {baseline / 1e3:8.1f} k items/s")
    print(f"  boxlite / queue.Queue = {native / baseline:.2f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
