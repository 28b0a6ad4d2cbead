"""Events per second from a native producer into Python callbacks.

A native producer (tests/native/event_producer.c, compiled here: a C loop of
boxlite_runtime_post, blocking while the queue is full) posts N completions;
they reach Python sinks by token:

  take     the Runtime's own drain thread: boxlite_runtime_take, one cffi
           crossing per batch (this build)
  drain    a thread calling boxlite_runtime_drain, one cffi callback per
           event (the protocol before take), on a second native runtime
  py-post  the take drain again, fed by a Python loop of boxlite_runtime_post
           (the producer this benchmark had before)

Baseline: N items through a ``queue.Queue`` (4096 slots, the native queue's
default capacity) between two Python threads.  Rounds alternate, so drift
hits all alike; ratios are of medians.

    python3 benchmarks/bench_events.py [N] [ROUNDS]
"""

from __future__ import annotations

import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cffi

import boxlite_ffi
from boxlite_ffi._core import callbacks as _callbacks
from boxlite_ffi._core.tokens import TOKENS
from boxlite_ffi._native import ffi, lib
from boxlite_ffi.home import libexec_dir

from common import scratch

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
ROOT = Path(__file__).resolve().parents[1]
PRODUCER_SOURCE = ROOT / "tests" / "native" / "event_producer.c"
PRODUCER_CDEF = """
typedef struct boxlite_runtime boxlite_runtime;
typedef void (*boxlite_done_cb)(void *, int, const char *);
typedef int (*post_fn)(boxlite_runtime *, boxlite_done_cb, void *, int, int);
size_t bl_produce_events(post_fn, boxlite_runtime *, boxlite_done_cb, const uintptr_t *, size_t,
                         int *);
"""


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()

    def on_done(self, status: int, message: str | None) -> None:
        self.count += 1
        if self.count == N:
            self.done.set()


class Producer:
    """The compiled native producer."""

    def __init__(self, workdir: Path) -> None:
        so = workdir / "event_producer.so"
        cmd = ["cc", "-std=c11", "-O2", "-fPIC", "-shared", f"-I{ROOT / 'include'}"]
        subprocess.run([*cmd, str(PRODUCER_SOURCE), "-o", str(so)], check=True)
        self.ffi = cffi.FFI()
        self.ffi.cdef(PRODUCER_CDEF)
        self.lib: Any = self.ffi.dlopen(str(so))
        self.post = self._cross("post_fn", ffi.addressof(lib, "boxlite_runtime_post"))
        self.done_cb = self._cross("boxlite_done_cb", _callbacks.DONE)

    def _cross(self, ctype: str, cdata: Any) -> Any:
        """cdata of the extension's ffi as this ffi's ctype."""
        return self.ffi.cast(ctype, int(ffi.cast("uintptr_t", cdata)))

    def run(self, raw_rt: Any, tokens: list[int]) -> None:
        """Post one completion per token from C (the GIL is released)."""
        arr = self.ffi.new("uintptr_t[]", tokens)
        status = self.ffi.new("int *")
        rt = self._cross("boxlite_runtime *", raw_rt)
        posted = self.lib.bl_produce_events(self.post, rt, self.done_cb, arr, len(tokens), status)
        assert posted == len(tokens), f"post failed: {status[0]}"


def timed(owner: object, post: Callable[[list[int]], None]) -> float:
    """Events per second of N completions posted by post, dispatched to one Counter."""
    counter = Counter()
    tokens = [TOKENS.register(owner, counter) for _ in range(N)]
    start = time.perf_counter()
    thread = threading.Thread(target=post, args=(tokens,))
    thread.start()
    counter.done.wait()
    elapsed = time.perf_counter() - start
    thread.join()
    return N / elapsed


@contextmanager
def per_event_runtime() -> Iterator[Any]:
    """A second native runtime drained the way the Python layer did before
    take: boxlite_runtime_drain, each event one callback into Python."""
    keep = ffi.new("char[]", str(libexec_dir()).encode())
    opts = ffi.new("boxlite_runtime_options *", {"libexec_dir": keep})
    out = ffi.new("boxlite_runtime **")
    assert lib.boxlite_runtime_new(opts, out) == 0
    raw = out[0]

    def drain() -> None:
        while lib.boxlite_runtime_drain(raw, 256, -1) >= 0:
            pass

    thread = threading.Thread(target=drain, name="per-event-drain")
    thread.start()
    try:
        yield raw
    finally:
        lib.boxlite_runtime_close(raw)
        thread.join()
        lib.boxlite_runtime_free(raw)


def python_post(raw_rt: Any, tokens: list[int]) -> None:
    for token in tokens:
        rc = lib.boxlite_runtime_post(raw_rt, _callbacks.DONE, ffi.cast("void *", token), 0, -1)
        assert rc == 0


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


def measure(producer: Producer, rt: boxlite_ffi.Runtime, old: Any) -> dict[str, list[float]]:
    """Rates of each way, ROUNDS rounds interleaved."""
    with rt.native._use() as raw:
        runs: dict[str, Callable[[], float]] = {
            "queue.Queue": python_queue_rate,
            "take": lambda: timed(rt, lambda t: producer.run(raw, t)),
            "drain": lambda: timed(old, lambda t: producer.run(old, t)),
            "py-post": lambda: timed(rt, lambda t: python_post(raw, t)),
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(ROUNDS):
            for name, run in runs.items():
                rates[name].append(run())
    return rates


def main() -> None:
    base = scratch()
    with tempfile.TemporaryDirectory(prefix="boxlite-producer-") as tmp:
        producer = Producer(Path(tmp))
        with boxlite_ffi.Runtime(base / "home") as rt, per_event_runtime() as old:
            rates = measure(producer, rt, old)
    shutil.rmtree(base, ignore_errors=True)
    report(rates)


def report(rates: dict[str, list[float]]) -> None:
    base = statistics.median(rates["queue.Queue"])
    print(f"## events into Python callbacks ({N} per run, {ROUNDS} rounds interleaved)")
    labels = {
        "queue.Queue": "queue.Queue between two Python threads",
        "take": "native producer -> take drain (batch)",
        "drain": "native producer -> drain, per event",
        "py-post": "Python producer -> take drain",
    }
    for name, xs in rates.items():
        med = statistics.median(xs)
        spread = f"{min(xs) / 1e3:7.1f}-{max(xs) / 1e3:7.1f}"
        print(
            f"  {labels[name]:<40} median {med / 1e3:7.1f} k/s  (range {spread})"
            f"  {med / base:5.2f}x queue.Queue"
        )
    take, drain = statistics.median(rates["take"]), statistics.median(rates["drain"])
    print(f"  take / per-event drain = {take / drain:.2f}x")


if __name__ == "__main__":
    main()
