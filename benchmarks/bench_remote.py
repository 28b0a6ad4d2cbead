"""Through the server against the local API, interleaved in one run: an exec
round trip, 256 MiB of stdout streamed, and executions from 8 threads at
once.  A ``boxlite serve`` on loopback (its own home) serves the remote box;
the local box is on a home of this process.

    python3 benchmarks/bench_remote.py [ROUNDS]
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

import boxlite_ffi

from common import p50, report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
STREAM = 256 << 20
THREADS, PER_THREAD = 8, 25


def serve(home: str, allow: str, token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = 8100 + secrets.randbelow(800)
    argv = [sys.executable, "-m", "boxlite_ffi.server", "--home", home, "--port", str(port)]
    env = {**os.environ, "BOXLITE_SERVE_TOKEN": token}
    proc = subprocess.Popen([*argv, "--allow-rootfs", allow], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/v1/config", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def streamed(box: boxlite_ffi.Box) -> None:
    execution = box.exec(["head", "-c", str(STREAM), "/dev/zero"])
    assert sum(len(c) for c in execution.stdout) == STREAM
    assert execution.wait().ok


def concurrent(box: boxlite_ffi.Box) -> None:
    def one(_: int) -> None:
        for _ in range(PER_THREAD):
            assert box.run(["/bin/true"]).ok

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(THREADS)))


def compare(
    title: str,
    operation: Callable[[boxlite_ffi.Box], object],
    boxes: tuple[boxlite_ffi.Box, boxlite_ffi.Box],
    rounds: int,
    amount: float = 0,
    unit: str = "",
) -> None:
    """``operation`` on the remote box against the local one, interleaved;
    with ``amount``, also as a rate (``amount`` per p50)."""
    there, here = boxes
    fns = {f"remote {title}": lambda: operation(there), f"local {title}": lambda: operation(here)}
    samples = time_interleaved(fns, rounds)
    report(title, samples, f"remote {title}")
    for name, xs in samples.items() if amount else ():
        print(f"  {name:<28} {amount / p50(xs):8.0f} {unit}")


def main() -> None:
    base = scratch()
    root = rootfs(base)
    token = secrets.token_hex(16)
    server, url = serve(str(base / "serve-home"), str(root.parent), token)
    try:
        with (
            boxlite_ffi.Runtime(base / "home") as rt,
            boxlite_ffi.connect(url, token) as remote,
            rt.create(rootfs=root) as here,
            remote.create(rootfs=root) as there,
        ):
            here.start()
            there.start()
            compare("exec round trip", lambda b: b.run(["/bin/true"]), (there, here), ROUNDS)
            compare("256 MiB of stdout", streamed, (there, here), 3, STREAM / 2**20, "MiB/s")
            work = THREADS * PER_THREAD
            compare(f"{THREADS}x{PER_THREAD} execs", concurrent, (there, here), 3, work, "execs/s")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
