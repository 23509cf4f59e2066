"""`Prefetching`: reads ahead as far as asked and no further, one request at a time, hands a
read-ahead error over with the page it belongs to, discards what a change of course makes
useless, and prepares pages in its own thread."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from ingester.errors import TransientApiError
from ingester.prefetch import Prefetching, quick_switches
from ingester.protocols import Order, Page
from ingester.records import parse_items
from tests.fakes import ListSource, job


class Watched(ListSource):
    """A ListSource that fails if two requests ever overlap, and can fail one page."""

    def __init__(self, count: int, *, delay_s: float = 0.002) -> None:
        super().__init__([job(i) for i in range(count)])
        self.delay_s = delay_s
        self.busy = threading.Lock()
        self.overlaps = 0
        self.fail_after: str | None = None

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        with self.alone():
            if after is not None and after == self.fail_after:
                self.requests += 1
                self.calls.append((after, order))
                raise TransientApiError("503 from the provider", status=503)
            return super().list_page(after=after, order=order, limit=limit)

    def get_video(self, video_id: str) -> Any | None:
        with self.alone():
            return super().get_video(video_id)

    @contextmanager
    def alone(self) -> Iterator[None]:
        """One request at a time (counted when not), each taking `delay_s`."""
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()
        try:
            time.sleep(self.delay_s)
            yield
        finally:
            self.busy.release()


def settle(source: Watched, requests: int) -> None:
    """Wait until the source has served `requests` (what was read ahead) and a little more."""
    deadline = time.monotonic() + 5
    while source.requests < requests and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # nothing further may arrive


def walk(pf: Prefetching, ahead: int, order: Order = "asc") -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = pf.list_page(after=after, order=order, limit=10, ahead=ahead)
        ids += [item["id"] for item in page.items]
        if not page.has_more:
            return ids
        after = page.last_id


@pytest.mark.parametrize("ahead", [0, 1, 3, 8])
def test_a_walk_reads_every_page_once_one_request_at_a_time(ahead: int) -> None:
    source = Watched(95)
    pf = Prefetching(source)
    assert walk(pf, ahead) == [j["id"] for j in source.jobs]
    assert source.requests == 10 and source.overlaps == 0
    pf.drain()
    assert source.requests == 10


@pytest.mark.parametrize("ahead", [1, 3, 8])
def test_it_reads_ahead_as_far_as_asked_and_no_further(ahead: int) -> None:
    source = Watched(200)
    pf = Prefetching(source)
    pf.list_page(after=None, order="asc", limit=10, ahead=ahead)
    settle(source, 1 + ahead)
    assert source.requests == 1 + ahead
    page = pf.list_page(after="video_000009", order="asc", limit=10, ahead=ahead)
    assert page.first_id == "video_000010"
    settle(source, 2 + ahead)  # one taken, one more read
    assert source.requests == 2 + ahead and source.overlaps == 0


def test_a_change_of_course_discards_what_was_read_ahead() -> None:
    source = Watched(200)
    pf = Prefetching(source)
    pf.list_page(after=None, order="asc", limit=10, ahead=4)
    settle(source, 5)
    page = pf.list_page(after=None, order="desc", limit=10, ahead=0)  # e.g. a recovery
    assert page.first_id == "video_000199"
    assert source.calls[-1] == (None, "desc")
    settle(source, 6)
    assert source.requests == 6  # nothing read ahead for `ahead=0`
    page = pf.list_page(after="video_000009", order="asc", limit=10, ahead=0)
    assert page.first_id == "video_000010" and source.requests == 7  # asked again, not kept


def test_an_error_read_ahead_comes_with_its_page_and_nothing_is_read_past_it() -> None:
    source = Watched(200)
    source.fail_after = "video_000029"  # the 4th page fails
    pf = Prefetching(source)
    pages = [pf.list_page(after=None, order="asc", limit=10, ahead=8)]
    settle(source, 4)
    assert source.requests == 4  # pages 2, 3 and the failing 4th; nothing after it
    for after in ("video_000009", "video_000019"):
        pages.append(pf.list_page(after=after, order="asc", limit=10, ahead=8))
    with pytest.raises(TransientApiError, match="503"):
        pf.list_page(after="video_000029", order="asc", limit=10, ahead=8)
    assert [p.first_id for p in pages] == ["video_000000", "video_000010", "video_000020"]
    source.fail_after = None  # asked again (a retry by the caller): a fresh request
    page = pf.list_page(after="video_000029", order="asc", limit=10, ahead=0)
    assert page.first_id == "video_000030" and source.requests == 5


def test_pages_read_ahead_are_prepared_in_the_fetching_thread() -> None:
    source = Watched(50)
    threads: dict[str | None, str] = {}

    def prepare(page: Page) -> Page:
        threads[page.first_id] = threading.current_thread().name
        return replace(page, parsed=parse_items(page.items))

    pf = Prefetching(source, prepare)
    after: Any = None
    seen = []
    while True:
        page = pf.list_page(after=after, order="asc", limit=10, ahead=2)
        seen.append(page)
        if not page.has_more:
            break
        after = page.last_id
    first, *rest = seen
    assert first.parsed is None  # asked for, not read ahead: the caller parses it
    assert all(p.parsed is not None and len(p.parsed.records) == 10 for p in rest)
    assert set(threads) == {p.first_id for p in rest}
    assert set(threads.values()) == {"prefetch"}


def test_get_video_waits_for_the_request_in_flight() -> None:
    source = Watched(100, delay_s=0.05)
    pf = Prefetching(source)
    pf.list_page(after=None, order="asc", limit=10, ahead=3)
    assert pf.get_video("video_000050") is not None
    assert source.overlaps == 0


def test_quick_switches_hold_until_the_last_block_ends_then_restore() -> None:
    before = sys.getswitchinterval()
    entered, release = threading.Event(), threading.Event()

    def other_scan() -> None:
        with quick_switches(0.001):
            entered.set()
            release.wait(5)

    with quick_switches(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
        worker = threading.Thread(target=other_scan)
        worker.start()
        assert entered.wait(5)
    assert sys.getswitchinterval() == pytest.approx(0.001)  # the other block is still on
    release.set()
    worker.join()
    assert sys.getswitchinterval() == before
    with quick_switches(1.0):  # never longer than it was
        assert sys.getswitchinterval() == before
    assert sys.getswitchinterval() == before
