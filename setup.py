"""setuptools glue: the cffi extension comes from build_ffi.py; boxlite-shim
and boxlite-agent are compiled into boxlite_ffi/libexec/ beside it (in the
wheel, or in the source tree for an editable install)."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_ffi


class BuildExtWithExecutables(build_ext):
    def run(self) -> None:
        super().run()
        package_dir = Path(self.get_ext_fullpath("boxlite_ffi._native")).parent
        build_ffi.build_executables(package_dir / "libexec")


setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithExecutables},
)
