"""The full scan (backfill, reconcile): every job the list holds, proven complete or not at all.

With a second client the scan walks `asc` from the start and `desc` from the head at once
(latency bound, two chains in flight halve the time) and stops where they meet (`meeting`);
one thread diffs and commits the pages of both, in groups, each page with its chain's
checkpoint, so an interrupted scan resumes both chains. The `asc` chain carries the cursor
forward as an incremental pass would; once complete the cursor settles over the whole list.

Complete means proven by verified pages (`paging`): the end of the list, or the meeting of
the two chains. Only then are jobs the scan did not see marked missing, and only those
created within the span it listed (its oldest to its newest job), so a provider that lists
a window or forgets old jobs never gets them marked. A page that fails its checks ends the
scan as not complete: nothing is marked, the checkpoint is dropped, and the source is read
in head-only mode from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from .config import SourceSettings
from .diff import Watermark, span
from .meeting import Edge, met
from .paging import Chain, Problem, ReadAhead
from .protocols import HEAD_ONLY, ErrorEvent, Order, PageSource, ScanStart, SourceState, Store
from .records import VideoRecord
from .runs import Run
from .writer import PageWriter

GROUP_PAGES = 16  # pages per transaction: on SQLite a commit costs about as much as a page
READ_AHEAD = 8  # pages each chain keeps fetched ahead, so a group's commit stalls no request


class Scanner:
    """Full scans of one source."""

    def __init__(
        self,
        settings: SourceSettings,
        source: PageSource,
        head: PageSource | None,
        store: Store,
        writer: PageWriter,
        *,
        clock: Callable[[], datetime],
        stop: Callable[[Run], bool],
    ) -> None:
        self.settings = settings
        self.source = source
        self.head = head
        self.store = store
        self.writer = writer
        self.clock = clock
        self.stop = stop

    def scan(self, run: Run, since: datetime | None, until: datetime | None) -> str | None:
        """Scan (or resume scanning) the list; why it cannot be complete, if it cannot."""
        name = self.settings.name
        state = self.store.begin_scan(name, ScanStart(run.kind, run.run_id, self.clock(),
                                                      since, until))  # fmt: skip
        self.writer.group = GROUP_PAGES
        self.writer.reported = state.reported_statuses
        try:
            problem = self._walk(run, state, since, until)
        except BaseException as exc:
            self.writer.flush_before_failing(exc)
            raise
        self.writer.flush()
        if problem is not None:
            return self._refuse(run, problem, state.list_mode)
        if run.stopped:
            return None
        if since is None and until is None:
            stale_before = self.clock() - timedelta(seconds=self.settings.stale_after_s)
            self.store.settle_cursor(name, self.settings.terminal_statuses, stale_before)
        run.marked_missing = self.store.finish_scan(
            name, self.clock(), self.settings.list_window_s is not None
        )
        if state.list_mode == HEAD_ONLY:
            self.store.set_list_mode(name, None, None, self.clock())
            self.writer.errors(ErrorEvent("http", "a complete scan verified every page: "
                                          "leaving head-only mode"))  # fmt: skip
        return None

    def _walk(
        self, run: Run, state: SourceState, since: datetime | None, until: datetime | None
    ) -> Problem | None:
        """Read pages until the scan is complete, stopped, or a page fails its checks."""
        limit = self.settings.page_size
        bounded = since is not None or until is not None
        order: Order = "desc" if since is not None and until is None else "asc"
        if order == "asc":
            after, reached = state.scan_after_id, state.scan_asc_created_at
        else:
            after, reached = state.scan_desc_after_id, state.scan_desc_created_at
        asc = Chain(order, limit, after=after, last=reached)
        edges = {id(asc): Edge(order, reached)}
        chains = [(asc, self.source)]
        if self.head is not None and not bounded:
            desc = Chain("desc", limit, after=state.scan_desc_after_id,
                         last=state.scan_desc_created_at)  # fmt: skip
            edges[id(desc)] = Edge("desc", state.scan_desc_created_at)
            chains.append((desc, self.head))
        wm = None
        if order == "asc" and since is None:
            wm = Watermark(state.cursor_id, state.cursor_created_at,
                           advancing=state.cursor_id == state.scan_after_id,
                           resume_at=state.cursor_id)  # fmt: skip
        lo, hi = state.scan_oldest_at, state.scan_newest_at
        filtered = bool(state.scan_filtered)
        both = list(edges.values())
        if len(both) == 2 and met(both[0], both[1]):
            return None  # stopped between the last page and the finish: nothing left to read
        with ReadAhead(chains, 0 if bounded else READ_AHEAD) as pages:
            for f in pages:
                edge = edges[id(f.chain)]
                other = next((e for e in both if e is not edge), None)
                records = self.writer.report(f.page, f.parsed)
                past = False
                if bounded:
                    past = any(_beyond(r, order, since, until) for r in records)
                    records = [r for r in records if _within(r, since, until)]
                write = self.writer.new_write(run)
                if f.problem is None:
                    edge.reach(records)
                    edge.checkpoint(write, f.page.last_id)
                    lo, hi = span(records, lo, hi)
                    write.scan_oldest_at, write.scan_newest_at = lo, hi
                    if f.filtered and not filtered:
                        filtered = write.scan_filtered = True
                        self.writer.errors(ErrorEvent(
                            "validate", "the list is filtered (a page holds fewer jobs than its "
                            f"cursor {f.page.last_id} covers: a key that may not see every job"
                            "): this scan marks no job missing", request_id=f.page.request_id,
                        ))  # fmt: skip
                self.writer.page(
                    run, records, write, items=len(f.page.items),
                    watermark=wm if f.chain is asc and f.problem is None else None, touch=True,
                    skip=other.covers if other is not None else None,
                )  # fmt: skip
                run.counts.pages += 1
                if f.problem is not None:
                    return f.problem
                if f.ended and f.page.has_more and not past:  # the list did not say it ended
                    return Problem("paging", "has_more is true but last_id is null, so the end "
                                   "of the list is not proven")  # fmt: skip
                if past or f.ended or (other is not None and met(*both)) or self.stop(run):
                    return None
        return None

    def _refuse(self, run: Run, problem: Problem, mode: str | None) -> str:
        """A page proved nothing: drop the checkpoint, mark nothing, say so once."""
        name = self.settings.name
        self.store.abandon_scan(name)
        reason = problem.reason
        if mode != HEAD_ONLY:
            self.store.set_list_mode(name, HEAD_ONLY, reason, self.clock())
            self.writer.errors(ErrorEvent("http", f"{reason}; head-only mode from now on"))
        run.head_only = reason
        return (
            f"{reason}: a full scan cannot be proven complete, so nothing was marked missing "
            "(the jobs read were kept); `ingester sync` keeps the newest jobs and every open job "
            "current in head-only mode"
        )


def _within(rec: VideoRecord, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or rec.created_at >= since) and (until is None or rec.created_at < until)


def _beyond(rec: VideoRecord, order: Order, since: datetime | None, until: datetime | None) -> bool:
    """True once a bounded scan has walked past its bound in its direction."""
    if order == "asc":
        return until is not None and rec.created_at >= until
    return since is not None and rec.created_at < since
