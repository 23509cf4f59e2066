"""Paging the list: a chain's state with the page checks, and a read-ahead iterator.

The shape of dlt's `rest_client`: a `Chain` updates its state from one page and says whether
there is a next one; `ReadAhead` owns the loop. Verify, never trust (DESIGN.md §1a): every
page is checked against what was asked before anything is concluded from it —

- order: an `asc` chain never goes back in `created_at`, a `desc` one never forward, within
  a page and across pages (ties within a second are in no known order, so equal is fine);
- `after` honoured: the page does not hold the job named by the cursor, does not start
  before the cursor's second (`floor`), and the cursor the provider gives is never repeated;
- `limit` honoured or clamped: never more items than asked.

A page that fails a check ends the chain with a `Problem`; the pass decides what follows
(cursor recovery, head-only mode, or a scan that refuses to call itself complete). Empty
pages with `has_more` true are normal (a gateway may filter jobs the caller does not own):
the chain follows `last_id` through them, and notes that it was `filtered` (a page whose
`last_id` is not its last job), so a scan never takes such a list as the whole truth.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .protocols import Order, Page, PageSource
from .records import ParsedPage, VideoRecord, parse_items

ProblemKind = Literal["cursor", "paging"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a page proves nothing: `cursor` (it starts before the cursor) or `paging`."""

    kind: ProblemKind
    message: str

    @property
    def reason(self) -> str:
        """Why the source is read in head-only mode, in plain words."""
        return f"this gateway ignores pagination ({self.message})"


@dataclass
class Chain:
    """One walk through the list in one order: what to ask next and what the pages proved."""

    order: Order
    limit: int
    after: str | None = None
    floor: datetime | None = None  # no job of the first page may be older (the cursor's second)
    last: datetime | None = None  # created_at of the last job listed so far
    pages: int = 0
    ended: bool = False
    filtered: bool = False  # a page held fewer jobs than its cursor says it covered
    problem: Problem | None = None
    _cursors: set[str] = field(default_factory=set)

    def update(self, page: Page, jobs: Sequence[VideoRecord]) -> None:
        """Check `page` (whose valid jobs are `jobs`, in list order) and move the cursor."""
        self.pages += 1
        self.problem = self._check(page, jobs)
        if self.problem is not None:
            self.ended = True
            return
        if jobs:
            self.last = jobs[-1].created_at
        # A gateway may drop jobs the caller does not own and keep the page's `last_id`: then
        # the list holds jobs this walk does not see, and absence from it proves nothing.
        listed_last = jobs[-1].listed_id if jobs else None
        if page.last_id is not None and page.last_id != listed_last:
            self.filtered = True
        if not page.has_more or page.last_id is None:
            self.ended = True
            return
        if page.last_id in self._cursors:
            self.problem = Problem(
                "paging", f"the provider gave the cursor {page.last_id} twice (`after` ignored)"
            )
            self.ended = True
            return
        self._cursors.add(page.last_id)
        self.after = page.last_id
        self.floor = None

    def _check(self, page: Page, jobs: Sequence[VideoRecord]) -> Problem | None:
        if len(page.items) > self.limit:
            return Problem(
                "paging", f"asked for {self.limit} jobs, got {len(page.items)} (`limit` ignored)"
            )
        asc = self.order == "asc"
        before = self.last
        for i, job in enumerate(jobs):
            at = job.created_at
            if before is not None and (at < before if asc else at > before):
                when = f"{job.id} created {at:%Y-%m-%d %H:%M:%S}"
                if i == 0:  # the page does not go on from the one before
                    return Problem("paging", f"the page after {self.after} goes back to {when} "
                                   f"(`after` ignored)")  # fmt: skip
                return Problem("paging", f"asked for order={self.order}, got {when} after one "
                               f"created {before:%Y-%m-%d %H:%M:%S} (`order` ignored)")  # fmt: skip
            before = at
        if self.after is not None:
            for job in jobs:
                if self.after in (job.listed_id, job.id):
                    return Problem(
                        "paging", f"the page after {self.after} holds that job (`after` ignored)"
                    )
        if self.floor is not None and jobs and jobs[0].created_at < self.floor:
            return Problem(
                "cursor",
                f"the page after {self.after} starts with {jobs[0].id}, created before it",
            )
        return None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One page of a chain, parsed, with what the chain made of it."""

    chain: Chain
    page: Page
    parsed: ParsedPage
    problem: Problem | None
    ended: bool
    filtered: bool


class ReadAhead:
    """Fetch and parse the pages of one or more chains, each in a thread of its own.

    Each chain has its own source (one HTTP session per thread) and keeps at most `ahead`
    pages fetched that the caller has not taken yet; with `ahead=0` (one chain), the next
    page is asked for only when the caller comes back for it. Pages come out in each chain's order,
    interleaved as they arrive. An error of a chain is raised where its page would have
    come out. Closing (or leaving the `with` block) stops the threads after the request in
    hand, so the sources are free again when it returns.
    """

    def __init__(self, chains: Sequence[tuple[Chain, PageSource]], ahead: int) -> None:
        self._out: queue.SimpleQueue[tuple[Chain, Fetched | BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._closed = threading.Event()
        self._lazy = ahead == 0
        self._slots = {id(c): threading.Semaphore(max(1, ahead)) for c, _ in chains}
        self._running = len(chains)
        self._threads = [
            threading.Thread(target=self._fetch, args=(c, s), name=f"fetch-{c.order}", daemon=True)
            for c, s in chains
        ]
        for t in self._threads:
            t.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Fetched]:
        while self._running:
            chain, item = self._out.get()
            if item is None:
                self._running -= 1
                continue
            if not self._lazy:
                self._slots[id(chain)].release()
            if isinstance(item, BaseException):
                raise item
            yield item
            if self._lazy:
                self._slots[id(chain)].release()

    def close(self) -> None:
        """Stop fetching and wait for the requests in flight."""
        self._closed.set()
        for slot in self._slots.values():
            slot.release()  # a thread waiting for room wakes, sees `closed` and ends
        for t in self._threads:
            t.join()

    def _fetch(self, chain: Chain, source: PageSource) -> None:
        slot = self._slots[id(chain)]
        try:
            while not chain.ended:
                slot.acquire()
                if self._closed.is_set():
                    return
                page = source.list_page(after=chain.after, order=chain.order, limit=chain.limit)
                parsed = parse_items(page.items)
                chain.update(page, parsed.records)
                fetched = Fetched(chain, page, parsed, chain.problem, chain.ended, chain.filtered)
                self._out.put((chain, fetched))
        except BaseException as exc:  # raised in the caller's thread, where the page was due
            self._out.put((chain, exc))
        finally:
            self._out.put((chain, None))
