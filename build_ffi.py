"""cffi (API mode) builder for boxlite_ffi._native, plus the two executables
shipped inside the package: boxlite-shim and the statically linked
boxlite-agent.  The cdef is read from include/boxlite.h, so the header stays
the single contract between C and Python."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parent
INCLUDE = ROOT / "include"
NATIVE = ROOT / "native"

CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2"]
# Relative to native/: what the three binaries share, the library, its engines.
COMMON_SOURCES = ["common/error.c", "common/fdio.c", "common/protocol.c", "common/shim_spec.c"]
CORE_SOURCES = [
    *COMMON_SOURCES,
    *(
        f"core/{name}.c"
        for name in (
            "agent_conn",
            "box",
            "event_queue",
            "exec",
            "handle_table",
            "reactor",
            "runtime",
            "worker_pool",
        )
    ),
    "engine/engine.c",
    "engine/ns.c",
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


# Static: one shim starts per box, and dynamic loading is a measurable part
# of a cold start; the agent is PID 1 in a box whose image may have no libc.
# libseccomp (Debian's libseccomp-dev) for the box's system call filter.
EXECUTABLES = {"boxlite-shim": ("shim", ["-lseccomp"]), "boxlite-agent": ("agent", [])}


def executable_command(name: str, out: Path, extra_flags: Sequence[str] = ()) -> list[str]:
    """The compiler command that builds executable name (a key of EXECUTABLES) as out."""
    folder, libs = EXECUTABLES[name]
    sources = [*(NATIVE / s for s in COMMON_SOURCES), *sorted((NATIVE / folder).glob("*.c"))]
    return [
        *_cc(), *CFLAGS, *extra_flags, f"-I{INCLUDE}", f"-I{NATIVE}", "-static",
        *map(str, sources), "-o", str(out), *libs,
    ]  # fmt: skip


def build_executables(outdir: Path) -> list[Path]:
    """Compile boxlite-shim and boxlite-agent into outdir."""
    outdir.mkdir(parents=True, exist_ok=True)
    built = [outdir / name for name in EXECUTABLES]
    for out in built:
        subprocess.run(executable_command(out.name, out), check=True)
    return built


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
