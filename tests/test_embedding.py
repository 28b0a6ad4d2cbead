"""libboxlite for C embedders, as installed: the library exports the header's
functions and nothing else, the extension uses it instead of a copy of the
core, pkg-config finds the package's parts, and examples/c builds against
them and runs a command in a busybox box."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import _native, paths
from boxlite_ffi._native import lib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "c"
LIBRARY = Path(boxlite_ffi.get_library_dir()) / paths.SONAME


def dynamic_symbols(path: Path) -> set[str]:
    """The names path defines in its dynamic symbol table, without the
    version they carry and without version nodes (absolute symbols)."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", path], check=True, capture_output=True, text=True
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    return {row[2].split("@")[0] for row in rows if row[1] != "A"}


def header_functions() -> set[str]:
    # What the cffi module compiled from the header's cdef offers as functions.
    return {n for n in dir(lib) if not n.startswith("_") and callable(getattr(lib, n))}


def dynamic_section(path: Path) -> str:
    return subprocess.run(
        ["readelf", "-d", path], check=True, capture_output=True, text=True
    ).stdout


def pkg_config(*args: str) -> str:
    env = {**os.environ, "PKG_CONFIG_PATH": boxlite_ffi.get_pkg_config_path()}
    return subprocess.run(
        ["pkg-config", *args, "boxlite"], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def test_the_library_exports_exactly_the_header_functions() -> None:
    assert "boxlite_runtime_drain" in header_functions()
    assert dynamic_symbols(LIBRARY) == header_functions()
    assert f"Library soname: [{paths.SONAME}]" in dynamic_section(LIBRARY)


def test_the_extension_links_the_library_instead_of_holding_the_core() -> None:
    extension = Path(_native.__file__)
    assert f"Shared library: [{paths.SONAME}]" in dynamic_section(extension)
    assert not dynamic_symbols(extension) & header_functions()


def test_pkg_config_names_the_installed_parts() -> None:
    include = Path(pkg_config("--variable=includedir"))
    assert include.resolve() == Path(boxlite_ffi.get_include())
    assert (include / "boxlite.h").read_bytes() == (ROOT / "include" / "boxlite.h").read_bytes()
    libdir = Path(pkg_config("--variable=libdir"))
    assert (libdir / paths.SONAME).resolve() == LIBRARY
    libexec = Path(pkg_config("--variable=libexecdir"))
    assert libexec.resolve() == Path(boxlite_ffi.get_libexec_dir())
    assert (libexec / "boxlite-shim").is_file() and (libexec / "boxlite-agent").is_file()
    assert pkg_config("--modversion") == boxlite_ffi.__version__
    assert f"-I{include}" in pkg_config("--cflags").split()


def test_the_paths_cli_prints_the_pkg_config_path(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "boxlite_ffi.paths", "--pkg-config-path"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert out == boxlite_ffi.get_pkg_config_path() + "\n"
    assert (Path(out.strip()) / paths.PKG_CONFIG_FILE).is_file()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example") / "boxlite-run"
    env = {**os.environ, "PKG_CONFIG_PATH": boxlite_ffi.get_pkg_config_path()}
    env.pop("BOXLITE_LIBEXEC", None)
    subprocess.run(["make", "-s", "-C", EXAMPLE, f"BIN={out}"], check=True, env=env)
    return out


def test_the_c_example_runs_a_command_in_a_box(example: Path, rootfs: Path) -> None:
    script = "echo out; echo err >&2; cat /etc/passwd; exit 7"
    done = subprocess.run([example, rootfs, "sh", "-c", script], capture_output=True, timeout=60)
    assert done.stdout == b"out\nroot:x:0:0:root:/root:/bin/sh\n"
    assert done.stderr == b"err\n"
    assert done.returncode == 7


def test_the_c_example_streams_output_before_the_exit(example: Path, rootfs: Path) -> None:
    script = "echo first; sleep 3; seq 1 100000; kill -TERM $$"
    with subprocess.Popen([example, rootfs, "sh", "-c", script], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"first\n"
        assert proc.poll() is None  # the command still runs: output came as written
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 128 + 15
    assert rest == b"".join(b"%d\n" % i for i in range(1, 100001))


def test_the_c_example_reports_a_command_that_cannot_start(example: Path, rootfs: Path) -> None:
    done = subprocess.run([example, rootfs, "/no/such/program"], capture_output=True, timeout=60)
    assert done.returncode == 127
    assert b"No such file or directory" in done.stderr


def test_a_signal_to_the_example_goes_to_the_command(
    example: Path, rootfs: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [example, rootfs, "sh", "-c", "echo up; sleep 30"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"
        assert list(tmp_path.iterdir())  # its box directory
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 128 + signal.SIGINT
    assert not list(tmp_path.iterdir())
