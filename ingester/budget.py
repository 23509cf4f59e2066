"""A client-side request budget per source: the one gate every request of the source passes.

The mirror shares its provider's rate limit with the application that creates the videos,
so it spends at most `requests_per_minute`; and every wait the provider asks for (a 429's
`Retry-After`, an exhausted `x-ratelimit` window) holds every request of the source, not
only the one that was refused, and outlives a call that gave up.
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

    def acquire(self, delay_s: float = 0.0) -> None:
        """Wait (through the injected sleep) until a request may be sent: at least `delay_s`
        from now (a retry's back-off), after any pause, and within the rate."""
        with self._lock:
            now = self.clock()
            wait = max(delay_s, self._not_before - now)
            if self.rate_s is not None:
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate_s)
                self._stamp = now
                self._tokens -= 1.0  # taken now; a deficit is paid for by waiting
                wait = max(wait, -self._tokens / self.rate_s)
        until = now + wait
        while wait > 0:
            self.sleep(wait)
            with self._lock:  # a pause that came meanwhile (another request's 429) holds us too
                wait, until = self._not_before - until, max(until, self._not_before)

    def pause(self, seconds: float) -> None:
        """Hold every request of the source for `seconds` from now."""
        with self._lock:
            self._not_before = max(self._not_before, self.clock() + seconds)
