"""Registry credentials from a docker-style config file
(``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``): the
``auths`` entries, ``auth`` (base64 ``user:password``) or ``username`` and
``password``.  Credential helpers (``credsStore``) are not run."""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from ..errors import ImageError
from .reference import DOCKER_HUB

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


def default_config_file() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def lookup(registry: str, config_file: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for ``registry``, or None when the file has none."""
    path = config_file or default_config_file()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        if config_file is not None:
            raise ImageError(f"registry credentials file {path} does not exist") from None
        return None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read registry credentials from {path}: {exc}") from exc
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = _DOCKER_HUB_KEYS if registry == DOCKER_HUB else (registry, f"https://{registry}")
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            return _decode(entry, path)
    return None


def _decode(entry: dict[str, object], path: Path) -> tuple[str, str] | None:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ImageError(f"{path}: a malformed auth entry") from exc
        if not sep:
            raise ImageError(f"{path}: an auth entry without user:password")
        return user, password
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str):
        return name, secret
    return None
