"""The vm engine against its floors: cold start vs bare QEMU, warm exec and a
64 MiB stream vs a namespace box, and the memory an idle VM box holds.

    python benchmarks/bench_vm.py [--rounds N] [--only cold|exec|stream|memory]

Cold start's floor is `boxlite-vmm probe`: the same QEMU booting the same
kernel and initramfs to an init that answers and powers off at once. Every
pair is interleaved, so the machine's drift hits both sides alike.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boxlite_ffi
from boxlite_ffi.home import libexec_dir
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.oci_writer import write_layout
from boxlite_ffi.state.boxdir import SHIM_LOG
from boxlite_ffi.vm.engine import VMM

from common import p50, p90, rootfs, scratch, time_interleaved

STREAM_BYTES = 64 << 20
# coreutils head on both sides: busybox head writes 4 KiB at a time.
HEAD = "/usr/bin/head"
STREAM_CMD = [HEAD, "-c", str(STREAM_BYTES), "/dev/zero"]
PROBE_TIMEOUT_MS = 60_000
KERNEL_LINE = re.compile(r"\[\s*(\d+\.\d+)\]")


def image(base: Path) -> Path:
    """A one-layer OCI layout: busybox plus the host's head."""
    root = rootfs(base, (HEAD,))
    return write_layout(base / "image", [tar_of(root)], config={"Env": ["PATH=/bin"]})


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[-1]


def spread(xs: list[float]) -> str:
    return f"min {min(xs):.3f} max {max(xs):.3f}"


# ---- cold start ----


