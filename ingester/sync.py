"""One pass of the mirror: the incremental pass, cursor recovery, stale refresh, head-only mode.

The algorithm of DESIGN.md §3. It talks to a `PageSource` and a `Store` (see `protocols`),
imports neither `requests` nor `sqlalchemy` and starts no thread (paging's read-ahead does).

Incremental pass: page `order=asc` from the low watermark `cursor_id` to the end; each page
is committed with its transitions and the advanced cursor in one transaction. The cursor
moves over the run of jobs at its front that do not hold it: terminal jobs and jobs open
longer than `stale_after_s` (measured from our own `first_seen_at`). Stale open jobs are
then re-read one by one with `GET /videos/{id}` every `stale_refresh_s`.

Every page is verified (`paging`). A page that starts before the cursor means the cursor
job is gone: recover with a `desc` walk from the head. Any other failed check means the
provider cannot be paged: the source goes to head-only mode (recorded once) — each pass
reads the head, keeps every open job current by id, and never claims more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from .config import SourceSettings
from .diff import Statuses, Watermark
from .errors import CursorRejectedError, PagingError
from .paging import Chain, Problem, ReadAhead
from .protocols import HEAD_ONLY, ErrorBuffer, ErrorEvent, Page, PageSource, SourceState, Store
from .records import parse_items
from .runs import PassResult, Recorder, Run
from .scan import Scanner
from .writer import PageWriter

STALE_BATCH = 100


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


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
        on_page: Callable[..., None] | None = None,
        head_source: PageSource | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.errors = errors or ErrorBuffer()
        self.clock = clock
        self.should_stop = should_stop
        sources = [source] if head_source is None else [source, head_source]
        self.recorder = Recorder(
            settings.name, store, sources, owner=owner, errors=self.errors,
            lease_ttl_s=lease_ttl_s, clock=clock,
        )  # fmt: skip
        self.writer = PageWriter(
            settings.name, store, self.recorder,
            statuses=Statuses(frozenset(settings.open_statuses),
                              frozenset(settings.terminal_statuses)),
            stale_after_s=settings.stale_after_s, errors=self.errors, clock=clock,
            on_page=on_page,
        )  # fmt: skip
        self.scanner = Scanner(
            settings, source, head_source, store, self.writer, clock=clock, stop=self._stop,
        )  # fmt: skip

    @property
    def on_page(self) -> Callable[..., None] | None:
        """Called with the run's counts after every page."""
        return self.writer.on_page

    @on_page.setter
    def on_page(self, callback: Callable[..., None] | None) -> None:
        self.writer.on_page = callback

    # --- the three kinds of pass -------------------------------------------------------------

    def sync(self) -> PassResult:
        """One incremental pass: new jobs and open jobs, then due stale jobs by id."""
        return self.recorder.run("sync", self._incremental)

    def backfill(self, since: datetime | None = None, until: datetime | None = None) -> PassResult:
        """A full scan from the beginning (or within [since, until)); resumes a pending one."""
        return self.recorder.run("backfill", lambda run: self._scan(run, since, until))

    def reconcile(self) -> PassResult:
        """A full scan that maintains `missing_since`; resumes a pending one."""
        return self.recorder.run("reconcile", lambda run: self._scan(run, None, None))

    # --- incremental pass --------------------------------------------------------------------

    def _incremental(self, run: Run) -> None:
        state = self.store.load_state(self.settings.name)
        self.writer.group = 1
        self.writer.reported = state.reported_statuses
        problem: Problem | None = None
        if state.list_mode == HEAD_ONLY:
            run.head_only = state.list_mode_reason or "the provider cannot be paged"
        elif state.cursor_id is not None and state.cursor_missing:
            problem = self._recover(run, state, "the cursor job is marked missing")
        else:
            problem = self._forward(run, state)
        if run.stopped:
            return
        if problem is not None or run.head_only:
            self._head_only(run, state, problem)
        else:
            self._refresh_stale(run)

    def _forward(self, run: Run, state: SourceState) -> Problem | None:
        """Page `asc` from the cursor to the end; a problem if a page proves nothing."""
        wm = Watermark(state.cursor_id, state.cursor_created_at)
        chain = Chain("asc", self.settings.page_size, after=state.cursor_after,
                      floor=_second(state.cursor_created_at))  # fmt: skip
        try:
            with ReadAhead([(chain, self.source)], ahead=1) as pages:
                for f in pages:
                    records = self.writer.report(f.page, f.parsed)
                    verified = f.problem is None
                    self.writer.page(
                        run,
                        records,
                        self.writer.new_write(run),
                        items=len(f.page.items),
                        watermark=wm if verified else None,
                        end=f.page.last_id,
                    )
                    run.counts.pages += 1
                    run.open_jobs = run.open_jobs or wm.held
                    if f.problem is not None or f.ended or self._stop(run):
                        break
        except CursorRejectedError as exc:
            if state.cursor_after != state.cursor_id:  # listed by a gateway; now the provider?
                return self._forward(run, replace(state, cursor_after=state.cursor_id))
            return self._recover(run, state, f"the provider rejected it ({exc})")
        if chain.problem is not None and chain.problem.kind == "cursor":
            return self._recover(run, state, "the provider ignored it")
        return chain.problem

    def _recover(self, run: Run, state: SourceState, reason: str) -> Problem | None:
        """The cursor job is gone: walk `desc` from the head back past the cursor's second.

        The first request carries no `after`, so a provider that is gone raises
        NotServedError here instead of being mistaken for a vanished cursor.
        """
        floor = _second(state.cursor_created_at)
        assert floor is not None
        self.errors(ErrorEvent("http", f"cursor {state.cursor_id} lost: {reason}; recovering"))
        newer: list[tuple[str, datetime, bool]] = []
        boundary: tuple[str, datetime] | None = None
        chain = Chain("desc", self.settings.page_size)
        with ReadAhead([(chain, self.source)], ahead=0) as pages:
            for f in pages:
                records = self.writer.report(f.page, f.parsed)
                holds = self.writer.page(run, records, self.writer.new_write(run),
                                         items=len(f.page.items))  # fmt: skip
                run.counts.pages += 1
                if f.problem is not None:
                    return f.problem
                for rec, held in zip(records, holds, strict=True):
                    if rec.created_at >= floor:
                        newer.append((rec.id, rec.created_at, held))
                    elif boundary is None:
                        boundary = (rec.id, rec.created_at)
                if boundary is not None or f.ended or self._stop(run):
                    break
        if run.stopped:
            return None
        wm = Watermark(*(boundary or (None, None)))
        for vid, created, held in reversed(newer):
            wm.see(vid, created, held)
        run.open_jobs = run.open_jobs or wm.held
        self.writer.stage(
            run, self.writer.new_write(run, cursor=(wm.cursor_id, wm.cursor_created_at))
        )
        self._refresh_stale(run)
        return None

    # --- head-only mode ----------------------------------------------------------------------

    def _head_only(self, run: Run, state: SourceState, problem: Problem | None) -> None:
        """Read the head, keep every open job current by id, claim nothing about the rest."""
        page = self.source.list_page(after=None, order="desc", limit=self.settings.page_size)
        records = self.writer.report(page, parse_items(page.items))
        write = self.writer.new_write(run, checked=[r.id for r in records])  # read just now
        holds = self.writer.page(run, records, write, items=len(page.items))
        run.counts.pages += 1
        run.open_jobs = run.open_jobs or any(holds)
        n = len(page.items)
        if problem is not None:
            reason = f"{problem.reason}: only its newest {n} jobs are visible"
            run.head_only = reason
            self.errors(ErrorEvent("http", f"{reason}; head-only mode from now on: each pass "
                                   "reads the head and re-reads open jobs by id, and no scan "
                                   "is claimed complete", request_id=page.request_id))  # fmt: skip
            self.store.set_list_mode(self.settings.name, HEAD_ONLY, reason, self.clock())
        inserted = len(write.inserts)
        if page.has_more and records and inserted == len(records) and state.last_success_at:
            self.errors(ErrorEvent(
                "validate", f"possible gap: none of the {n} jobs at the head of the list was "
                "in the mirror, so jobs created since the last pass may not be visible through "
                f"this provider; shorten the sync interval so that fewer than {n} jobs are "
                "created between two passes", request_id=page.request_id,
            ))  # fmt: skip
        self.writer.flush()
        # every other open job, whatever its age, once a pass (the head's were read just now)
        self._refresh(run, write.now, write.now - timedelta(microseconds=1))

    # --- open jobs by id ---------------------------------------------------------------------

    def _refresh_stale(self, run: Run) -> None:
        """Re-read by id the open jobs older than `stale_after_s` that are due."""
        self.writer.flush()
        now = self.clock()
        self._refresh(run, now - timedelta(seconds=self.settings.stale_after_s),
                      now - timedelta(seconds=self.settings.stale_refresh_s))  # fmt: skip

    def _refresh(self, run: Run, first_seen_before: datetime, checked_before: datetime) -> None:
        """Re-read by id the open jobs first seen and last read before the times given."""
        while not self._stop(run):
            ids = self.store.open_jobs(self.settings.name, self.settings.terminal_statuses,
                                       first_seen_before, checked_before, STALE_BATCH)  # fmt: skip
            if not ids:
                return
            run.open_jobs = True
            found, gone = [], []
            for vid in ids:
                # by the upstream id: a gateway answers it, while some wrapped forms it cannot
                # read back (LiteLLM 1.110.2: a "/" in the id, a ";" in the model)
                obj = self.source.get_video(vid)
                if obj is None:
                    gone.append(vid)
                else:
                    found.append(obj)
            records = self.writer.report(Page(found, False, None, None), parse_items(found))
            write = self.writer.new_write(run, checked=ids, gone=gone)
            self.writer.page(run, records, write, items=0, by_value=True)
            self.writer.flush()  # the next query must see these

    def _stop(self, run: Run) -> bool:
        if self.should_stop():
            run.stopped = True
        return run.stopped

    # --- full scan ---------------------------------------------------------------------------

    def _scan(self, run: Run, since: datetime | None, until: datetime | None) -> None:
        refused = self.scanner.scan(run, since, until)
        if refused is not None:
            raise PagingError(refused)


def _second(ts: datetime | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(math.floor(ts.timestamp()), UTC)
