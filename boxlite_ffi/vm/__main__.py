"""``python3 -m boxlite_ffi.vm fetch-kernel [--dir DIR]``: download Debian's
cloud kernel for the vm engine (through apt's signed index) and record it.
A cache that verifies is kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EngineError
from .kernel import fetch_kernel, kernel_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m boxlite_ffi.vm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-kernel", help="download and record the guest kernel")
    fetch.add_argument("--dir", type=Path, help=f"the cache (default: {kernel_dir()})")
    args = parser.parse_args(argv)
    try:
        kernel = fetch_kernel(args.dir)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"kernel {kernel.release} (package version {kernel.version})")
    print(f"vmlinuz {kernel.vmlinuz} sha256 {kernel.sha256}")
    print(f"modules {kernel.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
