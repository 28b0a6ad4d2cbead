"""cffi (API mode) builder for boxlite_ffi._native, the native core's shared
library libboxlite.so.N it links against (for C embedders too: with its header
and pkg-config file), and the two executables shipped inside the package:
boxlite-shim and the statically linked boxlite-agent.  The cdef and the
library's exports are read from include/boxlite.h, so the header stays the
single contract between C and Python.

    python3 build_ffi.py --sources core     # the source lists, for Makefiles
    python3 build_ffi.py --library PREFIX   # the library laid out as installed
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import cffi

ROOT = Path(__file__).resolve().parent
INCLUDE = ROOT / "include"
NATIVE = ROOT / "native"


def _load_paths() -> ModuleType:
    """boxlite_ffi.paths, which defines the installed layout, without
    importing the package (whose extension this builds)."""
    path = ROOT / "boxlite_ffi" / "paths" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_boxlite_paths", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


paths = _load_paths()

CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2"]
# Relative to native/: what the three binaries share, the library, its engines.
COMMON_SOURCES = [
    "common/error.c",
    "common/fdio.c",
    "common/protocol.c",
    "common/shim_spec.c",
]
# The channel multiplexer of the vm engine's two sides (vmm, guest).
MUX_SOURCES = ["common/mux.c"]
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
    "engine/supervisor.c",
    "engine/vm.c",
]

# Callbacks implemented in Python (boxlite_ffi/_core/callbacks.py).
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


def header_functions() -> list[str]:
    """The functions the header declares: all the library exports.  (A
    function pointer type's name, "(*name)(", is followed by ")".)"""
    return sorted(set(re.findall(r"\b(boxlite_\w+)\s*\(", header_cdef())))


# The extension links against the library (setup.py adds where it was built),
# found at run time beside it.
ffibuilder = cffi.FFI()
ffibuilder.cdef(header_cdef() + PYTHON_CALLBACKS)
ffibuilder.set_source(
    "boxlite_ffi._native",
    '#include "boxlite.h"',
    include_dirs=[str(INCLUDE.relative_to(ROOT))],
    extra_compile_args=CFLAGS,
    libraries=[paths.LIBRARY_NAME],
    extra_link_args=[f"-Wl,-rpath,$ORIGIN/{paths.LIBRARY_SUBDIR}"],
)


def _cc() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def project_version() -> str:
    """The version in pyproject.toml (tomllib is not in Python 3.10)."""
    found = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert found, "pyproject.toml has no version"
    return found.group(1)


def version_script() -> str:
    """A linker version script exporting the header's functions, nothing else."""
    exported = "".join(f"\t\t{name};\n" for name in header_functions())
    return f"LIBBOXLITE_{paths.ABI_VERSION} {{\n\tglobal:\n{exported}\tlocal: *;\n}};\n"


def library_command(out: Path, script: Path, extra_flags: Sequence[str] = ()) -> list[str]:
    """The compiler command that builds the shared library as out, exporting
    what the version script file script says.  Calls between the library's
    own functions bind inside it (-Bsymbolic): no interposition, no PLT."""
    sources = [NATIVE / s for s in CORE_SOURCES]
    return [
        *_cc(), *CFLAGS, *extra_flags, "-fPIC", "-shared", f"-I{INCLUDE}", f"-I{NATIVE}",
        f"-Wl,-soname,{paths.SONAME}", f"-Wl,--version-script={script}", "-Wl,-Bsymbolic",
        "-Wl,-z,defs", *map(str, sources), "-o", str(out), "-lpthread",
    ]  # fmt: skip


def pkg_config(version: str) -> str:
    """boxlite.pc, naming every path relative to its own directory (pkg-config's
    pcfiledir), so it is right wherever the package is installed."""
    up = "/".join(".." for _ in Path(paths.PKG_CONFIG_SUBDIR).parts)
    return (
        f"prefix=${{pcfiledir}}/{up}\n"
        f"includedir=${{prefix}}/{paths.INCLUDE_SUBDIR}\n"
        f"libdir=${{prefix}}/{paths.LIBRARY_SUBDIR}\n"
        f"libexecdir=${{prefix}}/{paths.LIBEXEC_SUBDIR}\n\n"
        f"Name: {paths.LIBRARY_NAME}\n"
        "Description: boxlite-ffi's native core: sandboxed boxes, post-and-drain C API\n"
        f"Version: {version}\n"
        "Cflags: -I${includedir}\n"
        f"Libs: -L${{libdir}} -l{paths.LIBRARY_NAME}\n"
        "Libs.private: -lpthread\n"
    )


def build_library(prefix: Path, extra_flags: Sequence[str] = ()) -> Path:
    """Compile the library into prefix as the package holds it (boxlite_ffi.paths): the
    library, its link-time name, the header and boxlite.pc.  Returns its
    directory (for -L)."""
    libdir, pcdir = prefix / paths.LIBRARY_SUBDIR, prefix / paths.PKG_CONFIG_SUBDIR
    for d in (libdir, pcdir, prefix / paths.INCLUDE_SUBDIR):
        d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boxlite-build-") as tmp:
        script = Path(tmp) / "exports.map"
        script.write_text(version_script())
        subprocess.run(library_command(libdir / paths.SONAME, script, extra_flags), check=True)
    (libdir / paths.DEV_LIBRARY).write_text(f"INPUT({paths.SONAME})\n")
    (pcdir / paths.PKG_CONFIG_FILE).write_text(pkg_config(project_version()))
    shutil.copyfile(INCLUDE / paths.HEADER, prefix / paths.INCLUDE_SUBDIR / paths.HEADER)
    return libdir


# Static: one shim starts per box, and dynamic loading is a measurable part
# of a cold start; the agent is PID 1 in a box whose image may have no libc,
# and the guest init and the shim run in an initramfs that has none.
# libseccomp (Debian's libseccomp-dev) for the box's system call filter.
# name: (its folder, other sources, libraries); boxlite-vmm supervises a vm
# box with the shim's logs, outcome record and lifetime.
_SHIM_SHARED = ["shim/cgroup.c", "shim/lifetime.c", "shim/logs.c", "shim/main_command.c"]
EXECUTABLES = {
    "boxlite-shim": ("shim", [], ["-lseccomp"]),
    "boxlite-agent": ("agent", [], []),
    "boxlite-vmm": ("vmm", [*MUX_SOURCES, *_SHIM_SHARED], []),
    "boxlite-guest": ("guest", MUX_SOURCES, []),
}


def executable_command(name: str, out: Path, extra_flags: Sequence[str] = ()) -> list[str]:
    """The compiler command that builds executable name (a key of EXECUTABLES) as out."""
    folder, shared, libs = EXECUTABLES[name]
    sources = [
        *(NATIVE / s for s in (*COMMON_SOURCES, *shared)),
        *sorted((NATIVE / folder).glob("*.c")),
    ]
    return [
        *_cc(), *CFLAGS, *extra_flags, f"-I{INCLUDE}", f"-I{NATIVE}", "-static",
        *map(str, sources), "-o", str(out), *libs,
    ]  # fmt: skip


def build_executables(outdir: Path) -> list[Path]:
    """Compile the executables (EXECUTABLES) into outdir."""
    outdir.mkdir(parents=True, exist_ok=True)
    built = [outdir / name for name in EXECUTABLES]
    for out in built:
        subprocess.run(executable_command(out.name, out), check=True)
    return built


# What `--sources` prints, for the native tests' Makefile.
SOURCE_LISTS = {"common": COMMON_SOURCES, "core": CORE_SOURCES, "mux": MUX_SOURCES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--sources", choices=list(SOURCE_LISTS), help="print a source list")
    action.add_argument("--library", type=Path, metavar="PREFIX", help="build the library")
    parser.add_argument("--cflags", default="", help="extra compiler flags for --library")
    args = parser.parse_args()
    if args.sources:
        print(" ".join(SOURCE_LISTS[args.sources]))
    else:
        print(build_library(args.library, shlex.split(args.cflags)))


if __name__ == "__main__":
    main()
