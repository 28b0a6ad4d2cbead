"""Images: pull + unpack of a multi-layer image from a registry on loopback
(skopeo, and skopeo + umoci unpack, as baselines), and box start from a
cached image: its layers stacked by overlayfs, against the same tree
flattened into one directory, with bwrap as the baseline.

    python benchmarks/bench_images.py [ROUNDS]
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boxlite_ffi
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.oci_writer import write_layout

from common import bwrap_true, p50, report, rootfs, scratch, time_interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_server import SKOPEO, RegistryServer

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
LAYERS = 9  # busybox + 8 of files


def files_layer(i: int) -> bytes:
    """2 MiB of noise and 300 small files: a plausible application layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = [(f"app{i}/blob", os.urandom(2 << 20))]
        entries += [(f"app{i}/src/f{j}.py", f"print({j})\n".encode() * 20) for j in range(300)]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def flatten(layers: list[bytes], dest: Path) -> Path:
    dest.mkdir()
    for raw in layers:  # no whiteouts in these layers: plain extraction is the merge
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            tar.extractall(dest, filter="tar")
    return dest


def bench_pull(base: Path, layers: list[bytes]) -> None:
    layout = write_layout(base / "layout", layers, config={"Env": ["PATH=/bin"]})
    size = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
    registry = RegistryServer(base / "registry")
    try:
        ref = registry.push(layout, "bench/app:1")
        n = [0]

        def pull() -> None:
            n[0] += 1
            with boxlite_ffi.Runtime(base / f"home{n[0]}") as rt:
                rt.images.pull(ref)
            shutil.rmtree(base / f"home{n[0]}")

        def skopeo(unpack: bool) -> None:
            out = base / "skopeo"
            subprocess.run(
                [SKOPEO, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:1"],
                check=True,
            )
            if unpack:
                subprocess.run(
                    ["umoci", "--log", "error", "unpack", "--rootless", "--image", f"{out}:1",
                     base / "bundle"],
                    check=True,
                )  # fmt: skip
                shutil.rmtree(base / "bundle")
            shutil.rmtree(out)

        rounds = max(3, ROUNDS // 4)
        samples = time_interleaved(
            {
                "boxlite pull + unpack": pull,
                "skopeo copy (no unpack)": lambda: skopeo(False),
                "skopeo copy + umoci unpack": lambda: skopeo(True),
            },
            rounds,
        )
        mb = size / 1e6
        print(f"({LAYERS} layers, {mb:.1f} MB of blobs, {rounds} rounds)")
        report("pull + unpack from a registry on loopback", samples, "boxlite pull + unpack")
        print(f"  boxlite: {mb / p50(samples['boxlite pull + unpack']):.0f} MB/s")
    finally:
        registry.stop()


def bench_start(base: Path, layers: list[bytes]) -> None:
    flat = flatten(layers, base / "flat")
    bwrap = bwrap_true(flat)
    assert bwrap is not None, "bwrap is the baseline: apt-get install bubblewrap"
    with boxlite_ffi.Runtime(base / "home-start") as rt:
        rt.images.load(
            write_layout(base / "stacked", layers, config={"Env": ["PATH=/bin"]}), tag="stacked"
        )
        tall = [layers[0], *(tar_of_file(f"l{i}", b"x") for i in range(99))]
        rt.images.load(write_layout(base / "tall", tall, config={"Env": ["PATH=/bin"]}), tag="tall")

        def run(**where: object) -> None:
            with rt.create(**where) as box:  # type: ignore[arg-type]
                assert box.run(["/bin/true"]).ok

        samples = time_interleaved(
            {
                f"boxlite {LAYERS} layers stacked": lambda: run(image="stacked"),
                "boxlite 100 layers stacked": lambda: run(image="tall"),
                "boxlite flattened rootfs": lambda: run(rootfs=flat),
                "bwrap --unshare-all true": lambda: subprocess.run(bwrap, check=True),
            },
            ROUNDS,
        )
    report("box start from a cached image: create + start + run true + close", samples,
           f"boxlite {LAYERS} layers stacked")  # fmt: skip


def tar_of_file(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    base = scratch()
    try:
        layers = [tar_of(rootfs(base)), *(files_layer(i) for i in range(LAYERS - 1))]
        started = time.perf_counter()
        bench_pull(base, layers)
        bench_start(base, layers)
        print(f"(took {time.perf_counter() - started:.0f} s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
