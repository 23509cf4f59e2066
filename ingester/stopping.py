"""The one stop mechanism of `run` and the one-shot commands (rq's `request_stop`).

The first SIGINT/SIGTERM only records the request: the pass in hand finishes its page, commits
and ends `interrupted`, and every wait (Retry-After, the request budget, back-off, the interval
between passes) wakes at once by raising `Interrupted`. A second one exits the process at once
with `ABORT_EXIT_CODE`, committing nothing more.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import Interrupted

log = logging.getLogger(__name__)

ABORT_EXIT_CODE = 7
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopToken:
    """The stop request, and waits that wake on it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        """Ask every pass and every wait to stop."""
        self.event.set()

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds`; raise Interrupted if a stop is requested meanwhile."""
        if self.event.wait(max(0.0, seconds)):
            raise Interrupted("stop requested")


@contextmanager
def stop_on_signals(stop: StopToken | None = None) -> Iterator[StopToken]:
    """Turn SIGINT/SIGTERM into `stop.request()` while inside; a second one exits at once."""
    token = stop if stop is not None else StopToken()
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if seen:
            log.warning("second stop signal: exiting at once")
            os._exit(ABORT_EXIT_CODE)  # no cleanup: the database rolls back what is open
        seen.append(signum)
        name = signal.Signals(signum).name
        log.warning("%s: stopping after the page in hand (again to abort)", name)
        token.request()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield token
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
