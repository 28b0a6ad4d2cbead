"""Specifications of boxes and executions: every check of what ``create``
and ``exec`` are given, and every default, in one place.

A box's specification is the configuration ``Runtime.create`` records (and
``native_config`` hands to the native core); an execution's is one
``ExecSpec``, built once from the keywords of ``Box.exec`` (the same
keywords for ``exec_now`` and the asyncio ``Box.exec``: ``with_exec_spec``
gives each of them this one signature).  The native core checks again what
it is given; these checks are the ones with Python's messages and types.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeGuard, TypeVar, cast

from ._core.core import BoxConfig, Mount, VmConfig
from ._native import lib
from .agent import as_user
from .errors import EngineError, ImageError, InvalidArgumentError, NotFoundError
from .image.media import ImageConfig
from .image.unpack import UnpackLimits
from .state import boxdir

DEFAULT_STOP_GRACE_MS = lib.BOXLITE_DEFAULT_STOP_GRACE_MS
DEFAULT_DRAIN_MS = lib.BOXLITE_DEFAULT_DRAIN_MS
DISK_MIN = 16 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OutputCallback = Callable[[bytes], None]

# An environment: a mapping, or docker's list of "KEY=VALUE" strings.
Env = Mapping[str, str] | Sequence[str]


# ---- executions -----------------------------------------------------------


@dataclass(frozen=True)
class ExecSpec:
    """What to run in a box, and how (the keywords of ``Box.exec``)."""

    argv: Sequence[str]
    _: KW_ONLY
    env: Env | None = None
    cwd: str | None = None
    on_stdout: OutputCallback | None = None
    on_stderr: OutputCallback | None = None
    stdin: bool = False
    ordered_output: bool = False
    timeout: float | None = None
    tty: bool = False
    rows: int = 24
    cols: int = 80
    output_window: int | None = None
    user: str | None = None

    def native(self, config: Mapping[str, Any]) -> NativeExec:
        """The checked arguments of the native exec, in a box of ``config``
        (whose user, environment and working directory it runs under)."""
        who = config.get("user") if self.user is None else check_user(self.user)
        args = as_user(who, check_argv(self.argv))
        environment = env_list(config["env"], self.env)
        timeout_ms = timeout_millis(self.timeout)
        workdir = check_cwd(self.cwd) or config["workdir"]
        if self.tty:
            check_size(self.rows, self.cols)
        window = check_window(self.output_window)
        check_callback(self.on_stdout, "on_stdout")
        check_callback(self.on_stderr, "on_stderr")
        tty = (self.rows, self.cols) if self.tty else None
        return NativeExec(args, environment, workdir, timeout_ms, tty, window)


class NativeExec(NamedTuple):
    argv: list[str]
    env: list[str]
    cwd: str | None
    timeout_ms: int
    tty: tuple[int, int] | None
    window: int


S = TypeVar("S")
R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")


def _taking(
    build: Callable[P, T],
) -> Callable[[Callable[[S, T], R]], Callable[Concatenate[S, P], R]]:
    def decorate(method: Callable[[S, T], R]) -> Callable[Concatenate[S, P], R]:
        def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return method(self, build(*args, **kwargs))

        async def call_async(self: S, /, *args: Any, **kwargs: Any) -> Any:
            return await method(self, build(*args, **kwargs))  # type: ignore[misc]

        # An async method stays one (asyncio.iscoroutinefunction), and help()
        # and inspect show the keywords, not the spec.
        wrapper: Any = call_async if inspect.iscoroutinefunction(method) else call
        functools.update_wrapper(wrapper, method)
        keywords = inspect.signature(build).parameters.values()
        me = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        wrapper.__signature__ = inspect.Signature([me, *keywords])
        return cast(Callable[Concatenate[S, P], R], wrapper)

    return decorate


# A method taking one ExecSpec, called with the spec's own arguments.
with_exec_spec = _taking(ExecSpec)


def env_dict(env: Env | None) -> dict[str, str]:
    """``env`` as a dict, every name and value checked."""
    if env is None:
        return {}
    if isinstance(env, Mapping):
        pairs = list(env.items())
    elif isinstance(env, Sequence) and not isinstance(env, str | bytes):
        pairs = []
        for entry in env:
            if not isinstance(entry, str) or "=" not in entry:
                raise InvalidArgumentError(f"environment entry {entry!r}: a KEY=VALUE string")
            key, _, value = entry.partition("=")
            pairs.append((key, value))
    else:
        raise InvalidArgumentError(
            f"env must be a mapping or a list of KEY=VALUE strings, not {type(env).__name__}"
        )
    for key, value in pairs:
        valid = isinstance(key, str) and isinstance(value, str)
        if not valid or not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgumentError(f"invalid environment variable {key!r}")
    return dict(pairs)


def env_list(*layers: Env | None) -> list[str]:
    """Later layers override earlier ones; PATH defaults to the usual one."""
    merged = {"PATH": DEFAULT_PATH}
    for layer in layers:
        merged.update(env_dict(layer))
    return [f"{k}={v}" for k, v in merged.items()]


def timeout_millis(timeout: float | None) -> int:
    """Seconds as the native milliseconds (0: none, also for infinity)."""
    seconds = check_seconds(timeout, "timeout")
    if seconds is None:
        return 0
    ms = math.ceil(seconds * 1000)
    if not 1 <= ms <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"timeout must be between 1 ms and 49 days, not {timeout!r}")
    return ms


def check_window(window: int | None) -> int:
    """An output window in bytes as the native value (0: the default)."""
    if window is None:
        return 0
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window < 0xFFFFFFFF:
        raise InvalidArgumentError(f"output_window must be 1 byte to 4 GiB, not {window!r}")
    return window


def check_cwd(cwd: object, what: str = "cwd") -> str | None:
    """A working directory (an execution's cwd, a box's workdir): absolute,
    as docker's -w."""
    if cwd is None:
        return None
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise InvalidArgumentError(f"{what} {cwd!r}: an absolute path in the box")
    return cwd


