"""python3 -m boxlite_ffi.paths: print where one of the package's native parts is."""

from __future__ import annotations

import argparse
import sys

from . import get_include, get_libexec_dir, get_library_dir, get_pkg_config_path

_QUERIES = {
    "--include": get_include,
    "--library-dir": get_library_dir,
    "--libexec-dir": get_libexec_dir,
    "--pkg-config-path": get_pkg_config_path,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m boxlite_ffi.paths", description="Where boxlite_ffi's native parts are."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    for flag, ask in _QUERIES.items():
        group.add_argument(flag, action="store_const", const=ask, dest="query", help=ask.__doc__)
    args = parser.parse_args(argv)
    print(args.query())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
