"""The token table: native ``user_data`` tokens -> Python sinks.

Native callbacks carry an integer token instead of a Python pointer, so a
late or duplicate callback can never touch a collected object: it finds the
token gone.  ``claim`` removes an entry and returns it to exactly one caller,
which is how a completion racing runtime close resolves once.

No lock: each method is one operation of the dict (or of the counter) that
is atomic on its own - under the GIL, and by the dict's own lock in a
free-threaded build - so two claims of one token cannot both find it.  The
drain thread claims once per event, where a lock cost as much as the rest of
the dispatch.
"""

from __future__ import annotations

import itertools
from typing import Any


class Tokens:
    def __init__(self) -> None:
        self._entries: dict[int, tuple[object, Any]] = {}
        self._next = itertools.count(1)

    def register(self, owner: object, sink: Any) -> int:
        token = next(self._next)
        self._entries[token] = (owner, sink)
        return token

    def get(self, token: int) -> Any | None:
        entry = self._entries.get(token)
        return entry[1] if entry else None

    def claim(self, token: int) -> Any | None:
        entry = self._entries.pop(token, None)
        return entry[1] if entry else None

    def claim_all(self, owner: object) -> list[Any]:
        """Claim every entry of one owner (a runtime being torn down)."""
        snapshot = list(self._entries.items())  # one call: no concurrent resize
        claimed = (self._entries.pop(t, None) for t, (o, _) in snapshot if o is owner)
        return [entry[1] for entry in claimed if entry is not None]

    def count(self, owner: object) -> int:
        return sum(1 for o, _ in list(self._entries.values()) if o is owner)


TOKENS = Tokens()
