"""The box commands of ``boxlite``: run, create, start, stop, restart, rm,
ls, inspect, exec, wait, logs, cp.  Each takes the runtime and the parsed
arguments and returns the command's exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..box import Box
from ..errors import BoxliteError, InvalidArgumentError, NotFoundError
from ..image.media import ImageConfig
from ..runtime import Runtime
from ..spec import main_command
from ..state.status import BoxStatus
from . import BOXLITE_FAILED, output
from .attach import run_attached
from .signals import Signals


def _env(pairs: Sequence[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:  # docker's -e NAME: take it from our environment
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return env


def _image_ref(rt: Runtime, image: str) -> str:
    """A reference of the cache; an archive path is loaded first."""
    if os.sep in image and Path(image).exists():
        loaded = rt.images.load(image)
        if len(loaded) != 1:
            raise InvalidArgumentError(f"{image} holds {len(loaded)} images: load it, pick one")
        return loaded[0].id
    return image


def _image_config(rt: Runtime, ref: str) -> ImageConfig:
    return rt.images.resolve(ref).config


def _check_tty(args: argparse.Namespace) -> None:
    if args.tty and not sys.stdin.isatty():
        raise InvalidArgumentError("the input device is not a TTY (-t needs a terminal)")


def _entrypoint(args: argparse.Namespace) -> list[str] | None:
    return [args.entrypoint] if args.entrypoint else None


def _box_options(args: argparse.Namespace) -> dict[str, Any]:
    """create's arguments that run and create share."""
    return {
        "name": args.name,
        "env": _env(args.env),
        "workdir": args.workdir,
        "user": args.user,
        "volumes": args.volume or (),
        "memory": args.memory,
        "cpus": args.cpus,
        "pids": args.pids_limit,
        "disk": args.disk,
        "log_limit": args.log_limit,
        "tmp_size": args.tmp_size,
        "network": args.network == "outbound",
        "host_loopback": args.host_loopback,
        "engine": args.engine,
        "accel": args.accel,
    }


def run(rt: Runtime, args: argparse.Namespace, signals: Signals) -> int:
    _check_tty(args)
    ref = _image_ref(rt, args.image)
    options = _box_options(args)
    if args.detach:  # the command is the box's main command; it runs on without us
        with signals.deferred():
            box = rt.create(
                ref,
                cmd=args.command or None,
                entrypoint=_entrypoint(args),
                use_image_cmd=not args.command and not args.entrypoint,
                detach=True,
                auto_remove=args.rm,
                **options,
            )
            box.start()
        print(box.id)
        return 0
    argv = main_command(_image_config(rt, ref), _entrypoint(args), args.command, True)
    # --rm: the box is ours and dies with us, whatever happens; otherwise it
    # stays (stopped) for inspect, logs, start and rm, as docker's does.
    made: list[Box] = []
    try:
        with signals.deferred():
            made.append(rt.create(ref, detach=not args.rm, **options))
        return run_attached(
            made[0],
            argv,
            env=None,
            cwd=None,
            interactive=args.interactive,
            tty_mode=args.tty,
            timeout=args.timeout,
        )
    finally:
        signals.shield()
        for box in made:
            if args.rm:
                box.remove(force=True)
            else:
                box.stop()
                box.close()


def create(rt: Runtime, args: argparse.Namespace, signals: Signals) -> int:
    with signals.deferred():
        box = rt.create(
            _image_ref(rt, args.image),
            cmd=args.command or None,
            entrypoint=_entrypoint(args),
            use_image_cmd=not args.command and not args.entrypoint,
            detach=True,
            **_box_options(args),
        )
    print(box.id)
    return 0


def _each(rt: Runtime, ids: Sequence[str], step: Callable[[Box], object]) -> int:
    """Do step to every box named, printing what it gives (None: the name);
    boxlite's failure (125) if any failed: an unknown box, a refusal."""
    failed = 0
    for name in ids:
        try:
            shown = step(rt.get(name))
            print(name if shown is None else shown)
        except BoxliteError as exc:  # reported; the other boxes are still done
            output.error(exc.message)
            failed = BOXLITE_FAILED
    return failed


def start(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    return _each(rt, args.boxes, Box.start)


def stop(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    return _each(rt, args.boxes, Box.stop)


def restart(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    return _each(rt, args.boxes, Box.restart)


def rm(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    return _each(rt, args.boxes, lambda box: box.remove(force=args.force))


def ls(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    infos = rt.list(None if args.all else BoxStatus.RUNNING)
    if args.format == "json":
        output.as_json(infos)
    else:
        output.table(["ID", "NAME", "IMAGE", "STATUS", "CREATED"], output.box_rows(infos))
    return 0


def inspect(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    found: list[object] = []
    for name in args.names:
        try:
            found.append(rt.get(name).info())
        except NotFoundError:
            found.append(rt.images.inspect(name))  # raises for neither
    output.as_json(found)
    return 0


def exec_(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    _check_tty(args)
    box: Box = rt.get(args.box)
    if args.detach:
        execution = box.exec(args.command, env=_env(args.env), cwd=args.workdir, user=args.user)
        execution.detach()
        print(execution.id)
        return 0
    return run_attached(
        box,
        args.command,
        env=_env(args.env),
        cwd=args.workdir,
        interactive=args.interactive,
        tty_mode=args.tty,
        timeout=None,
        user=args.user,
    )


def wait(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    def exit_code(box: Box) -> int:
        end = box.wait()
        return end.exit_code if end.exit_code is not None else 0

    return _each(rt, args.boxes, exit_code)


def logs(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    written = rt.get(args.box).logs()
    sys.stdout.buffer.write(written.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(written.stderr)
    sys.stderr.buffer.flush()
    return 0


def cp(rt: Runtime, args: argparse.Namespace, _signals: Signals) -> int:
    """cp BOX:PATH HOSTPATH, or cp HOSTPATH BOX:PATH."""
    src_box, _, src_path = args.src.rpartition(":") if ":" in args.src else ("", "", args.src)
    dst_box, _, dst_path = args.dest.rpartition(":") if ":" in args.dest else ("", "", args.dest)
    if bool(src_box) == bool(dst_box):
        raise InvalidArgumentError("cp copies between a box and the host: one side is BOX:PATH")
    if src_box:
        rt.get(src_box).copy_out(src_path, dst_path)
    else:
        rt.get(dst_box).copy_in(src_path, dst_path)
    return 0
