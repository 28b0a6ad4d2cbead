"""What one ``boxlite serve`` is configured with: every default of the
server, and the limits it enforces, defined here once.

``GET /v1/config`` reports these limits; the routes enforce them; the CLI's
flags override the first few.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError, os_errors
from ..home import resolve_home
from ..spec import check_engine

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
TOKEN_ENV = "BOXLITE_SERVE_TOKEN"
TOKEN_FILE = "serve.token"  # in the home, generated at the first start
SERVE_DB = "serve.db"  # the server's own tables (idempotency, box extras), in the home
TOKEN_BYTES = 32
MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What the server refuses beyond (each reported by ``GET /v1/config``)."""

    max_boxes: int = 50
    max_executions_per_box: int = 64
    max_executions: int = 512
    max_memory_mib: int | None = None  # None: the host's memory
    max_cpus: int = 32  # the contract's own bound on a box's vCPUs
    max_json_body: int = 1 * MIB
    max_upload_bytes: int = 1 << 30
    exec_timeout_max_seconds: float = 24 * 3600.0


@dataclass(frozen=True)
class Settings:
    """One server's configuration; ``token`` is resolved (see ``resolve_token``)."""

    home: Path
    token: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    engine: str | None = None  # None: the runtime's ($BOXLITE_ENGINE or ns)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_rootfs: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    attach_window_bytes: int = 8 * MIB  # output kept per execution while no client reads
    orphan_grace_seconds: float = 300.0  # the contract's "SIGHUP after 5 min idle"
    idempotency_ttl_seconds: float = 24 * 3600.0  # advertised as PT24H
    auto_stop_default_seconds: int = 900  # the contract's default auto_stop
    auto_stop_interval_seconds: float = 10.0  # how often idle boxes are looked for

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidArgumentError("give both --tls-cert and --tls-key, or neither")
        if not 0 <= self.port <= 0xFFFF:
            raise InvalidArgumentError(f"port {self.port}: 0 to 65535")
        check_engine(self.engine)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        """Whether the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def serve_db(self) -> Path:
        return self.home / SERVE_DB

    def memory_cap_mib(self) -> int:
        """The most memory one box may ask for."""
        if self.limits.max_memory_mib is not None:
            return self.limits.max_memory_mib
        return host_memory_mib()

    @classmethod
    def make(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        allow_rootfs: tuple[str | os.PathLike[str], ...] = (),
        **options: object,
    ) -> Settings:
        """Settings for ``home`` (as ``Runtime``'s), the token resolved."""
        where = resolve_home(home)
        dirs = tuple(Path(d).resolve() for d in allow_rootfs)
        for d in dirs:
            if not d.is_dir():
                raise InvalidArgumentError(f"--allow-rootfs {d}: not a directory")
        checked = cls(where, "", allow_rootfs=dirs, **options)  # type: ignore[arg-type]
        # Last: no token file is made for a server that would not start.
        token = resolve_token(where, Path(token_file) if token_file else None)
        return dataclasses.replace(checked, token=token)


def resolve_token(home: Path, token_file: Path | None) -> str:
    """``$BOXLITE_SERVE_TOKEN``, else the first line of ``token_file``, else
    ``<home>/serve.token``, generated (mode 0600) the first time, its path
    printed so its owner can hand it to clients."""
    given = os.environ.get(TOKEN_ENV)
    if given:
        return check_token(given, TOKEN_ENV)
    if token_file is not None:
        with os_errors(f"reading the token file {token_file}"):
            return check_token(token_file.read_text().strip(), str(token_file))
    path = home / TOKEN_FILE
    try:
        return check_token(path.read_text().strip(), str(path))
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os_errors(f"writing the token file {path}"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    print(f"boxlite serve: a new token is in {path}", file=sys.stderr)
    return token


def check_token(token: str, where: str) -> str:
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise InvalidArgumentError(f"the token in {where}: printable ASCII without spaces")
    return token


def host_memory_mib() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
