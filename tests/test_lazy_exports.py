"""The package's exports load on first use (boxlite_ffi._lazy): every public
name still resolves to the object its module defines, and importing the
package, or starting the command line, leaves the heavy modules unloaded."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import boxlite_ffi
import boxlite_ffi.image

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
    assert all(isinstance(getattr(boxlite_ffi, n), type) for n in eager)  # the errors
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