def check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes):
        raise InvalidArgumentError("argv must be a sequence of strings, not a string")
    try:
        args = list(argv)
    except TypeError:
        raise InvalidArgumentError(f"argv must be a sequence of strings, not {argv!r}") from None
    if not args or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise InvalidArgumentError("argv must be a non-empty sequence of strings without NUL")
    return args


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_size(rows: object, cols: object) -> None:
    if not (is_int(rows) and is_int(cols) and 1 <= rows <= 0xFFFF and 1 <= cols <= 0xFFFF):
        raise InvalidArgumentError(f"terminal size {rows!r}x{cols!r}: two integers in 1..65535")


def check_seconds(value: object, what: str) -> float | None:
    """A timeout in seconds; None and infinity mean none.  NaN, a negative
    number or no number at all is an InvalidArgumentError."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise InvalidArgumentError(f"{what} must be seconds >= 0 or None, not {value!r}")
    return None if math.isinf(value) else float(value)


def check_data(data: object, what: str) -> memoryview:
    """Bytes to send, as unsigned bytes (str must be encoded first)."""
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"{what} must be bytes-like, not {type(data).__name__}"
        ) from None


def check_callback(callback: object, what: str) -> None:
    if callback is not None and not callable(callback):
        raise InvalidArgumentError(f"{what} must be callable or None, not {callback!r}")


def check_cursor(cursor: tuple[int, int]) -> None:
    """Where an attach starts: bytes of stdout and stderr already seen."""
    if len(cursor) != 2 or not all(isinstance(c, int) and c >= 0 for c in cursor):
        raise InvalidArgumentError(f"a cursor is two offsets >= 0, not {cursor!r}")


def parse_exec_id(exec_id: str) -> int:
    try:
        value = int(exec_id, 16) if isinstance(exec_id, str) and len(exec_id) == 16 else 0
    except ValueError:
        value = 0
    if not value:
        raise InvalidArgumentError(f"{exec_id!r} is not an execution id (16 hex digits)")
    return value


# ---- users ----------------------------------------------------------------

ROOT_USERS = ("", "root", "0", "root:root", "0:0")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
UNPRIVILEGED = "processes in a box of an unprivileged runtime run as its root"


def check_user(user: object) -> str | None:
    """A valid user, None for root; InvalidArgumentError for a malformed
    one, and for a user other than root in a box of an unprivileged
    runtime (which has one id)."""
    user = check_user_name(user)
    if user in ROOT_USERS:
        return None
    if not runs_users():
        raise InvalidArgumentError(f"user {user!r}: {UNPRIVILEGED}")
    return user


def check_user_name(user: object) -> str:
    """A user's name or id (with :group or :gid), as written."""
    if not isinstance(user, str) or not USER_RE.fullmatch(user or "root"):
        raise InvalidArgumentError(f"user {user!r}: a name or id, with :group or :gid")
    return user


