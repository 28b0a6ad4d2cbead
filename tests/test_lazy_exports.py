"""The package's exports load on first use (boxlite_ffi._lazy): every public
name still resolves to the object its module defines, and importing the
package, or starting the command line, leaves the heavy modules unloaded."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import boxlite_ffi
import boxlite_ffi.image

PACKAGE = Path(boxlite_ffi.__file__).parent
EXTRAS = ("boxlite_ffi.remote", "boxlite_ffi.server")  # optional: each loads its own

# What `import boxlite_ffi` and the CLI's start must not load: each belongs
# to a path few commands take (pulls, archives, copies, the vm, the server).
DEFERRED = (
    "asyncio",
    "hashlib",
    "http.client",
    "secrets",
    "sqlite3",
    "ssl",
    "subprocess",
    "tarfile",
    "boxlite_ffi.box",
    "boxlite_ffi.image.archive",
    "boxlite_ffi.image.distribution",
    "boxlite_ffi.image.images",
    "boxlite_ffi.runtime",
    "boxlite_ffi.server.cli",
    "boxlite_ffi.state.recovery",
    "boxlite_ffi.vm.kernel",
)


def _loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running code."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("package", [boxlite_ffi, boxlite_ffi.image])
def test_every_public_name_resolves_to_its_definition(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names, "a package with exports"
    for name in names:
        value = getattr(package, name)
        where = package._LAZY.get(name)  # type: ignore[attr-defined]
        if where is not None:  # the very object its module defines
            module = importlib.import_module(where, package.__name__)  # type: ignore[attr-defined]
            assert value is getattr(module, name)
        assert name in dir(package)


def test_the_lazy_table_and_the_export_list_agree() -> None:
    eager = {n for n in boxlite_ffi.__all__ if n not in boxlite_ffi._LAZY}
    for name in eager:  # the error classes, and what the package defines itself
        assert getattr(boxlite_ffi, name).__module__ in ("boxlite_ffi.errors", "boxlite_ffi")
    assert set(boxlite_ffi._LAZY) <= set(boxlite_ffi.__all__)


def test_from_import_and_unknown_names() -> None:
    from boxlite_ffi import BoxInfo, Runtime  # the names a caller writes

    assert Runtime.__module__ == "boxlite_ffi.runtime"
    assert BoxInfo.__module__ == "boxlite_ffi.state.views"
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = boxlite_ffi.NoSuchName  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from boxlite_ffi import NoSuchName")


@pytest.mark.parametrize(
    "code",
    [
        "import boxlite_ffi",
        "import boxlite_ffi.cli",
        "import boxlite_ffi.cli as c; c.parser('ls')",  # what `boxlite ls` builds
    ],
)
def test_importing_leaves_the_heavy_modules_unloaded(code: str) -> None:
    assert _loaded_after(code) & set(DEFERRED) == set()


def test_the_runtime_loads_no_pull_archive_or_server_module() -> None:
    code = "import boxlite_ffi\nboxlite_ffi.Runtime.__init__  # the runtime, not used"
    loaded = _loaded_after(code)
    assert "boxlite_ffi.runtime" in loaded and "boxlite_ffi.box" in loaded
    later = {
        "boxlite_ffi.image.archive",
        "boxlite_ffi.image.distribution",
        "boxlite_ffi.server.cli",
        "boxlite_ffi.state.recovery",
        "http.client",
        "ssl",
        "tarfile",
    }
    assert loaded & later == set()


def _imports_in_functions() -> set[str]:
    """Every module the package imports inside a function (not under
    TYPE_CHECKING), as an absolute name; the server and remote client are
    extras that load their own, the CLI is a process of its own."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[1] in ("server", "remote", "cli"):
            continue
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = tuple(p for p in package if p != "__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found.update(alias.name for alias in inner.names)
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0:
                    found.add(str(inner.module))
                elif isinstance(inner, ast.ImportFrom):
                    base = package[: len(package) - inner.level + 1]
                    found.add(".".join([*base, *([inner.module] if inner.module else [])]))
    return {m for m in found if not m.startswith(EXTRAS)}


def test_preload_imports_everything_the_package_imports_on_use() -> None:
    wanted = _imports_in_functions()
    assert {"tarfile", "hashlib", "boxlite_ffi.image.archive"} <= wanted  # the scan sees them
    loaded = _loaded_after("import boxlite_ffi\nboxlite_ffi.preload()")
    zstd = {"compression", "backports"}  # whichever this Python has (image/unpack.py)
    assert wanted - zstd - loaded == set()
    assert loaded & {"compression.zstd", "backports.zstd"}
    assert {f"boxlite_ffi{where}" for where in boxlite_ffi._LAZY.values()} <= loaded
