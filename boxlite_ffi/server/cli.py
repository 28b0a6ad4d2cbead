"""``boxlite serve`` / ``python3 -m boxlite_ffi.server``: flags to Settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import BoxliteError
from ..spec import ENGINES
from .settings import DEFAULT_HOST, DEFAULT_PORT, Settings

FAILED = 125  # boxlite's own failure, as the rest of the CLI


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--engine", choices=ENGINES, help="engine of boxes (default $BOXLITE_ENGINE or ns)"
    )
    p.add_argument("--token-file", help="file holding the bearer token (else $BOXLITE_SERVE_TOKEN,"
                   " else <home>/serve.token, generated)")  # fmt: skip
    p.add_argument("--tls-cert", help="TLS certificate (PEM)")
    p.add_argument("--tls-key", help="TLS private key (PEM)")
    p.add_argument("--allow-rootfs", action="append", default=[], metavar="DIR",
                   help="rootfs_path may name directories under DIR (repeatable)")  # fmt: skip
    p.add_argument("--attach-window", type=int, metavar="BYTES",
                   help="output kept per execution while no client reads it")  # fmt: skip
    p.add_argument("--orphan-grace", type=float, metavar="SECONDS",
                   help="an execution without a client this long is reaped")  # fmt: skip


def settings_of(args: argparse.Namespace) -> Settings:
    from pathlib import Path

    sessions: dict[str, object] = {}  # given: else the Settings' defaults
    if args.attach_window is not None:
        sessions["attach_window_bytes"] = args.attach_window
    if args.orphan_grace is not None:
        sessions["orphan_grace_seconds"] = args.orphan_grace
    return Settings.make(
        args.home,
        token_file=args.token_file,
        allow_rootfs=tuple(args.allow_rootfs),
        host=args.host,
        port=args.port,
        engine=args.engine,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        **sessions,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_of(args)
        from .app import serve
    except BoxliteError as exc:
        print(f"boxlite serve: {exc.message}", file=sys.stderr)
        return FAILED
    except ImportError as exc:
        print(f"boxlite serve: {exc}: pip install 'boxlite-ffi[server]'", file=sys.stderr)
        return FAILED
    serve(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="boxlite serve", description="Serve the Box API over HTTP.")
    p.add_argument("--home", help="the runtime home (default $BOXLITE_HOME or ~/.boxlite)")
    add_options(p)
    return run(p.parse_args(argv))
