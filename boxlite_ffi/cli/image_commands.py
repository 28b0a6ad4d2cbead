"""``boxlite images``: ls, rm, load, pull, prune."""

from __future__ import annotations

import argparse
import sys

from ..runtime import Runtime
from . import output
from .signals import Signals


def _progress(args: argparse.Namespace) -> output.ProgressBar | None:
    return output.ProgressBar() if sys.stderr.isatty() and not args.quiet else None


def ls(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    images = rt.images.list()
    if args.format == "json":
        output.as_json(images)
        return 0
    rows = [
        [
            tag,
            image.id.removeprefix("sha256:")[:12],
            output.size_text(image.size),
            output.ago(image.created),
        ]
        for image in images
        for tag in image.tags or ("<none>",)
    ]
    output.table(["NAME", "ID", "SIZE", "CREATED"], rows)
    return 0


def rm(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    for ref in args.images:
        rt.images.remove(ref)
        print(ref)
    return 0


def load(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    for image in rt.images.load(args.path, tag=args.tag, progress=_progress(args)):
        print(", ".join(image.tags) or image.id)
    return 0


def pull(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    image = rt.images.pull(
        args.ref,
        username=args.username,
        password=args.password,
        insecure=args.insecure,
        progress=_progress(args),
    )
    print(image.id)
    return 0


def prune(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    report = rt.images.prune()
    for image in report.images:
        print(f"deleted {image}")
    print(f"freed {output.size_text(report.bytes_freed)}")
    return 0
