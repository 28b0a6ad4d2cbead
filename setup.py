"""setuptools glue: the cffi extension comes from build_ffi.py; the shim and
agent executables are compiled into boxlite_ffi/libexec/ of the build."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_ffi  # noqa: E402


class BuildPyWithExecutables(build_py):
    def run(self) -> None:
        super().run()
        build_ffi.build_executables(Path(self.build_lib) / "boxlite_ffi" / "libexec")


setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithExecutables},
)
