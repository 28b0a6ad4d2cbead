"""A client of the OCI distribution API (what registries speak): manifests
and blobs over HTTP(S), with anonymous, basic and bearer-token auth.

HTTPS (the system's certificate authorities, or ``SSL_CERT_FILE``), unless
``insecure``; a loopback registry that does not speak TLS gets plain HTTP.
A blob download continues a broken earlier one with a Range request;
redirects (to blob storage) are followed without our credentials.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import IO

from ..errors import (
    DigestMismatchError,
    ImageError,
    ImageNotFoundError,
    RegistryNetworkError,
    UnauthorizedError,
)
from .content import Content
from .media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MAX_DOCUMENT,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    digest_of,
    media_type,
    parse_json,
    pick_platform,
    verify,
)
from .reference import Reference

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
TIMEOUT_S = 30.0
MAX_REDIRECTS = 5


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # followed by hand, without the Authorization header


_OPENER = urllib.request.build_opener(_NoRedirect)


def _split_host(host: str) -> tuple[str, int]:
    """("name", port) of "name[:port]" or "[v6][:port]"."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") else 443
    name, _, port = host.partition(":")
    return name, int(port) if port else 443


def _loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _speaks_tls(name: str, port: int) -> bool:
    """Whether the server answers a TLS handshake (an untrusted certificate
    still counts: the request will then fail on it, loudly)."""
    context = ssl.create_default_context()
    try:
        with (
            socket.create_connection((name, port), timeout=TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=name),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return True
    except (ssl.SSLError, OSError):
        return False


def scheme_for(host: str, insecure: bool) -> str:
    """HTTPS, unless asked not to; a loopback registry (as docker treats
    127.0.0.0/8) gets plain HTTP when it does not speak TLS."""
    if insecure:
        return "http"
    name, port = _split_host(host)
    return "https" if not _loopback(name) or _speaks_tls(name, port) else "http"


class Registry:
    """One repository of one registry, for one pull (threads share it)."""

    def __init__(
        self, ref: Reference, credentials: tuple[str, str] | None, insecure: bool = False
    ) -> None:
        self.ref = ref
        self.base = f"{scheme_for(ref.api_host, insecure)}://{ref.api_host}/v2/{ref.repository}"
        self.credentials = credentials
        self._auth: str | None = None  # the Authorization header that worked
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------

    def _open(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """GET url, authenticating once when challenged, following redirects."""
        challenged = False
        for _ in range(MAX_REDIRECTS + 2):
            request = urllib.request.Request(url, headers=headers)
            same_host = url.startswith(self.base.split("/v2/")[0])
            with self._lock:
                auth = self._auth
            if auth and same_host:
                request.add_header("Authorization", auth)
            try:
                with _transport_errors():
                    return _OPENER.open(request, timeout=TIMEOUT_S)  # type: ignore[no-any-return]
            except urllib.error.HTTPError as exc:
                if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                    url = urllib.parse.urljoin(url, exc.headers["Location"])
                    continue
                if exc.code == 401 and same_host and not challenged:
                    challenged = True
                    self._authenticate(exc.headers.get("WWW-Authenticate", ""))
                    continue
                raise _http_error(exc, url) from None
        raise RegistryNetworkError(f"too many redirects fetching {url}")

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise UnauthorizedError(f"{self.ref.registry} needs credentials")
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            header = f"Basic {token}"
        elif scheme.lower() == "bearer":
            header = f"Bearer {self._token(_challenge_params(params))}"
        else:
            raise UnauthorizedError(
                f"{self.ref.registry}: unsupported auth challenge {challenge!r}"
            )
        with self._lock:
            self._auth = header

    def _token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise UnauthorizedError(f"{self.ref.registry}: a bearer challenge without realm")
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")
        if self.credentials is not None:
            basic = base64.b64encode(":".join(self.credentials).encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with _transport_errors(), _OPENER.open(request, timeout=TIMEOUT_S) as response:
                body = response.read(MAX_DOCUMENT)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, realm) from None
        doc = parse_json(body, "the token response")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise UnauthorizedError(f"{realm} answered without a token")
        return token

    # -- manifests -------------------------------------------------------------

    def manifest(self) -> tuple[bytes, str]:
        """The linux/amd64 image manifest the reference names, and its digest."""
        data, digest = self._document(self.ref.manifest_ref, self.ref.digest)
        for _ in range(4):
            doc = parse_json(data, f"manifest {digest}")
            if media_type(doc) not in INDEX_TYPES:
                return data, digest
            picked = pick_platform(doc)
            data, digest = self._document(picked.digest, picked.digest)
        raise ImageError("image indexes nested too deeply")

    def _document(self, ref: str, digest: str | None) -> tuple[bytes, str]:
        url = f"{self.base}/manifests/{ref}"
        with self._open(url, {"Accept": ACCEPT}) as response, _transport_errors():
            data = response.read(MAX_DOCUMENT + 1)
            said = response.headers.get("Docker-Content-Digest")
        if len(data) > MAX_DOCUMENT:
            raise ImageError(f"{url} is larger than {MAX_DOCUMENT} bytes")
        if digest is not None:
            return verify(data, digest), digest
        if said and said != digest_of(data):
            raise DigestMismatchError(f"{url} does not match the digest it was sent with")
        return data, digest_of(data)

    # -- blobs -----------------------------------------------------------------

    def fetch(
        self,
        descriptor: Descriptor,
        content: Content,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        ingest = content.ingest(descriptor.digest, descriptor.size)
        if ingest is None:
            on_bytes(descriptor.size)  # a concurrent pull fetched it
            return
        try:
            if ingest.offset < descriptor.size:
                headers = {"Range": f"bytes={ingest.offset}-"} if ingest.offset else {}
                with self._open(f"{self.base}/blobs/{descriptor.digest}", headers) as response:
                    if ingest.offset and response.status != 206:
                        ingest.restart()  # the registry sends it all again
                    on_bytes(ingest.offset)  # what an earlier attempt fetched
                    ingest.copy_from(partial(_read, response), on_bytes, cancelled)
            if ingest.offset < descriptor.size:  # http.client reads a cut-off body as EOF
                raise RegistryNetworkError(
                    f"blob {descriptor.digest}: the transfer broke off after"
                    f" {ingest.offset} of {descriptor.size} bytes"
                )
            ingest.commit()
        finally:
            ingest.close()


def _read(response: IO[bytes], n: int) -> bytes:
    with _transport_errors():
        return response.read(n)


@contextmanager
def _transport_errors() -> Iterator[None]:
    """Transport failures (refused, reset, cut short, timed out) as
    RegistryNetworkError; HTTP answers are the caller's to read."""
    try:
        yield
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise RegistryNetworkError(f"the registry could not be reached: {exc}") from exc


def _http_error(exc: urllib.error.HTTPError, url: str) -> ImageError:
    detail = f"{url}: HTTP {exc.code} {exc.reason}"
    if exc.code == 404:
        return ImageNotFoundError(detail)
    if exc.code in (401, 403):
        return UnauthorizedError(detail)
    if exc.code == 429 or exc.code >= 500:
        return RegistryNetworkError(detail)
    return ImageError(detail)


def _challenge_params(text: str) -> dict[str, str]:
    """key="value" pairs of a WWW-Authenticate challenge."""
    params: dict[str, str] = {}
    for part in urllib.request.parse_http_list(text):
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return params
