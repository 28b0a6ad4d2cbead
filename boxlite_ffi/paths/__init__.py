"""Where the installed package keeps its native parts, for C embedders (like
``numpy.get_include()``)::

    python3 -m boxlite_ffi.paths --pkg-config-path   # for PKG_CONFIG_PATH
    cc app.c $(pkg-config --cflags --libs boxlite)

The layout is defined here once: build_ffi.py loads this file by its path to
lay the files out (so it imports nothing beyond the standard library).
``python3 -m boxlite_ffi.paths --help`` lists what the command prints.
"""

from __future__ import annotations

from pathlib import Path

# The library's ABI version: its soname is libboxlite.so.<ABI_VERSION>.
ABI_VERSION = 0
LIBRARY_NAME = "boxlite"
SONAME = f"lib{LIBRARY_NAME}.so.{ABI_VERSION}"
# Wheels hold no symlinks: the link-time name is a linker script naming SONAME.
DEV_LIBRARY = f"lib{LIBRARY_NAME}.so"
HEADER = "boxlite.h"
PKG_CONFIG_FILE = f"{LIBRARY_NAME}.pc"

# Relative to the package directory.
INCLUDE_SUBDIR = "include"
LIBRARY_SUBDIR = "lib"
LIBEXEC_SUBDIR = "libexec"
PKG_CONFIG_SUBDIR = f"{LIBRARY_SUBDIR}/pkgconfig"

_PACKAGE = Path(__file__).resolve().parents[1]


def get_include() -> str:
    """The directory holding boxlite.h (for ``-I``)."""
    return str(_PACKAGE / INCLUDE_SUBDIR)


def get_library_dir() -> str:
    """The directory holding libboxlite.so.N (for ``-L`` and an rpath)."""
    return str(_PACKAGE / LIBRARY_SUBDIR)


def get_libexec_dir() -> str:
    """The directory holding boxlite-shim and boxlite-agent: what
    boxlite_runtime_options.libexec_dir takes."""
    return str(_PACKAGE / LIBEXEC_SUBDIR)


def get_pkg_config_path() -> str:
    """The directory holding boxlite.pc (for ``PKG_CONFIG_PATH``).  The file
    names its paths relative to itself, so it is right wherever pip put the
    package."""
    return str(_PACKAGE / PKG_CONFIG_SUBDIR)
