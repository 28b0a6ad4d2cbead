"""setuptools glue: the native core is compiled first, as the shared library
boxlite_ffi/lib/libboxlite.so.N (with boxlite_ffi/include/boxlite.h and
boxlite_ffi/lib/pkgconfig/boxlite.pc); the cffi extension from build_ffi.py
links against it; boxlite-shim and boxlite-agent are compiled into
boxlite_ffi/libexec/.  All of it lands beside the extension: in the wheel, or
in the source tree for an editable install."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_ffi


class BuildExtWithLibrary(build_ext):
    def run(self) -> None:
        package_dir = Path(self.get_ext_fullpath("boxlite_ffi._native")).parent
        libdir = build_ffi.build_library(package_dir)
        for ext in self.extensions:
            ext.library_dirs.append(str(libdir))
        super().run()
        build_ffi.build_executables(package_dir / build_ffi.paths.LIBEXEC_SUBDIR)


setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithLibrary},
)
