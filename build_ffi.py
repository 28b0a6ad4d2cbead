"""cffi (API mode) builder for boxlite_ffi._native, plus the two executables
shipped inside the package: boxlite-shim and the statically linked
boxlite-agent.  The cdef is read from include/boxlite.h, so the header stays
the single contract between C and Python."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parent
INCLUDE = ROOT / "include"
NATIVE = ROOT / "native"

CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2"]
CORE_SOURCES = [
    "agent_conn.c",
    "box.c",
    "engine_ns.c",
    "event_queue.c",
    "exec.c",
    "handle_table.c",
    "protocol.c",
    "reactor.c",
    "runtime.c",
    "worker_pool.c",
]

# Callbacks implemented in Python (boxlite_ffi/_callbacks.py).
PYTHON_CALLBACKS = """
extern "Python" void _bl_on_done(void *, int, const char *);
extern "Python" void _bl_on_output(void *, int, const uint8_t *, size_t);
extern "Python" void _bl_on_exit(void *, const boxlite_exit *);
"""


def header_cdef() -> str:
    """The public header with C++ guards and preprocessor lines removed."""
    text = (INCLUDE / "boxlite.h").read_text()
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = cffi.FFI()
ffibuilder.cdef(header_cdef() + PYTHON_CALLBACKS)
ffibuilder.set_source(
    "boxlite_ffi._native",
    '#include "boxlite.h"',
    sources=[str((NATIVE / s).relative_to(ROOT)) for s in CORE_SOURCES],
    include_dirs=[str(INCLUDE.relative_to(ROOT)), str(NATIVE.relative_to(ROOT))],
    extra_compile_args=CFLAGS,
    libraries=["pthread"],
)


def _cc() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def build_executables(outdir: Path) -> list[Path]:
    """Compile boxlite-shim and boxlite-agent into outdir."""
    outdir.mkdir(parents=True, exist_ok=True)
    common = [*_cc(), *CFLAGS, f"-I{INCLUDE}", f"-I{NATIVE}", str(NATIVE / "protocol.c")]
    targets = {
        # Static too: one shim starts per box, and dynamic loading is a
        # measurable part of a cold start.
        # libseccomp (Debian's libseccomp-dev) for the box's system call filter.
        "boxlite-shim": (["-static"], sorted((NATIVE / "shim").glob("*.c")), ["-lseccomp"]),
        # PID 1 inside a box whose image may have no libc at all.
        "boxlite-agent": (["-static"], sorted((NATIVE / "agent").glob("*.c")), []),
    }
    built = []
    for name, (extra, sources, libs) in targets.items():
        out = outdir / name
        command = [*common, *extra, *map(str, sources), "-o", str(out), *libs]
        subprocess.run(command, check=True)
        built.append(out)
    return built


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
