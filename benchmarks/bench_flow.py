"""Flow control: what stalled readers cost the host and their neighbours.

20 executions (in 2 boxes) write as fast as they can while nobody reads
them.  Printed: the Python process's RSS growth against the bound the
windows promise (20 x 2 streams x window), and the throughput of one reader
streaming 256 MiB with those stalled neighbours, against the same reader
alone (same process, before the others start).
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path

import boxlite_ffi

from common import rootfs, scratch

STALLED = 20
WINDOW = 2 << 20  # the default
SIZE = 256 << 20
CMD = ["/usr/bin/head", "-c", str(SIZE), "/dev/zero"]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def stream(box: boxlite_ffi.Box) -> float:
    start = time.perf_counter()
    total = sum(len(chunk) for chunk in box.exec(CMD).stdout)
    assert total == SIZE
    return SIZE / (time.perf_counter() - start) / 1e9


def main() -> None:
    base = scratch()
    image = rootfs(base, (CMD[0],))
    with boxlite_ffi.Runtime(base / "home") as rt:
        boxes = [rt.create(rootfs=image) for _ in range(2)]
        for b in boxes:
            b.start()
        alone = [stream(boxes[0]) for _ in range(3)]
        before = rss_bytes()
        stalled = [boxes[i % 2].exec(["sh", "-c", "yes out & yes err >&2"]) for i in range(STALLED)]
        time.sleep(3)  # long enough for unbounded buffering to show
        grown = rss_bytes() - before
        crowded = [stream(boxes[1]) for _ in range(3)]
        held = sum(sum(map(len, s._chunks)) for e in stalled for s in (e.stdout, e.stderr))
        for e in stalled:
            e.close()
        for b in boxes:
            b.close()
    bound = STALLED * 2 * WINDOW
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"## {STALLED} executions writing stdout and stderr, nobody reading")
    print(f"  bytes held for readers   {held / 2**20:8.1f} MiB (bound {bound / 2**20:.0f} MiB)")
    print(f"  RSS growth               {grown / 2**20:8.1f} MiB ({grown / bound:.2f}x the bound)")
    print(f"  peak RSS                 {peak / 2**20:8.1f} MiB")
    print(f"## one reader streaming {SIZE >> 20} MiB (best of 3)")
    print(f"  alone                    {max(alone):6.2f} GB/s")
    print(f"  beside the stalled ones  {max(crowded):6.2f} GB/s")
    print(f"  crowded / alone = {max(crowded) / max(alone):.2f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
