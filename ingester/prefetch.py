"""Overlap fetching the next pages with writing the current one.

`Prefetching` wraps a `PageSource`. After a `list_page(after=X, ahead=n)` that has more, a
background thread fetches the pages that follow (`after=page.last_id`, and so on) while the
caller diffs and commits the page it holds, keeping at most `n` pages fetched but not yet
asked for. The sync pass always asks for exactly the next page; a request for anything else
first discards what was read ahead and waits for the request in flight (one request at a
time, so the client's session is never shared between threads), and is then sent as usual.
An error of a page read ahead is raised when that page is asked for, exactly as without
prefetching; nothing is read past it.

An incremental pass reads one page ahead; a full scan reads several, so that the commit of
a group of pages (which takes as long as a few requests) does not stall the requests.
`prepare`, if given, is applied to each page read ahead, in the fetching thread: the sync
pass parses pages there, so that parsing overlaps the commits (which release the GIL while
the database works) instead of following them. It may be changed at any time (`preparing`:
it applies to the pages fetched from then on), so the caller must take pages prepared or
not: a scan from both ends turns it off, because there the next request of a chain matters
more than the parse, which would delay it.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from .protocols import Order, Page, PageSource

_Key = tuple[str | None, Order, int]
IDLE_S = 30.0  # the fetching thread ends after this long without work (a new one starts later)
SWITCH_S = 0.001  # the interpreter's thread switch interval while `quick_switches` is on

_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = 0.0


@contextmanager
def quick_switches(interval_s: float = SWITCH_S) -> Iterator[None]:
    """Within the block, a thread waiting for the GIL waits at most about `interval_s`.

    A fetching thread gives the GIL up at every socket call (about ten a request) and must
    take it back to go on; while other threads run Python (parsing, diffing, building rows)
    that takes up to the interpreter's switch interval, 5 ms by default, each time. With
    requests sequential by the API, those waits add up on the critical path of a scan. The
    interval is process-wide: nested and concurrent blocks keep it until the last one ends,
    then the interval from before the first is restored.
    """
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(interval_s, _switch_before))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


class Prefetching:
    """A PageSource that fetches the following list pages while the caller works."""

    def __init__(self, inner: PageSource, prepare: Callable[[Page], Page] | None = None) -> None:
        self.inner = inner
        self.prepare = prepare
        self._lock = threading.Lock()
        self._ahead: deque[tuple[_Key, Future[Page]]] = deque()  # in list order, not yet asked
        self._depth = 0  # how far the current chain may read ahead
        self._epoch = 0  # bumped when what was read ahead is discarded
        self._in_flight: Future[Page] | None = None
        self._tail: Future[Page] | None = None  # the last page queued in this chain
        self._work: queue.SimpleQueue[tuple[int, _Key, Future[Page]]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None  # one thread for all pages (cheaper)

    @property
    def requests(self) -> int:
        """HTTP attempts of the wrapped source."""
        return self.inner.requests

    @property
    def retries(self) -> int:
        """Retries of the wrapped source."""
        return self.inner.retries

    def list_page(self, *, after: str | None, order: Order, limit: int, ahead: int = 1) -> Page:
        """The page asked for; then keep up to `ahead` of the following pages fetched."""
        key: _Key = (after, order, limit)
        with self._lock:
            self._depth = ahead  # before the page in flight lands: it extends by this depth
            front = self._ahead.popleft() if self._ahead and self._ahead[0][0] == key else None
        if front is not None:
            page = front[1].result()
        else:
            self.drain()
            page = self.inner.list_page(after=after, order=order, limit=limit)
        with self._lock:
            if not self._ahead:
                self._extend(page, key)
            else:
                last_key, last = self._ahead[-1]
                if last.done() and last.exception() is None:
                    self._extend(last.result(), last_key)
        return page

    @contextmanager
    def preparing(self, prepare: Callable[[Page], Page] | None) -> Iterator[None]:
        """Use `prepare` for the pages fetched within the block; the one before after it."""
        before, self.prepare = self.prepare, prepare
        try:
            yield
        finally:
            self.prepare = before

    def get_video(self, video_id: str) -> Any | None:
        """`GET /videos/{id}`, after any list request in flight."""
        self.drain()
        return self.inner.get_video(video_id)

    def drain(self) -> None:
        """Discard what was read ahead and wait for the request in flight, if any."""
        with self._lock:
            self._epoch += 1
            self._ahead.clear()
            self._tail = None
            in_flight = self._in_flight
        if in_flight is not None:
            in_flight.exception()  # wait; its outcome is not wanted

    def _extend(self, page: Page, key: _Key) -> None:
        """Queue the page after `page` if the chain goes on and may read further (locked)."""
        if len(self._ahead) >= self._depth:
            return
        if not (page.has_more and page.last_id is not None and page.items):
            return
        _after, order, limit = key
        following: _Key = (page.last_id, order, limit)
        future: Future[Page] = Future()
        self._ahead.append((following, future))
        self._tail = future
        self._work.put((self._epoch, following, future))
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._fetch, name="prefetch", daemon=True)
            self._worker.start()

    def _fetch(self) -> None:
        """The fetching thread: one request at a time; ends when idle a while."""
        while True:
            try:
                epoch, key, future = self._work.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._work.empty():
                        self._worker = None
                        return
                continue
            with self._lock:
                if epoch != self._epoch:  # discarded before it was sent
                    future.cancel()
                    continue
                self._in_flight = future
            after, order, limit = key
            page: Page | None = None
            try:
                page = self.inner.list_page(after=after, order=order, limit=limit)
                if self.prepare is not None:
                    page = self.prepare(page)
            except BaseException as exc:  # handed to the caller of that page
                future.set_exception(exc)
            else:
                future.set_result(page)
            with self._lock:
                self._in_flight = None
                # the chain goes on from here, even if the caller already took this page
                if page is not None and epoch == self._epoch and self._tail is future:
                    self._extend(page, key)