class LogWatch:
    """Host-side arrival times of the lines of a box's shim.log (the guest's
    console among them): the split of a cold start without touching native code."""

    def __init__(self, path: Path, start: float) -> None:
        self.path, self.start = path, start
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        seen = 0
        while not self._stop.wait(0.005):
            try:
                text = self.path.read_text(errors="replace")
            except OSError:
                continue
            for line in text[seen:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break  # half-written: read it whole next time
                self.lines.append((time.perf_counter() - self.start, line.rstrip()))
                seen += len(line)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join()
        return self.lines


def cold_vm(rt: boxlite_ffi.Runtime, img: Path) -> tuple[dict[str, float], dict[str, str]]:
    start = time.perf_counter()
    box = rt.create(img, engine="vm")
    created = time.perf_counter() - start
    watch = LogWatch(box.directory / SHIM_LOG, start)
    box.start()
    started = time.perf_counter() - start
    assert box.run(["/bin/true"]).ok
    result = time.perf_counter() - start
    vm = box.info().config["vm"]
    box.close()
    total = time.perf_counter() - start
    lines = watch.stop()
    phases = {"create": created, "start": started, "result": result, "total": total}
    if lines:
        phases["log: vmm line"] = lines[0][0]
    for arrived, line in lines:
        if m := KERNEL_LINE.match(line):  # its arrival, and the guest clock's reading in it
            phases["log: first kernel line"] = arrived
            phases["  its kernel timestamp"] = float(m.group(1))
            break
    return phases, {k: str(vm[k]) for k in ("qemu", "kernel", "initrd", "accel")}


def probe(vm: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, the probe's own boot-to-answer ms) of one bare boot."""
    cmd = [
        str(libexec_dir() / VMM),
        "probe",
        vm["qemu"],
        vm["kernel"],
        vm["initrd"],
        vm["accel"],  # what the engine chose: tcg here, kvm where it boots
        str(PROBE_TIMEOUT_MS),
    ]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    m = re.search(r"ok \w+ (\d+) ms", out)
    assert m, out
    return wall, int(m.group(1)) / 1e3


def bench_cold(rt: boxlite_ffi.Runtime, img: Path, rounds: int) -> None:
    _, vm = cold_vm(rt, img)  # warm-up: builds the root image and initramfs
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        phases, _ = cold_vm(rt, img)
        wall, answered = probe(vm)
        for name, value in phases.items():
            samples.setdefault(f"vm {name}", []).append(value)
        samples.setdefault("probe wall", []).append(wall)
        samples.setdefault("probe boot-to-answer", []).append(answered)
    print(
        f"## cold start: vm create+start+run(/bin/true)+close vs bare QEMU probe, {rounds} rounds"
    )
    for name, xs in samples.items():
        print(f"  {name:<28} p50 {p50(xs):7.3f} s  {spread(xs)}")
    ratio = [t / w for t, w in zip(samples["vm total"], samples["probe wall"], strict=True)]
    res = [t / w for t, w in zip(samples["vm result"], samples["probe wall"], strict=True)]
    over = [t - w for t, w in zip(samples["vm result"], samples["probe wall"], strict=True)]
    print(f"  vm total / probe wall        p50 {p50(ratio):5.2f}x  {spread(ratio)}")
    print(f"  vm result / probe wall       p50 {p50(res):5.2f}x  {spread(res)}")
    print(f"  vm result - probe wall       p50 {p50(over):7.3f} s  {spread(over)}")


# ---- warm exec ----


def bench_exec(rt: boxlite_ffi.Runtime, img: Path, rounds: int) -> None:
    with rt.create(img, engine="vm") as vm_box, rt.create(img, engine="ns") as ns_box:
        vm_box.start()
        ns_box.start()

        def true_in(box: boxlite_ffi.Box) -> Callable[[], None]:
            return lambda: None if box.run(["/bin/true"]).ok else _fail(box)

        samples = time_interleaved({"vm": true_in(vm_box), "ns": true_in(ns_box)}, rounds)
    print(f"## warm exec round trip box.run(/bin/true), {rounds} rounds")
    for name, xs in samples.items():
        ms = [
            f"{label} {fn(xs) * 1e3:8.2f} ms"
            for label, fn in (("p50", p50), ("p90", p90), ("p99", p99))
        ]
        print(f"  {name:<4} " + "  ".join(ms))
    print(f"  vm / ns p50 = {p50(samples['vm']) / p50(samples['ns']):.2f}x")


def _fail(box: boxlite_ffi.Box) -> None:
    raise AssertionError(f"/bin/true failed in box {box.id}")


# ---- stream ----


def read_stream(box: boxlite_ffi.Box) -> int:
    total = 0
    for chunk in box.exec(STREAM_CMD).stdout:
        total += len(chunk)
    return total


def bench_stream(rt: boxlite_ffi.Runtime, img: Path, rounds: int) -> None:
    with rt.create(img, engine="vm") as vm_box, rt.create(img, engine="ns") as ns_box:
        vm_box.start()
        ns_box.start()
        rates: dict[str, list[float]] = {"vm": [], "ns": []}
        for _ in range(rounds):
            for name, box in (("vm", vm_box), ("ns", ns_box)):
                start = time.perf_counter()
                assert read_stream(box) == STREAM_BYTES
                rates[name].append(STREAM_BYTES / (time.perf_counter() - start) / 2**20)
    print(f"## 64 MiB of stdout through Box.exec, {rounds} rounds")
    for name, xs in rates.items():
        print(f"  {name:<4} p50 {p50(xs):8.1f} MiB/s  {spread(xs)}")
    print(f"  vm / ns p50 = {p50(rates['vm']) / p50(rates['ns']):.3f}x")


# ---- memory ----


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    kids, out, todo = children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    assert m, text
    return int(m.group(1))


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def supervisor(box: boxlite_ffi.Box) -> int:
    """The box's shim or boxlite-vmm: the process whose command line names its box dir."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"/boxes/{box.id}\0".encode() in cmdline:
                return int(entry.name)
    raise AssertionError(f"no supervisor for box {box.id}")


def bench_memory(rt: boxlite_ffi.Runtime, img: Path, rounds: int) -> None:
    per: dict[str, list[int]] = {}
    for _ in range(rounds):
        with rt.create(img, engine="vm") as vm_box, rt.create(img, engine="ns") as ns_box:
            vm_box.start()
            ns_box.start()
            assert vm_box.run(["/bin/true"]).ok and ns_box.run(["/bin/true"]).ok
            time.sleep(2)  # idle
            for engine, box in (("vm", vm_box), ("ns", ns_box)):
                for pid in tree(supervisor(box)):
                    per.setdefault(f"{engine} {comm(pid)}", []).append(pss_kib(pid))
    print(f"## PSS of an idle box's processes (smaps_rollup), {rounds} rounds")
    for name, xs in sorted(per.items()):
        mib = [x / 1024 for x in xs]
        print(f"  {name:<28} p50 {p50(mib):7.1f} MiB  {spread(mib)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--exec-rounds", type=int, default=200)
    parser.add_argument("--only", choices=["cold", "exec", "stream", "memory"])
    args = parser.parse_args()
    base = scratch()
    img = image(base)
    benches: dict[str, Callable[[], None]] = {
        "cold": lambda: bench_cold(rt, img, args.rounds),
        "exec": lambda: bench_exec(rt, img, args.exec_rounds),
        "stream": lambda: bench_stream(rt, img, args.rounds),
        "memory": lambda: bench_memory(rt, img, max(1, args.rounds // 2)),
    }
    with boxlite_ffi.Runtime(base / "home") as rt:
        for name, bench in benches.items():
            if args.only in (None, name):
                bench()
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
