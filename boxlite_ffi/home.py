"""Where a runtime keeps its state, and where the native executables live."""

from __future__ import annotations

import os
from pathlib import Path

from .boxdir import GONE_PREFIX

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


def store_path(home: Path) -> Path:
    """The home's box and image records (store.py)."""
    return home / "boxlite.db"


def holds_state(home: Path) -> bool:
    """Whether the home holds what a store describes: a box directory or an
    image blob (so an absent store there is a lost one, not a fresh home).
    Directories a sweep moved aside are no box."""
    boxes = any(not d.name.startswith(GONE_PREFIX) for d in (home / "boxes").iterdir())
    blobs = home / "images" / "blobs" / "sha256"
    return boxes or (blobs.is_dir() and any(blobs.iterdir()))


def libexec_dir() -> Path:
    """The directory holding boxlite-shim and boxlite-agent."""
    override = os.environ.get(LIBEXEC_ENV)
    return Path(override) if override else Path(__file__).resolve().parent / "libexec"
