"""Driving the agent's own helpers: every box's PID 1 is the agent, and its
binary holds helpers a box needs without anything from its image (running
a command as a user of the box: ``as_user``; copying files: ``files``).
Each is an ordinary execution of ``/proc/1/exe HELPER ...``, so this package
needs only something that runs executions, never ``Box`` itself."""

from __future__ import annotations

AGENT = "/proc/1/exe"  # PID 1 of every box is the agent, its helpers in the same binary


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """argv, run as user of the box (by the agent's as-user helper, which
    looks the user up in the box's own /etc/passwd and /etc/group); the
    agent's own helpers (file copies) run as the box's root."""
    if not user or argv[0] == AGENT:
        return argv
    return [AGENT, "as-user", user, "--", *argv]
