"""``boxlite``: the command line, docker-like.

Exit codes: a box command's own code passes through (128+n when signal n
ended it, 124 when ``--timeout`` did, 126 when it could not be executed,
127 when it does not exist); 125 when boxlite itself failed (a bad flag
value, an unknown image, a box that could not start); 130, 143 or 129 when
this process was interrupted, terminated or hung up on while not attached
to a box command.  Errors go to stderr as one line.  A command given
several boxes (start, stop, restart, rm, wait) does each it can and exits
125 if any failed (an unknown box, rm of a running one without -f).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from .. import __version__
from ..errors import BoxliteError
from .signals import Signals, Terminated

if TYPE_CHECKING:
    from ..runtime import Runtime

# What a command needs loads when it runs (boxlite_ffi._lazy): a subcommand
# names its function as "module:function" of this package, and only the
# subcommand given is built (building them all costs ~10 ms of a run).
Command = Callable[["Runtime", argparse.Namespace, Signals], int]
BOXLITE_FAILED = 125


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is boxlite's failure: one line, 125."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: {message}\n")
        sys.exit(BOXLITE_FAILED)


def _box_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="environment")
    p.add_argument("-w", "--workdir", help="working directory in the box")
    p.add_argument("-u", "--user", help="user in the box: name or uid, [:group or :gid]")


def _run_options(p: argparse.ArgumentParser) -> None:
    from ..spec import ACCELS, ENGINES

    _box_options(p)
    p.add_argument("--name", help="the box's name")
    p.add_argument("-v", "--volume", action="append", metavar="HOST:BOX[:ro]", help="mount")
    p.add_argument("--entrypoint", help="replaces the image's Entrypoint (and Cmd)")
    p.add_argument("-m", "--memory", help="memory limit (bytes, or 512m, 2g)")
    p.add_argument("--cpus", type=float, help="CPU limit, in CPUs (0.5)")
    p.add_argument("--pids-limit", type=int, help="process limit (0: none; default 2048 on v2)")
    p.add_argument("--disk", help="size limit of the writable layer (1g)")
    p.add_argument("--log-limit", help="output of the command kept per stream (32m)")
    p.add_argument("--tmp-size", help="size of each of /tmp and /dev/shm (default 1g)")
    p.add_argument(
        "--network", choices=["none", "outbound"], default="none", help="outbound: slirp4netns"
    )
    p.add_argument("--host-loopback", action="store_true", help="the box may reach 127.0.0.1")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="ns: namespaces; vm: a micro-VM (default $BOXLITE_ENGINE or ns)",
    )
    p.add_argument("--accel", choices=ACCELS, default="auto", help="the vm engine's accelerator")
    p.add_argument("image", help="image name, id, or an archive's path")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")


def _attach_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    p.add_argument("-t", "--tty", action="store_true", help="a pseudo-terminal")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "json"], default="table")


def _run(p: argparse.ArgumentParser) -> None:
    _attach_options(p)
    p.add_argument("--rm", action="store_true", help="remove the box when it ends")
    p.add_argument("--timeout", type=float, help="seconds before the command is ended (124)")
    _run_options(p)


def _boxes(p: argparse.ArgumentParser) -> None:
    p.add_argument("boxes", nargs="+")


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+")


def _box(p: argparse.ArgumentParser) -> None:
    p.add_argument("box")


def _rm(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="remove running boxes too")
    p.add_argument("boxes", nargs="+")


def _ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="not only running ones")
    _format(p)


def _exec(p: argparse.ArgumentParser) -> None:
    _attach_options(p)
    _box_options(p)
    p.add_argument("box")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _cp(p: argparse.ArgumentParser) -> None:
    p.add_argument("src")
    p.add_argument("dest")


def _serve(p: argparse.ArgumentParser) -> None:
    from ..server import cli as serve_cli  # its flags only: the server itself loads on use

    serve_cli.add_options(p)


def _images(images: argparse.ArgumentParser) -> None:
    isub = images.add_subparsers(dest="images_cmd", parser_class=_Parser)
    _format(images)
    p = isub.add_parser("ls", help="list images")
    _format(p)
    p.set_defaults(func="image_commands:ls")
    p = isub.add_parser("rm", help="remove images")
    p.add_argument("images", nargs="+")
    p.set_defaults(func="image_commands:rm")
    p = isub.add_parser("load", help="load an OCI layout or docker archive")
    p.add_argument("path")
    p.add_argument("--tag", help="a name to add")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func="image_commands:load")
    p = isub.add_parser("pull", help="pull from a registry")
    p.add_argument("ref")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--insecure", action="store_true", help="plain HTTP")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func="image_commands:pull")
    isub.add_parser("prune", help="delete what no image needs").set_defaults(
        func="image_commands:prune"
    )


def _nothing(p: argparse.ArgumentParser) -> None:
    pass


# name -> (its function, "module:function" or None when main answers it
# without a runtime; its help; its options; its aliases)
_COMMANDS: dict[
    str, tuple[str | None, str, Callable[[argparse.ArgumentParser], None], tuple[str, ...]]
] = {
    "run": ("box_commands:run", "run a command in a new box", _run, ()),
    "create": ("box_commands:create", "create a box (its command runs on start)", _run_options, ()),
    "start": ("box_commands:start", "start boxes", _boxes, ()),
    "stop": ("box_commands:stop", "stop boxes", _boxes, ()),
    "restart": ("box_commands:restart", "restart boxes", _boxes, ()),
    "wait": ("box_commands:wait", "wait for boxes to end; print their exit codes", _boxes, ()),
    "rm": ("box_commands:rm", "remove boxes", _rm, ()),
    "ls": ("box_commands:ls", "list boxes", _ls, ("ps",)),
    "inspect": ("box_commands:inspect", "boxes or images as JSON", _names, ()),
    "exec": ("box_commands:exec_", "run a command in a running box", _exec, ()),
    "logs": ("box_commands:logs", "what a box's command wrote", _box, ()),
    "cp": ("box_commands:cp", "copy between a box and the host (BOX:PATH)", _cp, ()),
    "version": (None, "the version", _nothing, ()),
    "serve": (None, "serve the Box API over HTTP (the server extra)", _serve, ()),
    # for when a runtime cannot open
    "recover": (
        None,
        "rebuild a lost or damaged store from the home's boxes and images",
        _nothing,
        (),
    ),
    "images": ("image_commands:ls", "manage images", _images, ()),
}


def _named(argv: Sequence[str]) -> str | None:
    """The subcommand argv names, if it names one before anything the top
    level parser must judge (-h, an unknown flag)."""
    words = iter(argv)
    for word in words:
        if word == "--home":
            next(words, None)
        elif not word.startswith("--home="):
            return word if not word.startswith("-") else None
    return None


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only`` (a subcommand or an alias), none of
    the others: what a run of one command needs."""
    top = _Parser(prog="boxlite", description="Run commands in boxes.")
    top.add_argument("--home", help="the runtime home (default $BOXLITE_HOME or ~/.boxlite)")
    sub = top.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    chosen = {n for n, (*_, aliases) in _COMMANDS.items() if only in (n, *aliases)}
    for name, (fn, text, options, aliases) in _COMMANDS.items():
        if chosen and name not in chosen:
            continue
        p = sub.add_parser(name, help=text, aliases=list(aliases))
        if fn is not None:
            p.description = text
            p.set_defaults(func=fn)
        options(p)
    return top


