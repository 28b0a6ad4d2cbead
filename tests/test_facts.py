"""Each fact the Python layer shares with the native side is defined once
in Python and checked here against its native definition: the header's
enums, the box directory's file names as the C code writes them, the
shim's signals, the agent helpers' statuses.  And the package's layering:
imports point one way (API -> state/spec -> _core -> native), no cycles."""

from __future__ import annotations

import ast
import errno
import re
import signal
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import ErrorCode, NotFoundError, Outcome
from boxlite_ffi._core.core import failed_status, signaled_status
from boxlite_ffi._native import lib
from boxlite_ffi.agent import files
from boxlite_ffi.execution import STDERR, STDOUT
from boxlite_ffi.spec import native_config
from boxlite_ffi.state import boxdir
from boxlite_ffi.state import exits as exits_module
from boxlite_ffi.state.exits import NATIVE_OUTCOMES
from boxlite_ffi.state.shim import KILL_NOW
from boxlite_ffi.state.store import start_ticks

SOURCE = Path(__file__).resolve().parent.parent
HEADER = SOURCE / "include" / "boxlite.h"
NATIVE = SOURCE / "native"
PACKAGE = Path(boxlite_ffi.__file__).resolve().parent


def header_enum(prefix: str) -> dict[str, int]:
    """NAME -> value of every ``BOXLITE_<prefix>NAME = N`` in the header."""
    text = HEADER.read_text()
    found = re.findall(rf"\bBOXLITE_{prefix}([A-Z_]+)\s*=\s*(\d+)", text)
    assert found, f"no BOXLITE_{prefix}* in {HEADER}"
    return {name: int(value) for name, value in found}


def c_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(NATIVE.rglob("*.[ch]")))


def test_error_codes_are_the_headers():
    native = header_enum("ERR_") | {"OK": 0}
    assert {code.name: code.value for code in ErrorCode} == native


def test_outcomes_are_the_headers_in_order():
    native = header_enum("OUTCOME_")
    assert {o.name: n for n, o in NATIVE_OUTCOMES.items()} == native
    # OOM is the Python layer's own reading of KILLED, no native outcome.
    assert set(Outcome) - set(NATIVE_OUTCOMES.values()) == {Outcome.OOM}


def test_stream_ids_are_the_headers():
    assert (STDOUT, STDERR) == (lib.BOXLITE_STDOUT, lib.BOXLITE_STDERR)
    assert header_enum("STD") == {"OUT": STDOUT, "ERR": STDERR}


def test_kill_now_is_the_cores():
    found = re.search(r"#define\s+(?:BL_)?SHIM_KILL_NOW\s+(SIG[A-Z0-9]+)", c_sources())
    assert found is not None
    assert getattr(signal, found[1]) == KILL_NOW


def test_box_directory_names_are_the_ones_c_writes():
    """Every name the Python side reads in a box directory is written, or
    read, by the C side under the same literal."""
    written_by_c = {
        boxdir.LOCK,
        boxdir.AGENT_SOCKET,
        boxdir.EXIT,
        boxdir.CGROUPS,
        boxdir.SHIM_LOG,
        boxdir.STDOUT_LOG,
        boxdir.STDERR_LOG,
    }
    literals = set(re.findall(r'"(?:%s/)?([A-Za-z0-9_.-]+)"', c_sources()))
    assert written_by_c <= literals, written_by_c - literals
    assert boxdir.MARKER in literals  # and boxlite_box_marker() says it at run time


def test_exit_code_rule_is_the_native_cores() -> None:
    """Python takes the shell's rule (128 + n after signal n, 127 for a
    command not found, else 126) from the native core's one definition,
    boxlite_exit_status, which the reactor gives executions too."""
    assert [signaled_status(sig) for sig in (1, 9, 15, 64)] == [129, 137, 143, 192]
    assert [failed_status(e) for e in (errno.ENOENT, errno.EACCES, errno.ENOEXEC)] == [
        127,
        126,
        126,
    ]
    exits = Path(exits_module.__file__).read_text()
    assert "128 +" not in exits and "127" not in exits  # no second copy


def test_copy_helper_statuses_are_the_agents():
    found = re.search(r"enum \{ COPY_OK = 0, (.*?) \};", (NATIVE / "agent" / "copy.c").read_text())
    assert found is not None
    native = dict(re.findall(r"COPY_([A-Z]+) = (\d+)", found[1]))
    python = {"IO": files._IO, "MALFORMED": files._MALFORMED}
    python |= {"UNSAFE": files._UNSAFE, "UNSUPPORTED": files._UNSUPPORTED}
    assert {k: int(v) for k, v in native.items()} == python


def test_defaults_come_from_the_header():
    from boxlite_ffi import spec

    assert header_enum("DEFAULT_")["STOP_GRACE_MS"] == spec.DEFAULT_STOP_GRACE_MS
    assert header_enum("DEFAULT_")["DRAIN_MS"] == spec.DEFAULT_DRAIN_MS


def test_start_ticks_are_what_the_native_core_reads(
    rt: boxlite_ffi.Runtime, box: boxlite_ffi.Box
) -> None:
    """The store identifies a shim by its start time as native/core/box.c
    reads it: connecting with the store's value finds the shim, with any
    other value it does not."""
    box.start()
    pid = box.shim_pid
    config = native_config(box.directory, box.info().config, box.detached)
    with pytest.raises(NotFoundError):
        rt.native.box_connect(config, pid, start_ticks(pid) + 1)
    rt.native.box_free(rt.native.box_connect(config, pid, start_ticks(pid)))


# ---- layering -------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The package's modules that path imports, also under TYPE_CHECKING."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()}


def test_no_import_cycles():
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :]
            raise AssertionError(" -> ".join([*cycle, module]))
        if module in done:
            return
        for imported in sorted(graph[module]):
            # A package's __init__ is no edge to its own modules' importers.
            if not module.startswith(imported + "."):
                visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_layers_point_one_way():
    """_core knows nothing above it; state and spec nothing of the API."""
    api = {"boxlite_ffi.box", "boxlite_ffi.runtime", "boxlite_ffi.aio", "boxlite_ffi.cli"}
    below = {"_core": api | {"boxlite_ffi.state", "boxlite_ffi.spec", "boxlite_ffi.execution"}}
    below |= {"state": api | {"boxlite_ffi.spec", "boxlite_ffi.execution"}, "spec": api}
    for module, imported in import_graph().items():
        layer = module.split(".")[1] if "." in module else ""
        for forbidden in below.get(layer, ()):
            bad = {i for i in imported if i == forbidden or i.startswith(forbidden + ".")}
            assert not bad, f"{module} imports {bad}"