def runs_users() -> bool:
    """Whether this runtime's boxes have users other than root."""
    return os.geteuid() == 0


# ---- boxes ----------------------------------------------------------------

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: object) -> None:
    if name is not None and not (isinstance(name, str) and NAME_RE.fullmatch(name)):
        raise InvalidArgumentError(f"invalid box name {name!r}")


# Processes and threads of a box that asked for no limit (podman's
# default: room for any build, not for a fork bomb that takes the host's
# pids), where the pids controller is in cgroup v2: there the box starts in
# its cgroup at no cost, while joining a v1 one costs each start ~5 ms.
DEFAULT_PIDS = 2048
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)i?b?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str, what: str, least: int) -> int:
    """Bytes, from a number of them or a number with k, m, g or t."""
    found = None if isinstance(value, bool) else _SIZE.fullmatch(str(value).lower())
    if found is None:
        raise InvalidArgumentError(f"{what} {value!r}: bytes, or a number with k, m, g or t")
    size = int(found[1]) * _UNITS[found[2]]
    if not least <= size < 1 << 62:
        least_text = f"{least >> 20} MiB" if least >= 1 << 20 else f"{least >> 10} KiB"
        raise InvalidArgumentError(f"{what} {value!r}: at least {least_text}")
    return size


def parse_limits(
    memory: int | str | None,
    cpus: float | None,
    pids: int | None,
    log_limit: int | str | None = None,
    tmp_size: int | str | None = None,
) -> dict[str, int | bool]:
    """The native limits from create's arguments (absent: none, but for the
    default pids, log and tmp limits, the last two the native core's)."""
    limits: dict[str, int | bool] = {}
    if log_limit is not None:
        limits["log_limit"] = parse_size(log_limit, "log_limit", lib.BOXLITE_MIN_LOG_LIMIT)
    if tmp_size is not None:
        limits["tmp_size"] = parse_size(tmp_size, "tmp_size", lib.BOXLITE_MIN_TMP_SIZE)
    if memory is not None:
        limits["memory_limit"] = parse_size(memory, "memory", 1 << 20)
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0.01 <= cpus <= 4096:
            raise InvalidArgumentError(f"cpus {cpus!r}: between 0.01 and 4096")
        limits["cpu_millis"] = round(cpus * 1000)
    if pids is None:  # a default, where this machine can enforce it
        limits.update(pids_limit=DEFAULT_PIDS, pids_optional=True)
    elif isinstance(pids, bool) or not isinstance(pids, int) or not 0 <= pids <= 1 << 22:
        raise InvalidArgumentError(f"pids {pids!r}: between 1 and {1 << 22}, or 0 for none")
    elif pids:
        limits["pids_limit"] = pids
    return limits


def unpack_limits(max_bytes: int | str, max_entries: int) -> UnpackLimits:
    """The runtime's bounds on one unpacked layer, from its arguments."""
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise InvalidArgumentError(f"max_layer_entries {max_entries!r}: a positive integer")
    return UnpackLimits(parse_size(max_bytes, "max_layer_size", 1 << 20), max_entries)


# The user-mode network stack of each engine, and its Debian package.
NETWORK_HELPERS = {"ns": "slirp4netns", "vm": "passt"}


def check_network(network: bool, host_loopback: bool, engine: str = "ns") -> dict[str, Any]:
    if not isinstance(network, bool) or not isinstance(host_loopback, bool):
        raise InvalidArgumentError("network and host_loopback are True or False")
    if host_loopback and not network:
        raise InvalidArgumentError("host_loopback=True needs network=True")
    if not network:
        return {}
    name = NETWORK_HELPERS[engine]
    helper = shutil.which(name)
    if helper is None:
        raise EngineError(f"network=True needs {name} (apt-get install {name})")
    return {"network_helper": helper, "host_loopback": host_loopback}


