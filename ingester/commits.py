"""Committing groups of pages in a thread of their own, while the pass diffs the next pages.

A full scan stages pages and commits them in groups (`sync.GROUP_PAGES`). Committing a group
is mostly database work, during which the GIL is free; done in the pass's own thread it
stalls everything behind it. `Committer.submit` hands a group to a committing thread and
returns at once; it first waits for the group before, so one group at most is in flight,
groups commit in order, and what is committed is always a prefix of what was staged (the
cursor and checkpoints go with their pages, as when committing inline). A failure of a
group is raised by the next `submit` or `wait`, in the pass's thread; nothing staged after
it is committed.

While a group is in flight the database may or may not show it yet: `staged` holds what the
group makes of its jobs, which the pass lays over what it reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from .protocols import JobSnapshot, PageWrite, Store


class Committer:
    """Commits groups of `PageWrite`s of one pass, one group at a time, in a second thread."""

    def __init__(self, store: Store, lease_ttl_s: float) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        self.staged: dict[str, JobSnapshot] = {}  # what the group in flight makes of its jobs
        self._in_flight: Future[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, batches: Sequence[PageWrite], staged: dict[str, JobSnapshot]) -> None:
        """Start committing `batches` once the group before is committed (raising its error)."""
        self.wait()
        last = batches[-1]
        # the run's counts as of this group: the pass goes on counting later pages meanwhile
        frozen = [*batches[:-1], replace(last, counts=replace(last.counts))]
        if self._pool is None:  # one thread for the pass (a thread per group fragmented memory)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self.staged = staged
        self._in_flight = self._pool.submit(self.store.write_pages, frozen, self.lease_ttl_s)

    def wait(self) -> None:
        """Return once nothing is in flight; raise the error of the group in flight, if any."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        try:
            future.result()
        finally:
            self.staged = {}

    def abandon(self) -> None:
        """Wait for the group in flight, whatever its outcome (the pass is failing anyway)."""
        with contextlib.suppress(Exception):
            self.wait()

    def close(self) -> None:
        """Wait for the group in flight, whatever its outcome, and end the thread."""
        self.abandon()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
