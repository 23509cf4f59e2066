"""Writing pages: diff them against the mirror and commit them, with the cursor, in one go.

`PageWriter.page` stages one page's records; a group of staged pages is diffed against one
read of the mirror (their jobs' snapshots) and committed in one transaction (`flush`), with
the cursor or scan checkpoint they carry, the run's counts and the lease renewed. An
incremental pass commits every page at once (`group=1`); a full scan groups 16 pages. Pages
of a group are diffed in order, each against what the ones before made of their jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .diff import Statuses, Watermark, diff, merged
from .errors import LeaseBusyError, StoreError
from .protocols import ErrorBuffer, ErrorEvent, JobSnapshot, Page, PageWrite, Store
from .records import DOCUMENTED, InvalidItem, ParsedPage, VideoRecord, clean, parse_video
from .runs import Recorder, Run

log = logging.getLogger(__name__)

GROUP_S = 1.0  # a staged page waits at most this long for its commit


@dataclass
class _Staged:
    """A page waiting for its group's commit, with what is needed to diff it then."""

    run: Run
    records: Sequence[VideoRecord]
    write: PageWrite
    watermark: Watermark | None
    touch: bool
    skipped: list[bool] | None
    end: str | None  # the page's own cursor, when the watermark may pass the whole page
    by_value: bool = False  # answers by id: compared with the mirror value by value
    holds: list[bool] = field(default_factory=list)


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
        self._pending: list[_Staged] = []
        self._since = 0.0

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
        end: str | None = None,
        by_value: bool = False,
    ) -> list[bool]:
        """Stage a page of `records`, to be diffed into `write` when its group commits.

        Returns whether each job holds the cursor once the page is diffed: at once with
        `group=1`, else an empty list. `skip`: jobs already written by this pass (the other
        chain of a scan), decided now. `end`: the page's `last_id`; when the watermark passes
        every job of the page, the next pass asks from there (so pages that held no job of
        this key, on a filtering gateway, are not walked again). `by_value`: answers of
        `GET /videos/{id}`, which a gateway words differently from its list (another id form,
        keys left out or added as null): a row changes only when one of their values does.
        """
        skipped = [skip(r) for r in records] if skip is not None else None
        staged = _Staged(run, records, write, watermark, touch, skipped, end, by_value)
        run.counts.items += items
        self._stage(staged)
        return staged.holds

    def stage(self, run: Run, write: PageWrite) -> None:
        """Stage a write without jobs (a cursor, checked or gone ids)."""
        self._stage(_Staged(run, (), write, None, False, None, None))

    def _stage(self, staged: _Staged) -> None:
        staged.write.errors = self.errors.drain()
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(staged)
        if len(self._pending) >= self.group or time.monotonic() - self._since >= GROUP_S:
            self.flush()
        elif self.on_page is not None:
            self.on_page(staged.run.counts)

    def flush(self) -> None:
        """Diff the staged pages against one read of the mirror and commit them at once."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        ids = list(dict.fromkeys(r.id for s in pending for r in s.records))
        snaps = self.store.snapshots(ids) if ids else {}
        partial = [r.id for s in pending for r in s.records
                   if r.id in snaps and (s.by_value or not r.raw.keys() >= DOCUMENTED)]  # fmt: skip
        mirrored = self.store.raw_objects(partial) if partial else {}
        for staged in pending:
            self._diff(staged, snaps, mirrored)
        pending[-1].write.errors.extend(self.errors.drain())  # unknown statuses, just reported
        run = pending[-1].run
        for staged in pending:
            w = staged.write
            run.reported.update(e.request_id for e in w.errors if e.request_id)
            run.counts.errors += len(w.errors)
        self.recorder.count_requests(run)
        self.store.write_pages([s.write for s in pending], self.recorder.lease_ttl_s)
        if self.on_page is not None:
            self.on_page(run.counts)

    def _diff(
        self, staged: _Staged, snaps: dict[str, JobSnapshot], mirrored: dict[str, dict[str, Any]]
    ) -> None:
        """Diff one staged page; `snaps` then holds what it makes of its jobs.

        A partial answer (`mirrored` holds the job's stored object) is laid over what the
        mirror holds: absent keys keep their values, and if no value changed nothing does.
        """
        write, watermark = staged.write, staged.watermark
        stale_before = write.now - timedelta(seconds=self.stale_after_s)
        for i, rec in enumerate(staged.records):
            snap = snaps.get(rec.id)
            base = mirrored.get(rec.id)
            if base is not None and snap is not None:
                full = merged(base, rec.raw)
                if full is None:  # no value changed: the row as it is
                    rec = replace(rec, content_hash=snap.content_hash)
                else:
                    with contextlib.suppress(InvalidItem):  # (valid alone, it stays valid)
                        rec = parse_video(full)
            if staged.skipped is None or not staged.skipped[i]:
                after = diff(rec, snap, write, staged.touch)
                if after is not None:
                    snaps[rec.id] = after
            self._check_status(rec, write)
            held = self.statuses.holds(rec, snap, stale_before)
            staged.holds.append(held)
            if watermark is not None:
                watermark.see(rec.id, rec.created_at, held)
        if watermark is not None:
            past = staged.end if watermark.advancing else None
            if watermark.moved or past is not None:
                write.cursor = (watermark.cursor_id, watermark.cursor_created_at)
                write.cursor_after = past
                watermark.moved = False
        c = staged.run.counts
        c.inserted += len(write.inserts)
        c.updated += len(write.updates)
        c.transitions += len(write.transitions)

    def flush_before_failing(self, exc: BaseException) -> None:
        """Commit what was staged before `exc`, unless the store is what failed."""
        if isinstance(exc, StoreError | LeaseBusyError):
            self._pending = []
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