def check_volumes(
    volumes: Iterable[str | tuple[str, str] | tuple[str, str, str]] | None,
) -> list[Mount]:
    """The volumes as mounts.  Targets on / or on or under /proc, /dev and
    /sys are refused by the native core's one check (shim_reserved_target),
    which create runs through box_check."""
    if volumes is None:
        return []
    if isinstance(volumes, str):
        raise InvalidArgumentError("volumes is a list of 'HOST:BOX[:ro|rw]'")
    mounts = []
    for volume in volumes:
        if isinstance(volume, str):
            parts = volume.split(":")
        elif isinstance(volume, tuple | list) and all(isinstance(p, str) for p in volume):
            parts = list(volume)
        else:
            raise InvalidArgumentError(f"volume {volume!r}: not HOST:BOX[:ro|rw]")
        if len(parts) == 2:
            parts.append("rw")
        if len(parts) != 3 or parts[2] not in ("ro", "rw"):
            raise InvalidArgumentError(f"volume {volume!r}: not HOST:BOX[:ro|rw]")
        source, target = Path(parts[0]).resolve(), parts[1]
        if not source.exists():
            raise NotFoundError(f"volume {volume!r}: {source} does not exist")
        if not target.startswith("/") or "\0" in target:
            raise InvalidArgumentError(f"volume {volume!r}: the box path must be absolute")
        mounts.append(Mount(str(source), target, readonly=parts[2] == "ro"))
    return mounts


def check_rootfs(rootfs: str | os.PathLike[str] | None) -> Path:
    path = Path(rootfs or "").resolve()
    if not path.is_dir():
        raise NotFoundError(f"rootfs {path} is not a directory")
    return path


def _image_env(pairs: Sequence[str]) -> dict[str, str]:
    """An image's Env ("KEY=value" each) as a mapping."""
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def box_identity(
    image: ImageConfig,
    ref: object,
    env: Mapping[str, str] | None,
    workdir: str | None,
    user: str | None,
) -> dict[str, Any]:
    """The box's environment, working directory and user: the image's,
    under what create was given.  Users other than root need the id range
    a root runtime gives its boxes."""
    if user is None and image.user not in ROOT_USERS and not runs_users():
        raise ImageError(f"image {ref} runs as user {image.user!r}, but {UNPRIVILEGED};"
                         " pass user='root' to run it so")  # fmt: skip
    return {
        "env": {**_image_env(image.env), **(env or {})},
        "workdir": workdir or image.workdir or None,
        "user": check_user(image.user if user is None else user),
    }


def main_command(
    image: ImageConfig,
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    use_image_cmd: bool,
) -> list[str]:
    """entrypoint + cmd, as docker makes it: an entrypoint given replaces
    the image's Cmd too; a cmd alone follows the image's Entrypoint."""
    if entrypoint:
        return [*check_argv(entrypoint), *(check_argv(cmd) if cmd else [])]
    if cmd:
        return [*image.entrypoint, *check_argv(cmd)]
    if use_image_cmd:
        command = [*image.entrypoint, *image.cmd]
        if not command:
            raise ImageError("the image has no Entrypoint or Cmd to run")
        return command
    return []


def millis(seconds: float, what: str) -> int:
    value = check_seconds(seconds, what)
    ms = 0 if value is None else round(value * 1000)
    if not 1 <= ms <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"{what} must be between 1 ms and 49 days")
    return ms


ENGINES = ("ns", "vm")
ACCELS = ("auto", "kvm", "tcg")
ENGINE_ENV = "BOXLITE_ENGINE"
DEFAULT_VM_READY_MS = lib.BOXLITE_DEFAULT_VM_READY_MS
DEFAULT_VM_DISK = 8 << 30  # sparse: a vm box's writable layer is a disk of its own


