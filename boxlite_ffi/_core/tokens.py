"""The token table: native ``user_data`` tokens -> Python sinks.

Native callbacks carry an integer token instead of a Python pointer, so a
late or duplicate callback can never touch a collected object: it finds the
token gone.  ``claim`` removes an entry and returns it to exactly one caller,
which is how a completion racing runtime close resolves once.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any


class Tokens:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[object, Any]] = {}
        self._next = itertools.count(1)

    def register(self, owner: object, sink: Any) -> int:
        with self._lock:
            token = next(self._next)
            self._entries[token] = (owner, sink)
        return token

    def get(self, token: int) -> Any | None:
        entry = self._entries.get(token)
        return entry[1] if entry else None

    def claim(self, token: int) -> Any | None:
        with self._lock:
            entry = self._entries.pop(token, None)
        return entry[1] if entry else None

    def claim_all(self, owner: object) -> list[Any]:
        """Claim every entry of one owner (a runtime being torn down)."""
        with self._lock:
            tokens = [t for t, (o, _) in self._entries.items() if o is owner]
            return [self._entries.pop(t)[1] for t in tokens]

    def count(self, owner: object) -> int:
        with self._lock:
            return sum(1 for o, _ in self._entries.values() if o is owner)


TOKENS = Tokens()
