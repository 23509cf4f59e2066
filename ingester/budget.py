"""A client-side request budget per source: a token bucket plus a source-wide pause.

The mirror shares its provider's rate limit with the application that creates the videos,
so it spends at most `requests_per_minute`, and when the provider answers 429 every request
of the source waits (not only the one that was refused).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RequestBudget:
    """Call `acquire()` before each request; `pause(s)` when the provider asks for a wait."""

    def __init__(
        self,
        per_minute: float | None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_s = per_minute / 60.0 if per_minute else None
        self.capacity = max(1.0, min(per_minute or 1.0, 10.0))  # a small burst at most
        self.sleep = sleep
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()
        self._not_before = 0.0

    def acquire(self) -> None:
        """Block (through the injected sleep) until a request may be sent."""
        while True:
            with self._lock:
                now = self.clock()
                delay = self._not_before - now
                if delay <= 0 and self.rate_s is not None:
                    self._tokens = min(
                        self.capacity, self._tokens + (now - self._stamp) * self.rate_s
                    )
                    self._stamp = now
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return
                    delay = (1.0 - self._tokens) / self.rate_s
                elif delay <= 0:
                    return
            self.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every request of the source for `seconds` from now."""
        with self._lock:
            self._not_before = max(self._not_before, self.clock() + seconds)
