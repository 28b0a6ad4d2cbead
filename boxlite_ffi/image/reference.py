"""Image references: ``[registry/]repository[:tag][@digest]``, as docker
reads them (a first component with a dot or a port, or ``localhost``, is a
registry; otherwise the registry is Docker Hub and one-component names live
under ``library/``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidArgumentError
from .media import check_digest

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HOST = re.compile(r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not isinstance(text, str) or not text or len(text) > 4096:
            raise InvalidArgumentError(f"invalid image reference {text!r}")
        rest, _, digest = text.partition("@")
        if digest:
            check_digest(digest)
        registry = DOCKER_HUB
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            if not _HOST.fullmatch(first):
                raise InvalidArgumentError(f"invalid registry in image reference {text!r}")
            registry, rest = first, remainder
        repository, colon, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if (colon and not _TAG.fullmatch(tag)) or not _REPOSITORY.fullmatch(repository):
            raise InvalidArgumentError(f"invalid image reference {text!r}")
        if registry == DOCKER_HUB and "/" not in repository:
            repository = "library/" + repository
        return cls(registry, repository, tag or (None if digest else "latest"), digest or None)

    @property
    def name(self) -> str:
        """The familiar name: ``busybox:latest``, ``localhost:5000/app:1``."""
        repo = self.repository
        if self.registry == DOCKER_HUB:
            repo = repo.removeprefix("library/")
        else:
            repo = f"{self.registry}/{repo}"
        return f"{repo}:{self.tag}" if self.tag else f"{repo}@{self.digest}"

    @property
    def api_host(self) -> str:
        return _DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        return self.digest or self.tag or "latest"


def normalize(name: str) -> str:
    """A stored image name for ``name``: what ``Reference.name`` makes of it
    when it parses as a reference, else ``name`` itself."""
    try:
        return Reference.parse(name).name
    except InvalidArgumentError:
        return name
