"""Who a box's processes run as: a user of the box (a name or id, with a
group), looked up in the box's own /etc/passwd and /etc/group by the
agent's as-user helper.  Root is the box's own; any other user needs the
range of ids a root runtime gives its boxes."""

from __future__ import annotations

import os
import re

from . import file_copy
from .errors import InvalidArgumentError

ROOT_USERS = ("", "root", "0", "root:root", "0:0")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
UNPRIVILEGED = "processes in a box of an unprivileged runtime run as its root"


def check_user(user: object) -> str | None:
    """A valid user, None for root; InvalidArgumentError for a malformed
    one, and for a user other than root in a box of an unprivileged
    runtime (which has one id)."""
    if not isinstance(user, str) or not USER_RE.fullmatch(user or "root"):
        raise InvalidArgumentError(f"user {user!r}: a name or id, with :group or :gid")
    if user in ROOT_USERS:
        return None
    if not runs_users():
        raise InvalidArgumentError(f"user {user!r}: {UNPRIVILEGED}")
    return user


def runs_users() -> bool:
    """Whether this runtime's boxes have users other than root."""
    return os.geteuid() == 0


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """argv, run as user of the box (by the agent's as-user helper); the
    agent's own helpers (file copies) run as the box's root."""
    if not user or argv[0] == file_copy.AGENT:
        return argv
    return [file_copy.AGENT, "as-user", user, "--", *argv]
