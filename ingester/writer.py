"""Writing pages: diff them against the mirror and commit them, with the cursor, in one go.

`PageWriter.page` diffs one page's records against the mirror (one read of their snapshots)
and stages the write; a group of staged pages commits in one transaction (`flush`), with the
cursor or scan checkpoint they carry, the run's counts and the lease renewed. An incremental
pass commits every page at once (`group=1`); a full scan groups pages, and keeps what the
staged pages make of their jobs so a later page of the same group diffs against that.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from .diff import Statuses, Watermark, diff
from .errors import LeaseBusyError, StoreError
from .protocols import ErrorBuffer, ErrorEvent, JobSnapshot, Page, PageWrite, Store
from .records import ParsedPage, VideoRecord, clean
from .runs import Recorder, Run

log = logging.getLogger(__name__)

GROUP_S = 1.0  # a staged page waits at most this long for its commit


class PageWriter:
    """Diffs and commits the pages of one source's passes."""

    def __init__(
        self,
        name: str,
        store: Store,
        recorder: Recorder,
        *,
        statuses: Statuses,
        stale_after_s: float,
        errors: ErrorBuffer,
        clock: Callable[[], datetime],
        on_page: Callable[[Any], None] | None,
    ) -> None:
        self.name = name
        self.store = store
        self.recorder = recorder
        self.statuses = statuses
        self.stale_after_s = stale_after_s
        self.errors = errors
        self.clock = clock
        self.on_page = on_page
        self.reported: frozenset[str] = frozenset()  # unknown statuses already reported
        self.group = 1
        self._pending: list[PageWrite] = []
        self._since = 0.0
        self._staged: dict[str, JobSnapshot] = {}

    def new_write(self, run: Run, **fields: Any) -> PageWrite:
        """An empty write of this run, stamped now."""
        return PageWrite(self.name, run.run_id, self.recorder.owner, self.clock(), run.counts,
                         **fields)  # fmt: skip

    def report(self, page: Page, parsed: ParsedPage) -> list[VideoRecord]:
        """The page's valid records; each rejected item becomes an error event."""
        if page.has_more and page.last_id is None:
            self.errors(ErrorEvent("decode", "has_more is true but last_id is null; the list "
                                   "ends here", request_id=page.request_id))  # fmt: skip
        for bad in parsed.rejected:
            self.errors(
                ErrorEvent("validate", bad.message, None, page.request_id, payload(bad.item),
                           bad.video_id)
            )  # fmt: skip
        return list(parsed.records)

    def page(
        self,
        run: Run,
        records: Sequence[VideoRecord],
        write: PageWrite,
        *,
        items: int,
        watermark: Watermark | None = None,
        touch: bool = False,
        skip: Callable[[VideoRecord], bool] | None = None,
    ) -> list[bool]:
        """Diff `records` into `write` and stage it; return whether each job holds the cursor.

        `skip`: jobs already written by this pass (the other chain of a scan).
        """
        snaps = self.store.snapshots([r.id for r in records]) if records else {}
        if self._staged:
            snaps.update((r.id, self._staged[r.id]) for r in records if r.id in self._staged)
        stale_before = write.now - timedelta(seconds=self.stale_after_s)
        holds: list[bool] = []
        for rec in records:
            snap = snaps.get(rec.id)
            if skip is None or not skip(rec):
                after = diff(rec, snap, write, touch)
                if after is not None and self.group > 1:
                    self._staged[rec.id] = after
            self._check_status(rec, write)
            held = self.statuses.holds(rec, snap, stale_before)
            holds.append(held)
            if watermark is not None:
                watermark.see(rec.id, rec.created_at, held)
        if watermark is not None and watermark.moved:
            write.cursor = (watermark.cursor_id, watermark.cursor_created_at)
            watermark.moved = False
        run.counts.items += items
        self.stage(run, write)
        return holds

    def stage(self, run: Run, write: PageWrite) -> None:
        """Stage `write`; commit the group once it is full or old enough."""
        write.errors = self.errors.drain()
        run.reported.update(e.request_id for e in write.errors if e.request_id)
        c = run.counts
        c.inserted += len(write.inserts)
        c.updated += len(write.updates)
        c.transitions += len(write.transitions)
        c.errors += len(write.errors)
        self.recorder.count_requests(run)
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(write)
        if len(self._pending) >= self.group or time.monotonic() - self._since >= GROUP_S:
            self.flush()
        if self.on_page is not None:
            self.on_page(run.counts)

    def flush(self) -> None:
        """Commit the staged pages in one transaction."""
        batches, self._pending, self._staged = self._pending, [], {}
        if batches:
            self.store.write_pages(batches, self.recorder.lease_ttl_s)

    def flush_before_failing(self, exc: BaseException) -> None:
        """Commit what was staged before `exc`, unless the store is what failed."""
        if isinstance(exc, StoreError | LeaseBusyError):
            self._pending, self._staged = [], {}
            return
        try:
            self.flush()
        except (StoreError, LeaseBusyError) as store_exc:
            log.error("cannot commit the pages read before the pass failed: %s", store_exc)

    def _check_status(self, rec: VideoRecord, write: PageWrite) -> None:
        status = rec.status
        if self.statuses.known(status) or status in self.reported:
            return
        self.reported = self.reported | {status}
        write.reported_statuses = self.reported
        self.errors(
            ErrorEvent("validate", f"unknown status {status!r}: stored as received, "
                       "treated as open until stale", video_id=rec.id)
        )  # fmt: skip


def payload(item: Any) -> str:
    """A JSON rendering of a bad item, for `sync_errors.payload` (the store caps it)."""
    try:
        return json.dumps(clean(item), ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return repr(item)
