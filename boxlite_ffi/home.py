"""Where a runtime keeps its state, and where the native executables live."""

from __future__ import annotations

import os
from pathlib import Path

from . import paths
from .errors import InvalidArgumentError
from .state.boxdir import GONE_PREFIX

HOME_ENV = "BOXLITE_HOME"
LIBEXEC_ENV = "BOXLITE_LIBEXEC"


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``home``, else ``$BOXLITE_HOME``, else ``~/.boxlite``; created, with
    its parents, if absent.  An unusable home is an InvalidArgumentError
    saying why."""
    if home is not None and not os.fspath(home):
        raise InvalidArgumentError("home: the path is empty")
    given = home or os.environ.get(HOME_ENV)
    try:
        chosen = Path(given or Path.home() / ".boxlite")
        path = chosen.expanduser().resolve()
    except RuntimeError as exc:  # no $HOME to find ~ in
        raise InvalidArgumentError(f"home: {exc}; give one or set {HOME_ENV}") from None
    except OSError as exc:  # a relative path, and the working directory is gone
        raise InvalidArgumentError(f"home {os.fspath(home or '')}: {exc.strerror}") from None
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("boxes", "images"):
            (path / sub).mkdir(mode=0o700, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InvalidArgumentError(f"home {chosen}: not a directory") from None
    except OSError as exc:
        raise InvalidArgumentError(f"home {chosen}: {exc.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            raise InvalidArgumentError(f"home {chosen}: on a read-only filesystem")
        raise InvalidArgumentError(f"home {chosen}: this user may not read and write it")
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
    return Path(override or paths.get_libexec_dir())
