"""Exports a package loads on first use (PEP 562), so that importing the
package costs only the modules its caller touches: ``boxlite`` runs one
command and should not pay for every module the public API names.

A package lists its exports as name -> the module (relative to the package)
that defines it, and binds what ``exports`` returns to its ``__getattr__``
and ``__dir__``; type checkers read the package's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` exporting ``table``."""

    def getattr_(name: str) -> Any:
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, package), name)
        setattr(sys.modules[package], name, value)  # found once: later lookups are plain
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return getattr_, dir_


def preload(package: str, modules: Iterable[str]) -> None:
    """Import ``modules`` (relative to ``package``, or absolute) now."""
    for module in modules:
        importlib.import_module(module, package)