def _function(ref: str) -> Command:
    module, name = ref.split(":")
    fn: Command = getattr(importlib.import_module(f".{module}", __name__), name)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(_named(argv)).parse_args(argv)
    signals = Signals()
    rt: Runtime | None = None
    try:
        if args.cmd == "version":
            print(f"boxlite {__version__}")
            return 0
        if args.cmd == "serve":
            from ..server import cli as serve_cli

            return serve_cli.run(args)
        from ..runtime import Runtime

        if args.cmd == "recover":
            from . import output

            output.recovery(Runtime.recover(args.home))  # None: $BOXLITE_HOME or ~/.boxlite
            return 0
        rt = Runtime(args.home)  # None: $BOXLITE_HOME or ~/.boxlite
        return int(_function(args.func)(rt, args, signals))
    except Terminated as stop:
        return _signaled(stop.signum)
    except BrokenPipeError:  # our reader went away (| head): as a shell's SIGPIPE death
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _signaled(signal.SIGPIPE)
    except BoxliteError as exc:
        from . import output

        output.error(exc.message)
        return BOXLITE_FAILED
    except OSError as exc:  # the host refused something (a cp destination): what and why
        from . import output

        output.error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return BOXLITE_FAILED
    except Exception as exc:  # noqa: BLE001 (a bug too must end as one line and 125)
        from . import output

        output.error(f"internal error: {type(exc).__name__}: {exc}")
        return BOXLITE_FAILED
    finally:
        signals.shield()
        if rt is not None:
            rt.close()
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()


def command() -> NoReturn:
    """The ``boxlite`` process (its console script, ``python3 -m
    boxlite_ffi.cli``): ``main``, then an exit that leaves the interpreter's
    last collection nothing to walk: it would visit every object only for the
    process to drop them all (a third of a short run's own time)."""
    code = main()
    gc.freeze()  # the runtime is closed and the output flushed: main's finally
    sys.exit(code)


def _signaled(signum: int) -> int:
    from .._core.core import signaled_status  # the native core's rule: it loads the library

    return signaled_status(signum)


__all__ = ["command", "main", "parser"]
