"""The one composition root: how `ingester` builds a `Syncer` over HTTP for one source.

The CLI, the daemon, the benchmark and the reliability tests all build it here, so the tests
run what ships: two clients (the second walks the list from the head during a full scan and
the two chains meet in the middle), one request budget that both spend (`requests_per_minute`
and a 429's pause hold for the source as a whole), one error buffer, and every wait sleeping
through the stop token so that a stop request wakes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from .api import MAX_BODY_BYTES, VideosClient
from .budget import RequestBudget
from .config import SourceSettings
from .protocols import ErrorBuffer, RunCounts, Store
from .stopping import StopToken
from .sync import Syncer


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Wired:
    """A syncer and the two HTTP clients it was built with; `with` closes the clients."""

    def __init__(self, syncer: Syncer, clients: tuple[VideosClient, VideosClient]) -> None:
        self.syncer = syncer
        self.clients = clients

    def close(self) -> None:
        """Close both clients' HTTP sessions."""
        for client in self.clients:
            client.close()

    def __enter__(self) -> Syncer:
        return self.syncer

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def build_syncer(
    source: SourceSettings,
    store: Store,
    *,
    owner: str,
    stop: StopToken | None = None,
    lease_ttl_s: float = 120.0,
    on_page: Callable[[RunCounts], None] | None = None,
    on_response: Callable[[int | None, float], None] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Wired:
    """Wire the error buffer, the request budget and the two clients into a Syncer.

    `stop` defaults to a token nobody sets; `sleep` defaults to `stop.sleep` (tests of
    back-off pass a recorder, or a wrapper that notes the wait before sleeping through it);
    `clock` is the pass's wall clock (the clients measure waits on the monotonic clock).
    """
    stop = stop if stop is not None else StopToken()
    sleep = sleep if sleep is not None else stop.sleep
    errors = ErrorBuffer()
    budget = RequestBudget(source.requests_per_minute, sleep)

    def client() -> VideosClient:
        return VideosClient(
            source, on_error=errors, budget=budget, on_response=on_response,
            max_body_bytes=max_body_bytes,
        )  # fmt: skip

    main, head = client(), client()
    syncer = Syncer(
        source,
        main,
        store,
        owner=owner,
        errors=errors,
        lease_ttl_s=lease_ttl_s,
        clock=clock,
        should_stop=stop,
        on_page=on_page,
        head_source=head,
    )
    return Wired(syncer, (main, head))
