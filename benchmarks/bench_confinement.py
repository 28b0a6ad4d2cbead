"""What isolation costs a cold start: create + run /bin/true + close, plain,
with memory, pids and CPU limits (cgroups made and removed per box), with
the user-mode network (slirp4netns started and stopped per box), and with a
disk limit (an ext4 image made at create, loop-mounted at start).
Confinement (capabilities, no_new_privs, seccomp, /proc masks) is in every
box; its cost was measured A/B against the build before it (performance.md).

    python benchmarks/bench_confinement.py [ROUNDS]
"""

from __future__ import annotations

import sys

import boxlite_ffi

from common import p50, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def main() -> None:
    base = scratch()
    root = rootfs(base)
    with boxlite_ffi.Runtime(base / "home") as rt:

        def run(**options: object) -> None:
            with rt.create(rootfs=root, **options) as box:  # type: ignore[arg-type]
                assert box.run(["/bin/true"]).ok

        # Two interleavings: a network helper's exit would slow its neighbours.
        for name, options in (
            ("with limits", {"memory": "256m", "pids": 64, "cpus": 1}),
            ("with network", {"network": True}),
            ("with a disk limit", {"disk": "256m"}),
        ):
            samples = time_interleaved(
                {"boxlite plain": run, f"boxlite {name}": lambda o=options: run(**o)},
                ROUNDS,
            )
            plain, mine = (p50(samples[k]) for k in ("boxlite plain", f"boxlite {name}"))
            print(f"## cold start {name}: p50 {mine * 1e3:.2f} ms vs plain {plain * 1e3:.2f} ms")
            print(f"  +{(mine - plain) * 1e3:.2f} ms ({mine / plain:.2f}x plain)")


if __name__ == "__main__":
    main()
