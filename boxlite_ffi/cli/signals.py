"""What SIGINT, SIGTERM and SIGHUP do to the ``boxlite`` command: end it
the way an error would (so every ``with`` and ``finally`` cleans up), or,
once cleaning up has begun, nothing but being remembered: a signal must
never cut a clean-up short and leave a box behind."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """The command was asked to stop by signal ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    def __init__(self) -> None:
        self.received: int | None = None
        for sig in TERMINATING:
            signal.signal(sig, self._terminate)

    def _terminate(self, signum: int, _frame: Any) -> None:
        self.received = signum
        raise Terminated(signum)

    def _remember(self, signum: int, _frame: Any) -> None:
        self.received = self.received or signum

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A step a signal must not cut in two (making a box and holding
        on to it): a signal during it takes effect once it is done."""
        for sig in TERMINATING:
            signal.signal(sig, self._remember)
        try:
            yield
        finally:
            for sig in TERMINATING:
                signal.signal(sig, self._terminate)
        if self.received is not None:
            raise Terminated(self.received)

    def shield(self) -> None:
        """From now on (the clean-up), signals are only remembered."""
        for sig in TERMINATING:
            signal.signal(sig, self._remember)
