"""A real box, end to end: ``python -m boxlite_ffi.demo [IMAGE]``.

Without an argument it builds a small OCI image from Debian's busybox-static
(``/bin/busybox``), loads it into a fresh runtime home, starts a box from it
and shows what the box sees: its own pid namespace, hostname, network and
streams.  Then it runs the host's python3 in a box of the built-in ``host``
image.  IMAGE is any OCI layout or docker archive to use instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import boxlite_ffi
from boxlite_ffi.image import busybox
from boxlite_ffi.spec import ENGINES

PROBE = (
    "echo $$; hostname; id -u; ls /proc | grep -c '^[0-9]'; "
    "tail -n +3 /proc/net/dev | cut -d: -f1; printf 'this went to stderr' >&2"
)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="boxlite-demo-") as tmp:
        source = Path(argv[0]) if argv else busybox.build(Path(tmp) / "busybox-oci", Path(tmp))
        with boxlite_ffi.Runtime(Path(tmp) / "home") as rt:
            (image,) = rt.images.load(source)
            print(f"image {image.id[:19]} {image.tags} loaded from {source}")
            ok = _show_box(rt, image.id)
            with rt.create("host") as box:
                version = box.run(["python3", "-c", "import sys; print(sys.version)"])
                print(f"the host's python3 in a box of the built-in host image: {version.stdout!r}")
            ok = _show_engines(rt, image.id) and ok
            return 0 if ok and version.ok else 1


def _show_box(rt: boxlite_ffi.Runtime, image: str) -> bool:
    with rt.create(image, name="demo") as box:
        probe = box.run(["sh", "-c", PROBE])
        pid, hostname, uid, procs, interfaces = probe.stdout.decode().split("\n", 4)
        print(f"box {box.id} started")
        print(f"  a shell in it is pid {pid}, uid {uid}, on host {hostname!r}")
        print(f"  processes it can see: {procs}; network interfaces: {interfaces.split()}")
        print(f"  stdout and stderr arrive apart: {probe.stderr!r}")
        execution = box.exec(["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done"])
        for chunk in execution.stdout:
            print(f"  streamed as it happened: {chunk!r}")
        result = box.run(["sh", "-c", "printf 'a\\000b\\377'; kill -TERM $$"])
        print(
            f"  byte-exact {result.stdout!r}, ended by {result.outcome.value} "
            f"signal {result.signal} (exit code {result.exit_code})"
        )
        return probe.ok


def _show_engines(rt: boxlite_ffi.Runtime, image: str) -> bool:
    """The image under each engine; an unusable vm engine is reported, not a
    failure of the demo (it needs QEMU and a guest kernel: see the README)."""
    print(f"the host's kernel: {os.uname().release}")
    ok = True
    for engine in ENGINES:
        try:
            with rt.create(image, engine=engine) as box:
                release = box.run(["uname", "-r"])
                info = box.info()
        except boxlite_ffi.EngineError as exc:
            print(f"{engine} box: the {engine} engine cannot run here: {exc}")
            continue
        accelerator = info.accelerator or "none (the host's kernel)"
        print(
            f"{engine} box: engine {info.engine}, accelerator {accelerator}, "
            f"uname -r {release.stdout.decode().strip()}"
        )
        if info.accelerator:
            print(f"  why {info.accelerator}: {info.config['vm']['accel_reason']}")
        ok = ok and release.ok
    return ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