def check_engine(engine: object, what: str = "engine") -> str:
    """engine, else ``$BOXLITE_ENGINE``, else ns."""
    chosen = engine if engine is not None else os.environ.get(ENGINE_ENV) or "ns"
    if chosen not in ENGINES:
        raise InvalidArgumentError(f"{what} {chosen!r}: one of {', '.join(ENGINES)}")
    return str(chosen)


def check_accel(accel: object) -> str:
    if accel not in ACCELS:
        raise InvalidArgumentError(f"accel {accel!r}: one of {', '.join(ACCELS)}")
    return str(accel)


def check_kernel_args(args: object) -> str | None:
    """More of a vm guest kernel's command line: one string of printable
    ASCII, bounded (the native check's, here before anything is made)."""
    if args is None:
        return None
    limit = lib.BOXLITE_MAX_VM_KERNEL_ARGS
    if not isinstance(args, str) or not all(" " <= c <= "~" for c in args) or len(args) > limit:
        raise InvalidArgumentError(
            f"vm_kernel_args must be a string of printable ASCII, at most {limit} characters"
        )
    return args or None


@dataclass(frozen=True)
class BoxSpec:
    """What box to make (the keywords of ``Runtime.create``; see there)."""

    image: str | os.PathLike[str] | None = None
    _: KW_ONLY
    rootfs: str | os.PathLike[str] | None = None
    name: str | None = None
    env: Env | None = None
    workdir: str | None = None
    cmd: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    use_image_cmd: bool = False
    user: str | None = None
    volumes: Iterable[str | tuple[str, str] | tuple[str, str, str]] | None = ()
    memory: int | str | None = None
    cpus: float | None = None
    pids: int | None = None
    network: bool = False
    host_loopback: bool = False
    disk: int | str | None = None
    log_limit: int | str | None = None
    tmp_size: int | str | None = None
    detach: bool = False
    auto_remove: bool = False
    engine: str | None = None
    accel: str = "auto"
    ready_timeout: float = DEFAULT_VM_READY_MS / 1000


# A method taking one BoxSpec, called with the spec's own arguments.
with_box_spec = _taking(BoxSpec)

# What of a box's configuration its start fixes: a started box (a warm
# pool's) can serve a create only if these are what the create asks for.
# The rest is either read at each exec (env, workdir, user), a record field
# (name, image as named, auto_remove), or fixed at start but not asked for
# by a create (hostname: the box's id) or no longer of any use once it runs
# (ready_ms).
FIXED_AT_START = (
    "image_id",
    "lowers",
    "mounts",
    "main",
    "limits",
    "network",
    "disk",
    "engine",
    "stop_grace_ms",
    "drain_ms",
)
# What taking a started box for a create rewrites of its configuration.
TAKEN_FIELDS = ("image", "env", "workdir", "user", "auto_remove")


def start_signature(config: Mapping[str, Any], spec: BoxSpec) -> str:
    """The part of a box's configuration and create arguments its start
    fixes, canonically: two boxes with the same one are interchangeable
    once started (a vm box's accel "auto" matches only a box that asked
    for "auto")."""
    fixed = {key: config.get(key) for key in FIXED_AT_START}
    accel = spec.accel if config.get("engine") == "vm" else None
    fixed |= {"detach": spec.detach, "accel": accel}
    return json.dumps(fixed, sort_keys=True)


def native_config(directory: Path, config: dict[str, Any], detached: bool) -> BoxConfig:
    """What the native core needs, from a box's stored configuration."""
    main = config.get("main")
    vm = config.get("vm")
    return BoxConfig(
        directory,
        tuple(Path(p) for p in config["lowers"]),
        config["hostname"],
        config["stop_grace_ms"],
        config["drain_ms"],
        detached,
        tuple(main) if main else None,
        tuple(env_list(config["env"])),
        config["workdir"],
        tuple(Mount(*m) for m in config.get("mounts") or ()),
        **(config.get("limits") or {}),
        **(config.get("network") or {}),
        disk_image=str(directory / boxdir.DISK_IMAGE) if config.get("disk") or vm else None,
        vm=VmConfig(**{k: v for k, v in vm.items() if k in VM_FIELDS}) if vm else None,
    )


VM_FIELDS = frozenset(f.name for f in dataclasses.fields(VmConfig))
