"""Where a runtime keeps its state, and where the native executables live."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BOXLITE_HOME"
LIBEXEC_ENV = "BOXLITE_LIBEXEC"


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``home``, else ``$BOXLITE_HOME``, else ``~/.boxlite``; created if absent."""
    chosen = home or os.environ.get(HOME_ENV) or Path.home() / ".boxlite"
    path = Path(chosen).expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("boxes", "images"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    return path


def libexec_dir() -> Path:
    """The directory holding boxlite-shim and boxlite-agent."""
    override = os.environ.get(LIBEXEC_ENV)
    return Path(override) if override else Path(__file__).resolve().parent / "libexec"
