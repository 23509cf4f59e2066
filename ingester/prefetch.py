"""Overlap fetching the next page with writing the current one.

`Prefetching` wraps a `PageSource`. After each `list_page(after=X)` that has more, it
starts `list_page(after=page.last_id)` in a background thread, so the request is in flight
while the caller diffs and commits the page it holds. The sync pass always asks for exactly
that page next; any other request waits for the one in flight (one request at a time, so the
client's session is never shared between threads) and is then sent as usual. An error of the
prefetched request is raised when that page is asked for, exactly as without prefetching.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from .protocols import Order, Page, PageSource

_Key = tuple[str | None, Order, int]
IDLE_S = 30.0  # the fetching thread ends after this long without work (a new one starts later)


class Prefetching:
    """A PageSource that fetches the following list page while the caller works."""

    def __init__(self, inner: PageSource) -> None:
        self.inner = inner
        self._pending: tuple[_Key, Future[Page]] | None = None
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[tuple[_Key, Future[Page]]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None  # one thread for all pages (cheaper)

    @property
    def requests(self) -> int:
        """HTTP attempts of the wrapped source."""
        return self.inner.requests

    @property
    def retries(self) -> int:
        """Retries of the wrapped source."""
        return self.inner.retries

    def list_page(self, *, after: str | None, order: Order, limit: int, ahead: bool = True) -> Page:
        """The page asked for; with `ahead`, start fetching the one after it."""
        key: _Key = (after, order, limit)
        page = self._take(key)
        if page is None:
            page = self.inner.list_page(after=after, order=order, limit=limit)
        if ahead and page.has_more and page.last_id is not None and page.items:
            self._start((page.last_id, order, limit))
        return page

    def get_video(self, video_id: str) -> Any | None:
        """`GET /videos/{id}`, after any list request in flight."""
        self.drain()
        return self.inner.get_video(video_id)

    def drain(self) -> None:
        """Wait for and discard the request in flight (e.g. when the pass ends early)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].exception()  # wait; its outcome is not wanted

    def _take(self, key: _Key) -> Page | None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        pending_key, future = pending
        if pending_key != key:
            future.exception()
            return None
        return future.result()

    def _start(self, key: _Key) -> None:
        future: Future[Page] = Future()
        with self._lock:
            self._pending = (key, future)
            self._work.put((key, future))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._fetch, name="prefetch", daemon=True)
                self._worker.start()

    def _fetch(self) -> None:
        """The fetching thread: run the requests handed to it; end when idle a while."""
        while True:
            try:
                (after, order, limit), future = self._work.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._work.empty():
                        self._worker = None
                        return
                continue
            try:
                future.set_result(self.inner.list_page(after=after, order=order, limit=limit))
            except BaseException as exc:  # handed to the caller of that page
                future.set_exception(exc)
