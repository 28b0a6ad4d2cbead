"""A real OCI registry on loopback (Debian's docker-registry), images
pushed to it by skopeo; optional basic (htpasswd) or bearer-token auth."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REGISTRY = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"
USER, PASSWORD = "alice", "wonderland"


def bcrypt(password: str) -> str:
    """A bcrypt hash (what the registry's htpasswd wants), by libcrypt."""
    libcrypt = ctypes.CDLL("libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "".join(alphabet[b % 64] for b in os.urandom(21)) + "."
    return libcrypt.crypt(password.encode(), f"$2b$05${salt}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryServer:
    def __init__(
        self, root: Path, auth: dict[str, object] | None = None, tls: bool = False
    ) -> None:
        if not Path(REGISTRY).exists() or not Path(SKOPEO).exists():
            missing = "docker-registry and skopeo are not installed (tests/run.sh installs them)"
            if os.environ.get("CI"):
                raise RuntimeError(missing)
            pytest.skip(missing)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
            "http": {"addr": self.host, "secret": "test"},
        }
        if auth is not None:
            config["auth"] = auth
        self.cert: Path | None = None
        if tls:  # a self-signed certificate for 127.0.0.1
            self.cert, key = root / "tls.pem", root / "tls.key"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", key, "-out", self.cert],
                check=True, capture_output=True,
            )  # fmt: skip
            config["http"]["tls"] = {"certificate": str(self.cert), "key": str(key)}  # type: ignore[index]
        (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @classmethod
    def with_basic_auth(cls, root: Path) -> RegistryServer:
        root.mkdir(parents=True, exist_ok=True)
        (root / "htpasswd").write_text(f"{USER}:{bcrypt(PASSWORD)}\n")
        return cls(root, {"htpasswd": {"realm": "boxlite-test", "path": str(root / "htpasswd")}})

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY, "serve", str(self.root / "config.yml")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                scheme = "https" if self.cert else "http"
                context = ssl._create_unverified_context() if self.cert else None
                urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=1, context=context)
                return
            except urllib.error.HTTPError:
                return  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the registry did not come up: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def push(self, layout: Path, name: str, creds: bool = False, fmt: str = "oci") -> str:
        """skopeo copy oci:LAYOUT -> this registry; returns the reference."""
        ref = f"{self.host}/{name}"
        args = [SKOPEO, "copy", "-q", "--dest-tls-verify=false", "--format", fmt]
        if creds:
            args.append(f"--dest-creds={USER}:{PASSWORD}")
        subprocess.run([*args, f"oci:{layout}", f"docker://{ref}"], check=True, capture_output=True)
        return ref

    def requests(self, what: str, status: int | None = None) -> int:
        """How many GETs the access log shows whose line contains what
        (and that were answered with status)."""
        lines = [line for line in self.log.read_text().splitlines() if '"GET ' in line]
        answered = f'HTTP/1.1" {status} ' if status else ""
        return sum(1 for line in lines if what in line and answered in line)

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return (
            self.root
            / "storage/docker/registry/v2/blobs/sha256"
            / hexdigest[:2]
            / hexdigest
            / "data"
        )


class TokenServer:
    """A token service of the distribution spec: answers
    ``GET /token?service=…&scope=…`` given alice's basic credentials with a
    JWT (RS256, the signing certificate in its x5c header) that grants the
    asked-for scope.  Keys come from the openssl command."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = root / "token.key", root / "token.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=boxlite-test-token", "-keyout", self.key, "-out", self.cert],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", self.cert, "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps({"token": server.token(query.get("scope", [""])[0])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def auth_config(self) -> dict[str, object]:
        return {
            "token": {
                "realm": self.realm,
                "service": "boxlite-test",
                "issuer": "boxlite-test-issuer",
                "rootcertbundle": str(self.cert),
            }
        }

    def token(self, scope: str) -> str:
        self.issued += 1
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "boxlite-test-issuer",
            "sub": USER,
            "aud": "boxlite-test",
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(self.issued),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ThrottledProxy:
    """A TCP proxy on loopback that passes the server's answers on at
    ``rate`` bytes a second, so a transfer is reliably still under way when
    a test breaks it.  The server going away closes the client's side."""

    CHUNK = 64 * 1024

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port, self.rate = upstream_port, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self._spawn(self._pipe, client, server, 0)
            self._spawn(self._pipe, server, client, self.rate)

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        try:
            while data := src.recv(self.CHUNK):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
