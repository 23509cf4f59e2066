"""The bookkeeping of every pass: the lease, the `sync_runs` row, the error drain, the summary.

`Recorder.run(kind, body)` takes the source's lease, opens the run row, calls `body(run)`,
and closes the row with its outcome, counts and the errors nobody stored yet — also when
the body fails, and when the database is the thing that failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .errors import ApiError, IngesterError, Interrupted, StoreError
from .protocols import ErrorBuffer, ErrorEvent, PageSource, RunCounts, Store

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What one pass did, for the caller's summary line and scheduling."""

    run_id: int
    kind: str
    outcome: str
    counts: RunCounts
    open_jobs: bool = False
    marked_missing: int = 0
    elapsed_s: float = 0.0
    head_only: str | None = None  # why the source is read in head-only mode, if it is


@dataclass
class Run:
    """One pass in progress."""

    kind: str
    run_id: int
    req0: int = 0
    retry0: int = 0
    counts: RunCounts = field(default_factory=RunCounts)
    open_jobs: bool = False
    stopped: bool = False
    marked_missing: int = 0
    head_only: str | None = None
    reported: set[str] = field(default_factory=set)  # request ids already in sync_errors


class Recorder:
    """Runs the passes of one source under its lease and keeps their `sync_runs` rows."""

    def __init__(
        self,
        name: str,
        store: Store,
        sources: Sequence[PageSource],
        *,
        owner: str,
        errors: ErrorBuffer,
        lease_ttl_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.name = name
        self.store = store
        self.sources = sources
        self.owner = owner
        self.errors = errors
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock

    def run(self, kind: str, body: Callable[[Run], None]) -> PassResult:
        """Run `body` as one pass of kind `kind`; raise what it raised, once recorded."""
        started = time.monotonic()
        name = self.name
        self.store.acquire_lease(name, self.owner, self.lease_ttl_s, self.clock())
        try:
            run = Run(
                kind, self.store.start_run(name, kind, self.owner, self.clock()), *self.sent()
            )
            self.errors.drain()  # events from before this run belong to no run
            try:
                body(run)
            except Interrupted:
                run.stopped = True
            except (IngesterError, KeyboardInterrupt) as exc:
                outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                self.count_requests(run)
                self._close_failed(run, outcome, str(exc) or type(exc).__name__, exc)
                raise
            outcome = "interrupted" if run.stopped else "succeeded"
            self.count_requests(run)
            leftovers = self.errors.drain()
            if leftovers:
                run.counts.errors += len(leftovers)
                self.store.record_errors(name, run.run_id, leftovers)
            self.store.finish_run(run.run_id, outcome, run.counts, None, self.clock())
        finally:
            self._release()
        elapsed = time.monotonic() - started
        c = run.counts
        log.info(
            "%s %s run=%d outcome=%s pages=%d items=%d inserted=%d updated=%d "
            "transitions=%d requests=%d retries=%d errors=%d missing=%d elapsed=%.3fs%s",
            kind, name, run.run_id, outcome, c.pages, c.items, c.inserted, c.updated,
            c.transitions, c.requests, c.retries, c.errors, run.marked_missing, elapsed,
            " head-only" if run.head_only else "",
            extra={"fields": {
                "event": "pass", "kind": kind, "source": name, "run_id": run.run_id,
                "outcome": outcome, **vars(c), "missing": run.marked_missing,
                "elapsed_s": round(elapsed, 3), "head_only": run.head_only,
            }},
        )  # fmt: skip
        return PassResult(
            run.run_id, kind, outcome, c, run.open_jobs, run.marked_missing, elapsed, run.head_only
        )

    def sent(self) -> tuple[int, int]:
        """Requests and retries of all the pass's sources together."""
        return sum(s.requests for s in self.sources), sum(s.retries for s in self.sources)

    def count_requests(self, run: Run) -> None:
        """Bring the run's request and retry counts up to date."""
        requests, retries = self.sent()
        run.counts.requests = requests - run.req0
        run.counts.retries = retries - run.retry0

    def _close_failed(self, run: Run, outcome: str, error: str, exc: BaseException) -> None:
        """Record why the run ended; the database may be the thing that failed."""
        events = self.errors.drain()
        known: set[str | None] = {*run.reported, *(e.request_id for e in events)}
        if isinstance(exc, ApiError) and exc.request_id not in known:
            events.append(ErrorEvent("http", str(exc), exc.status, exc.request_id, exc.payload))
        elif not isinstance(exc, ApiError | StoreError | KeyboardInterrupt):
            events.append(ErrorEvent("http", str(exc)))
        try:
            run.counts.errors += len(events)
            if events:
                self.store.record_errors(self.name, run.run_id, events)
            self.store.finish_run(run.run_id, outcome, run.counts, error, self.clock())
        except StoreError as store_exc:
            log.error("cannot record the end of run %d: %s", run.run_id, store_exc)

    def _release(self) -> None:
        try:
            self.store.release_lease(self.name, self.owner)
        except StoreError as exc:
            log.warning("cannot release the lease of %s: %s", self.name, exc)
