"""One pass of the mirror: incremental sync, full scan (backfill/reconcile), cursor recovery.

The algorithm of DESIGN.md §3. It talks to a `PageSource` and a `Store` (see `protocols`)
and imports neither `requests` nor `sqlalchemy`.

Incremental pass: page `order=asc` from the low watermark `cursor_id` to the end; each page
is committed with its transitions and the advanced cursor in one transaction. The cursor
moves over the run of jobs at its front that do not hold it: terminal jobs and jobs open
longer than `stale_after_s` (measured from our own `first_seen_at`). Stale open jobs are
then re-read one by one with `GET /videos/{id}` every `stale_refresh_s`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .commits import Committer
from .config import SourceSettings
from .errors import (
    ApiError,
    CursorRejectedError,
    IngesterError,
    Interrupted,
    LeaseBusyError,
    PaginationLoopError,
    StoreError,
)
from .meeting import Edge, met
from .prefetch import Prefetching, quick_switches
from .protocols import (
    ErrorBuffer,
    ErrorEvent,
    JobSnapshot,
    Order,
    Page,
    PageSource,
    PageWrite,
    RunCounts,
    ScanStart,
    SourceState,
    Store,
    Transition,
)
from .records import VideoRecord, clean, parse_items

log = logging.getLogger(__name__)

STALE_BATCH = 100
# A full scan commits its pages in groups (one transaction, the checkpoint in it): on SQLite
# a commit costs about as much as writing a page. A page waits at most GROUP_S for its
# commit. Incremental passes, a few pages at most, commit page by page.
GROUP_PAGES = 16
GROUP_S = 1.0
READ_AHEAD = 8  # pages a full scan keeps fetched ahead, so a group's commit stalls no request


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


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


@dataclass
class Watermark:
    """The low watermark: moves over jobs that do not hold it, stops at the first that does.

    `resume_at`: when not advancing yet, start advancing once this id (the current cursor)
    is passed, so a full scan can carry the cursor forward but never backwards.
    """

    cursor_id: str | None
    cursor_created_at: datetime | None
    advancing: bool = True
    resume_at: str | None = None
    moved: bool = False
    held: bool = False

    def see(self, video_id: str, created_at: datetime, holds: bool) -> None:
        """Account for the next job in `asc` order."""
        if not self.advancing:
            if video_id == self.resume_at and not self.held:
                self.advancing = True
            return
        if holds:
            self.advancing = False
            self.held = True
        else:
            self.cursor_id, self.cursor_created_at = video_id, created_at
            self.moved = True


@dataclass
class _Run:
    kind: str
    run_id: int
    req0: int = 0
    retry0: int = 0
    counts: RunCounts = field(default_factory=RunCounts)
    open_jobs: bool = False
    stopped: bool = False
    marked_missing: int = 0
    reported: set[str] = field(default_factory=set)  # request ids already in sync_errors
    group_pages: int = 1  # pages per transaction


class Syncer:
    """Runs passes of one source against one store; one instance per source and process."""

    def __init__(
        self,
        settings: SourceSettings,
        source: PageSource,
        store: Store,
        *,
        owner: str,
        errors: ErrorBuffer | None = None,
        lease_ttl_s: float = 120.0,
        clock: Callable[[], datetime] = utcnow,
        should_stop: Callable[[], bool] = lambda: False,
        on_page: Callable[[RunCounts], None] | None = None,
        prefetch: bool = True,
        head_source: PageSource | None = None,
    ) -> None:
        self.settings = settings
        self._prefetch = Prefetching(source, _parsed) if prefetch else None
        self.source: PageSource = self._prefetch or source
        # A second client of the same provider: with it, a full scan also walks `desc` from
        # the head in a second thread, and the two chains meet in the middle (see `_scan_both`).
        self.head_source = head_source
        self._head: Prefetching | None = None
        self._writing = threading.Lock()  # one page diffed and committed at a time
        self._pending: list[PageWrite] = []  # staged pages, committed together by `_flush`
        self._pending_since = 0.0
        self._staged: dict[str, JobSnapshot] = {}  # what the staged pages make of their jobs
        self._committer = Committer(store, lease_ttl_s)  # commits full groups meanwhile
        self.store = store
        self.owner = owner
        self.errors = errors or ErrorBuffer()
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self.should_stop = should_stop
        self.on_page = on_page
        self._open = frozenset(settings.open_statuses)
        self._terminal = frozenset(settings.terminal_statuses)
        self._reported: frozenset[str] = frozenset()

    # --- the three kinds of pass -------------------------------------------------------------

    def sync(self) -> PassResult:
        """One incremental pass: new jobs and open jobs, then due stale jobs by id."""
        return self._run("sync", self._incremental)

    def backfill(self, since: datetime | None = None, until: datetime | None = None) -> PassResult:
        """A full scan from the beginning (or within [since, until)); resumes a pending one."""
        return self._run("backfill", lambda run: self._scan(run, since, until))

    def reconcile(self) -> PassResult:
        """A full scan that maintains `missing_since`; resumes a pending one."""
        return self._run("reconcile", lambda run: self._scan(run, None, None))

    # --- run bookkeeping ---------------------------------------------------------------------

    def _run(self, kind: str, body: Callable[[_Run], None]) -> PassResult:
        started = time.monotonic()
        name = self.settings.name
        if not self.store.acquire_lease(name, self.owner, self.lease_ttl_s, self.clock()):
            raise LeaseBusyError(f"source {name} is being synced by another process")
        try:
            run = _Run(
                kind,
                self.store.start_run(name, kind, self.owner, self.clock()),
                *self._sent(),
            )
            self.errors.drain()  # events from before this run belong to no run
            outcome, error = "succeeded", None
            try:
                try:
                    body(run)
                except BaseException as exc:
                    self._flush_before_failing(exc)
                    raise
                else:
                    self._flush()
                finally:
                    for prefetching in (self._prefetch, self._head):
                        if prefetching is not None:
                            prefetching.drain()
                    self._committer.close()
            except Interrupted:
                run.stopped = True
            except (IngesterError, KeyboardInterrupt) as exc:
                outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                error = str(exc) or type(exc).__name__
                self._count_requests(run)
                self._close_failed(run, outcome, error, exc)
                raise
            if run.stopped:
                outcome = "interrupted"
            self._count_requests(run)
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
            "transitions=%d requests=%d retries=%d errors=%d missing=%d elapsed=%.3fs",
            kind, name, run.run_id, outcome, c.pages, c.items, c.inserted, c.updated,
            c.transitions, c.requests, c.retries, c.errors, run.marked_missing, elapsed,
            extra={"fields": {
                "event": "pass", "kind": kind, "source": name, "run_id": run.run_id,
                "outcome": outcome, **vars(c), "missing": run.marked_missing,
                "elapsed_s": round(elapsed, 3), "last_request_id": self._last_request_id(),
            }},
        )  # fmt: skip
        return PassResult(run.run_id, kind, outcome, c, run.open_jobs, run.marked_missing, elapsed)

    def _last_request_id(self) -> str | None:
        inner = self._prefetch.inner if self._prefetch is not None else self.source
        return getattr(inner, "last_request_id", None)

    def _flush_before_failing(self, exc: BaseException) -> None:
        """Commit the pages staged before `exc`, unless the store is what failed."""
        if isinstance(exc, StoreError | LeaseBusyError):
            self._pending, self._staged = [], {}
            self._committer.abandon()
            return
        try:
            self._flush()
        except (StoreError, LeaseBusyError) as store_exc:
            log.error("cannot commit the pages read before the pass failed: %s", store_exc)

    def _sent(self) -> tuple[int, int]:
        """Requests and retries of the source and the head source together."""
        sources = [self.source] if self.head_source is None else [self.source, self.head_source]
        return sum(s.requests for s in sources), sum(s.retries for s in sources)

    def _count_requests(self, run: _Run) -> None:
        requests, retries = self._sent()
        run.counts.requests = requests - run.req0
        run.counts.retries = retries - run.retry0

    def _close_failed(self, run: _Run, outcome: str, error: str, exc: BaseException) -> None:
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
                self.store.record_errors(self.settings.name, run.run_id, events)
            self.store.finish_run(run.run_id, outcome, run.counts, error, self.clock())
        except StoreError as store_exc:
            log.error("cannot record the end of run %d: %s", run.run_id, store_exc)

    def _release(self) -> None:
        try:
            self.store.release_lease(self.settings.name, self.owner)
        except StoreError as exc:
            log.warning("cannot release the lease of %s: %s", self.settings.name, exc)

    # --- incremental pass --------------------------------------------------------------------

    def _incremental(self, run: _Run) -> None:
        state = self.store.load_state(self.settings.name)
        self._reported = state.reported_statuses
        if state.cursor_id is not None and state.cursor_missing:
            self._recover(run, state, reason="the cursor job is marked missing")
        else:
            self._forward(run, state)
        if not run.stopped:
            self._refresh_stale(run)

    def _forward(self, run: _Run, state: SourceState) -> None:
        wm = Watermark(state.cursor_id, state.cursor_created_at)
        after, seen_last_ids = state.cursor_id, set[str]()
        while not self._stop(run):
            try:
                page = self._list(after, "asc")
            except CursorRejectedError as exc:
                self._recover(run, state, reason=f"the provider rejected it ({exc})")
                return
            records = self._parse(page)
            if (
                after is not None
                and state.cursor_created_at is not None
                and any(r.created_at < _floor_second(state.cursor_created_at) for r in records)
            ):
                self._recover(run, state, reason="the provider ignored it")
                return
            self._apply(run, page, records, watermark=wm)
            if wm.held:
                run.open_jobs = True
            if self._last_page(run, page, seen_last_ids):
                return
            after = page.last_id

    def _recover(self, run: _Run, state: SourceState, *, reason: str) -> None:
        """The cursor job is gone: scan `desc` from the head back past the cursor's second.

        The first request carries no `after`, so a provider that is gone raises
        NotServedError here instead of being mistaken for a vanished cursor.
        """
        assert state.cursor_created_at is not None
        floor = _floor_second(state.cursor_created_at)
        newer: list[tuple[str, datetime, bool]] = []
        boundary: tuple[str, datetime] | None = None
        after, seen_last_ids = None, set[str]()
        self.errors(ErrorEvent("http", f"cursor {state.cursor_id} lost: {reason}; recovering"))
        while not self._stop(run):
            page = self._list(after, "desc", ahead=0)
            records = self._parse(page)
            holds = self._apply(run, page, records, watermark=None)
            for rec, held in zip(records, holds, strict=True):
                if rec.created_at >= floor:
                    newer.append((rec.id, rec.created_at, held))
                elif boundary is None:
                    boundary = (rec.id, rec.created_at)
            if boundary is not None or self._last_page(run, page, seen_last_ids):
                break
            after = page.last_id
        if run.stopped:
            return
        wm = Watermark(*(boundary or (None, None)))
        for vid, created, held in reversed(newer):
            wm.see(vid, created, held)
        run.open_jobs = run.open_jobs or wm.held
        self._commit(run, PageWrite(**self._base(run), cursor=(wm.cursor_id, wm.cursor_created_at)))

    # --- full scan ---------------------------------------------------------------------------

    def _scan(self, run: _Run, since: datetime | None, until: datetime | None) -> None:
        name = self.settings.name
        run.group_pages = GROUP_PAGES
        start = ScanStart(run.kind, run.run_id, self.clock(), since, until)
        state = self.store.begin_scan(name, start)
        self._reported = state.reported_statuses
        if self.head_source is not None and since is None and until is None:
            self._scan_both(run, state)
            return
        order: Order = "desc" if since is not None and until is None else "asc"
        wm: Watermark | None = None
        if order == "asc" and since is None:
            wm = Watermark(
                state.cursor_id,
                state.cursor_created_at,
                advancing=state.cursor_id == state.scan_after_id,
                resume_at=state.cursor_id,
            )
        after, seen_last_ids = state.scan_after_id, set[str]()
        while not self._stop(run):
            ahead = READ_AHEAD if since is None and until is None else 0
            page = self._list(after, order, ahead=ahead)
            records = self._parse(page)
            done = False
            if since is not None or until is not None:
                past = [r for r in records if _beyond(r, order, since, until)]
                done = bool(past)
                records = [r for r in records if _within(r, since, until)]
            self._apply(run, page, records, watermark=wm, touch_all=True, scan_after=True)
            if done or self._last_page(run, page, seen_last_ids):
                self._flush()
                run.marked_missing = self.store.finish_scan(
                    name, self.clock(), self.settings.list_window_s is not None
                )
                return
            after = page.last_id

    def _scan_both(self, run: _Run, state: SourceState) -> None:
        """A full scan walking `asc` from the start and `desc` from the head at once.

        Latency bound, a scan costs pages x latency; two chains in flight halve that. The
        `desc` chain runs in a second thread on `head_source`; pages are diffed and committed
        one at a time under one lock (one writer, as SQLite needs), each with its chain's
        checkpoint, so invariants 3-5 hold as for one chain and an interrupted scan resumes
        both chains. They stop where they meet (`meeting`); the `asc` chain moves the cursor
        as a one-chain scan does, and once complete the cursor settles over the whole list.
        """
        assert self.head_source is not None
        head: PageSource = self.head_source
        if self._prefetch is not None:
            if self._head is None or self._head.inner is not self.head_source:
                self._head = Prefetching(self.head_source)
            head = self._head
        asc = Edge("asc", state.scan_asc_created_at)
        desc = Edge("desc", state.scan_desc_created_at)
        wm = Watermark(
            state.cursor_id,
            state.cursor_created_at,
            advancing=state.cursor_id == state.scan_after_id,
            resume_at=state.cursor_id,
        )
        outcome: dict[str, BaseException | bool] = {}  # "done": complete; "error": the first
        if not met(asc, desc):  # (already met: stopped between the last page and the finish)
            walk_desc = threading.Thread(
                target=self._walk, name="scan-desc", daemon=True,
                args=(run, head, desc, asc, state.scan_desc_after_id, None, outcome),
            )  # fmt: skip
            # Each step of a chain is a request and whatever stands between its answer and
            # the next request: the chains parse their pages in their own threads, while the
            # next request is out, and the fetching threads get the GIL back quickly.
            pf = self._prefetch
            parse_here = nullcontext() if pf is None else pf.preparing(None)
            with quick_switches(), parse_here:
                walk_desc.start()
                try:
                    self._walk(run, self.source, asc, desc, state.scan_after_id, wm, outcome)
                finally:
                    outcome.setdefault("stop", True)
                    walk_desc.join()
            error = outcome.get("error")
            if isinstance(error, BaseException):
                raise error
            if not outcome.get("done"):
                return  # stopped: both checkpoints are committed
        self._flush()
        now = self.clock()
        stale_before = now - timedelta(seconds=self.settings.stale_after_s)
        name = self.settings.name
        self.store.settle_cursor(name, self.settings.terminal_statuses, stale_before)
        run.marked_missing = self.store.finish_scan(
            name, self.clock(), self.settings.list_window_s is not None
        )

    def _walk(
        self,
        run: _Run,
        source: PageSource,
        mine: Edge,
        other: Edge,
        after: str | None,
        wm: Watermark | None,
        outcome: dict[str, BaseException | bool],
    ) -> None:
        """One chain of `_scan_both` until the list ends, the chains meet, a stop or an error."""
        seen_last_ids: set[str] = set()
        asc, desc = (mine, other) if mine.order == "asc" else (other, mine)
        try:
            while not outcome and not self._stop(run):
                page = self._page(source, after, mine.order, READ_AHEAD)
                records = self._parse(page)
                with self._writing:
                    if outcome:
                        return  # the other chain completed the scan or failed meanwhile
                    self._apply(run, page, records, watermark=wm, touch_all=True,
                                edge=mine, other=other)  # fmt: skip
                    if met(asc, desc) or self._last_page(run, page, seen_last_ids):
                        outcome["done"] = True
                after = page.last_id
        except BaseException as exc:  # raised by `_scan_both`, in the calling thread
            outcome.setdefault("error", exc)

    # --- stale open jobs ---------------------------------------------------------------------

    def _refresh_stale(self, run: _Run) -> None:
        now = self.clock()
        self._flush()
        while not self._stop(run):
            ids = self.store.stale_open_ids(
                self.settings.name,
                self.settings.terminal_statuses,
                now - timedelta(seconds=self.settings.stale_after_s),
                now - timedelta(seconds=self.settings.stale_refresh_s),
                STALE_BATCH,
            )
            if not ids:
                return
            run.open_jobs = True
            found, gone = [], []
            for vid in ids:
                obj = self.source.get_video(vid)
                if obj is None:
                    gone.append(vid)
                else:
                    found.append(obj)
            page = Page(found, False, None, None)
            self._apply(run, page, self._parse(page), watermark=None, checked=ids, gone=gone)
            self._flush()  # the next query must see these pages

    # --- one page ----------------------------------------------------------------------------

    def _list(self, after: str | None, order: Order, *, ahead: int = 1) -> Page:
        """A list page; prefetch `ahead` of the next ones (0 where the pass may stop early)."""
        return self._page(self.source, after, order, ahead)

    def _page(self, source: PageSource, after: str | None, order: Order, ahead: int) -> Page:
        limit = self.settings.page_size
        if isinstance(source, Prefetching):
            return source.list_page(after=after, order=order, limit=limit, ahead=ahead)
        return source.list_page(after=after, order=order, limit=limit)

    def _stop(self, run: _Run) -> bool:
        if self.should_stop():
            run.stopped = True
        return run.stopped

    def _last_page(self, run: _Run, page: Page, seen_last_ids: set[str]) -> bool:
        """True at the end of the list; raises when the provider repeats a page."""
        if not page.has_more:
            return True
        if page.last_id is None:
            self.errors(
                ErrorEvent("decode", "has_more is true but last_id is null; stopping the pass",
                           request_id=page.request_id)
            )  # fmt: skip
            return True
        if not page.items:
            self.errors(
                ErrorEvent("decode", "has_more is true on an empty page; stopping the pass",
                           request_id=page.request_id)
            )  # fmt: skip
            return True
        if page.last_id in seen_last_ids:
            raise PaginationLoopError(
                f"the provider returned a page ending at {page.last_id} twice; "
                "stopping instead of looping"
            )
        seen_last_ids.add(page.last_id)
        return False

    def _parse(self, page: Page) -> list[VideoRecord]:
        """Valid records of a page in order, one per id; bad items become error events."""
        parsed = page.parsed if page.parsed is not None else parse_items(page.items)
        for bad in parsed.rejected:
            self.errors(
                ErrorEvent("validate", bad.message, None, page.request_id, _payload(bad.item),
                           bad.video_id)
            )  # fmt: skip
        return list(parsed.records)

    def _base(self, run: _Run) -> dict[str, Any]:
        return {
            "source": self.settings.name,
            "run_id": run.run_id,
            "owner": self.owner,
            "now": self.clock(),
            "counts": run.counts,
        }

    def _apply(
        self,
        run: _Run,
        page: Page,
        records: list[VideoRecord],
        *,
        watermark: Watermark | None,
        touch_all: bool = False,
        scan_after: bool = False,
        checked: list[str] | None = None,
        gone: list[str] | None = None,
        edge: Edge | None = None,
        other: Edge | None = None,
    ) -> list[bool]:
        """Diff a page against the mirror and commit it; return whether each job holds.

        `edge`: this page belongs to a chain of a scan from both ends (its checkpoint goes
        with the page); jobs the `other` chain has already committed are not written again.
        """
        snaps = self.store.snapshots([r.id for r in records]) if records else {}
        for staged in (self._committer.staged, self._staged):  # in flight, then staged here
            if staged:
                snaps.update((r.id, staged[r.id]) for r in records if r.id in staged)
        write = PageWrite(**self._base(run), checked=checked or [], gone=gone or [])
        stale_before = write.now - timedelta(seconds=self.settings.stale_after_s)
        holds: list[bool] = []
        for rec in records:
            snap = snaps.get(rec.id)
            if other is None or not other.covers(rec):
                self._diff(rec, snap, write, touch_all)
            held = self._holds(rec, snap, stale_before)
            holds.append(held)
            if watermark is not None:
                watermark.see(rec.id, rec.created_at, held)
        if watermark is not None and watermark.moved:
            write.cursor = (watermark.cursor_id, watermark.cursor_created_at)
            watermark.moved = False
        if scan_after:
            write.scan_after_id = page.last_id
        if edge is not None:
            edge.reach(records)
            edge.checkpoint(write, page.last_id)
        run.counts.pages += 1 if checked is None else 0
        run.counts.items += len(page.items)
        self._commit(run, write)
        return holds

    def _diff(
        self, rec: VideoRecord, snap: JobSnapshot | None, write: PageWrite, touch_all: bool
    ) -> None:
        if snap is None:
            write.inserts.append(rec)
            write.transitions.append(Transition(rec.id, None, rec.status, rec.progress))
            self._staged[rec.id] = JobSnapshot(rec.status, rec.content_hash, write.now, False)
        elif snap.content_hash != rec.content_hash:
            write.updates.append(rec)
            if snap.status != rec.status:
                write.transitions.append(Transition(rec.id, snap.status, rec.status, rec.progress))
            self._staged[rec.id] = JobSnapshot(rec.status, rec.content_hash, snap.first_seen_at,
                                               False)  # fmt: skip
        elif touch_all or snap.missing:
            write.touches.append(rec.id)
            if snap.missing:
                self._staged[rec.id] = replace(snap, missing=False)
        status = rec.status
        known = status in self._open or status in self._terminal
        if not known and status not in self._reported:
            self._reported = self._reported | {status}
            write.reported_statuses = self._reported
            self.errors(
                ErrorEvent("validate", f"unknown status {status!r}: stored as received, "
                           "treated as open until stale", video_id=rec.id)
            )  # fmt: skip

    def _holds(self, rec: VideoRecord, snap: JobSnapshot | None, stale_before: datetime) -> bool:
        """Whether this job holds the watermark: open (or unknown) and not yet stale."""
        if rec.status in self._terminal:
            return False
        return snap is None or snap.first_seen_at > stale_before

    def _commit(self, run: _Run, write: PageWrite) -> None:
        write.errors = self.errors.drain()
        run.reported.update(e.request_id for e in write.errors if e.request_id)
        run.counts.inserted += len(write.inserts)
        run.counts.updated += len(write.updates)
        run.counts.transitions += len(write.transitions)
        run.counts.errors += len(write.errors)
        self._count_requests(run)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(write)
        if (
            len(self._pending) >= run.group_pages
            or time.monotonic() - self._pending_since >= GROUP_S
        ):
            self._hand_over()  # committed while the next pages are diffed
        if self.on_page is not None:
            self.on_page(run.counts)

    def _flush(self) -> None:
        """Commit the staged pages in one transaction, after any group in flight."""
        self._hand_over()
        self._committer.wait()

    def _hand_over(self) -> None:
        """Start committing the staged pages in one transaction, after any group in flight."""
        batches, self._pending, staged, self._staged = self._pending, [], self._staged, {}
        if batches:
            self._committer.submit(batches, staged)


def _floor_second(ts: datetime) -> datetime:
    return datetime.fromtimestamp(math.floor(ts.timestamp()), UTC)


def _within(rec: VideoRecord, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or rec.created_at >= since) and (until is None or rec.created_at < until)


def _beyond(rec: VideoRecord, order: Order, since: datetime | None, until: datetime | None) -> bool:
    """True once a bounded scan has walked past its bound in its direction."""
    if order == "asc":
        return until is not None and rec.created_at >= until
    return since is not None and rec.created_at < since


def _parsed(page: Page) -> Page:
    """`page` with its items parsed (done ahead, in the fetching thread)."""
    return replace(page, parsed=parse_items(page.items))


def _payload(item: Any) -> str:
    """A JSON rendering of a bad item, for `sync_errors.payload` (the store cuts it)."""
    try:
        return json.dumps(clean(item), ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return repr(item)
