"""A full scan walking from both ends: `asc` from the start, `desc` from the head, meeting.

Against a real SQL store on every backend (and the simulator over real HTTP at the end):
the mirror equals the list, each job has exactly one first sighting, the chains stop where
they meet (ties in a second included), an interrupted scan resumes both chains from their
checkpoints, a failing chain fails the pass without losing what was committed, and the
cursor ends where the next incremental pass should start.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import Secret, SourceSettings
from ingester.errors import TransientApiError
from ingester.models import sync_state, video_job_transitions, video_jobs
from ingester.protocols import Order, Page
from ingester.scan import READ_AHEAD
from ingester.simulator import FakeClock, Simulator, World
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer
from tests.fakes import Clock, ListSource, job
from tests.test_model import Case, assert_mirror_is_truth


class Twin:
    """A second client of the same provider (the head source), with its own counters.

    Its requests go to its own view of the provider's jobs and are logged in `src.calls`.
    """

    def __init__(self, src: ListSource) -> None:
        self.src = src
        self.view = ListSource()
        self.fail_on: int | None = None  # from this request number on, fail like a dead provider

    @property
    def requests(self) -> int:
        """Requests sent so far."""
        return self.view.requests

    @property
    def retries(self) -> int:
        """Retries spent so far."""
        return 0

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        """The provider's page, unless this request is set to fail."""
        self.view.jobs = self.src.jobs
        self.src.calls.append((after, order))
        if self.fail_on is not None and self.view.requests + 1 >= self.fail_on:
            self.view.requests += 1
            raise TransientApiError("HTTP 503", status=503, request_id="req_twin")
        return self.view.list_page(after=after, order=order, limit=limit)

    def get_video(self, video_id: str) -> Any | None:
        """`GET /videos/{id}`."""
        return self.src.get_video(video_id)


def make(
    src: ListSource, engine: Engine, clock: Clock | None = None, **settings: Any
) -> tuple[Syncer, Twin]:
    settings.setdefault("page_size", 10)
    head = Twin(src)
    syncer = Syncer(
        SourceSettings(name="s1", base_url="https://example.test/v1", **settings),
        src,
        SqlStore(engine),
        owner="test-owner",
        clock=clock or Clock(),
        head_source=head,
    )
    return syncer, head


def rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def mirror(engine: Engine) -> dict[str, Any]:
    return {r.id: r for r in rows(engine, sa.select(video_jobs))}


def first_sightings(engine: Engine) -> Counter[str]:
    t = video_job_transitions.c
    return Counter(
        r.video_id for r in rows(engine, sa.select(t.video_id).where(t.from_status.is_(None)))
    )


def state(engine: Engine) -> Any:
    return rows(engine, sa.select(sync_state))[0]


def assert_mirrors(engine: Engine, src: ListSource) -> None:
    """Every listed job is mirrored as listed, seen once for the first time, nothing more."""
    stored = mirror(engine)
    assert sorted(stored) == sorted(j["id"] for j in src.jobs)
    for j in src.jobs:
        assert stored[j["id"]].raw == j and stored[j["id"]].status == j["status"]
    sightings = first_sightings(engine)
    assert set(sightings) == set(stored) and set(sightings.values()) <= {1}


@pytest.mark.parametrize("count", [0, 1, 9, 10, 95, 200])
def test_the_chains_meet_and_the_mirror_is_the_list(engine: Engine, count: int) -> None:
    src = ListSource([job(i) for i in range(count)])
    syncer, _head = make(src, engine)
    result = syncer.backfill()
    assert result.outcome == "succeeded"
    assert_mirrors(engine, src)
    orders = Counter(order for _after, order in src.calls)
    if count > 50:  # (a short list may be done by whichever chain asks first)
        assert orders["desc"] >= 2 and orders["asc"] >= 2  # both chains walked
    pages = -(-count // 10)
    # each chain stops once they have met: a page of overlap each at most (and what each had
    # read ahead is left unread)
    assert result.counts.pages <= pages + 2
    assert result.counts.requests <= pages + 2 + 2 * READ_AHEAD
    assert result.counts.inserted == count == result.counts.transitions
    s = state(engine)
    assert s.scan_started_at is None and s.last_full_scan_at is not None
    assert (s.scan_after_id, s.scan_desc_after_id, s.scan_asc_created_at) == (None, None, None)
    assert s.cursor_id == (f"video_{count - 1:06d}" if count else None)  # all terminal
    src.calls.clear()
    again = syncer.sync()  # the cursor is at the head: one request, nothing written
    assert again.counts.requests == 1 and again.counts.inserted == again.counts.updated == 0


def test_ties_around_the_meeting_point_are_each_written_once(engine: Engine) -> None:
    # 60 jobs in 4 seconds: every page boundary and the meeting point fall inside a tie
    src = ListSource([job(i, created_at=1_760_000_000 + i // 15) for i in range(60)])
    syncer, _head = make(src, engine, page_size=7)
    assert syncer.backfill().outcome == "succeeded"
    assert_mirrors(engine, src)


@pytest.mark.parametrize("stop_after", [1, 3, 6])
def test_an_interrupted_scan_resumes_both_chains(engine: Engine, stop_after: int) -> None:
    src = ListSource([job(i) for i in range(150)] + [job(150, "queued")])
    clock = Clock()
    syncer, _head = make(src, engine, clock)
    staged: list[int] = []
    syncer.on_page = lambda counts: staged.append(counts.pages)
    syncer.should_stop = lambda: len(staged) >= stop_after
    first = syncer.backfill()
    assert first.outcome == "interrupted"
    s = state(engine)
    assert s.scan_started_at == clock.now  # the scan is pending
    done = mirror(engine)
    assert 0 < len(done) < 151
    assert set(first_sightings(engine).values()) == {1}
    asc_ids = {j["id"] for j in src.jobs[: src.jobs.index(src.find(s.scan_after_id)) + 1]}
    assert asc_ids <= set(done)  # the asc checkpoint covers only committed jobs
    if s.scan_desc_after_id is not None:
        desc_from = src.jobs.index(src.find(s.scan_desc_after_id))
        assert {j["id"] for j in src.jobs[desc_from:]} <= set(done)
        assert s.scan_desc_created_at is not None
    clock.advance(60)
    src.calls.clear()
    syncer.should_stop = lambda: False
    second = syncer.backfill()
    assert second.outcome == "succeeded"
    resumed = {order: after for after, order in reversed(src.calls)}  # each chain's first call
    assert resumed["asc"] == s.scan_after_id
    assert resumed["desc"] == s.scan_desc_after_id
    assert_mirrors(engine, src)
    assert state(engine).cursor_id == "video_000149"  # before the open job at the head
    assert all(r.missing_since is None for r in mirror(engine).values())  # none went unseen


def test_a_failing_chain_fails_the_pass_and_the_scan_resumes(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(120)])
    syncer, head = make(src, engine)
    head.fail_on = 3
    with pytest.raises(TransientApiError):
        syncer.backfill()
    assert set(first_sightings(engine).values()) <= {1}
    head.fail_on = None
    assert syncer.backfill().outcome == "succeeded"
    assert_mirrors(engine, src)


@pytest.mark.parametrize("open_at", [3, 57, 95])
def test_the_cursor_settles_before_the_oldest_open_job(engine: Engine, open_at: int) -> None:
    jobs = [job(i) for i in range(100)]
    jobs[open_at] = job(open_at, "in_progress")
    src = ListSource(jobs)
    syncer, _head = make(src, engine)
    syncer.backfill()
    assert state(engine).cursor_id == f"video_{open_at - 1:06d}"
    src.calls.clear()
    src.find(f"video_{open_at:06d}").update(status="completed", progress=100)
    result = syncer.sync()  # reads from the open job onward, not the history
    assert result.counts.requests == -(-(100 - open_at) // 10)
    assert result.counts.transitions == 1
    assert state(engine).cursor_id == "video_000099"


def test_the_cursor_never_moves_back(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(40)])
    syncer, _head = make(src, engine)
    syncer.sync()
    assert state(engine).cursor_id == "video_000039"
    src.find("video_000005").update(status="in_progress")  # a provider reopening a job
    syncer.backfill()
    assert state(engine).cursor_id == "video_000039"


def test_reconcile_from_both_ends_marks_what_is_gone(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(80)])
    clock = Clock()
    syncer, _head = make(src, engine, clock)
    syncer.backfill()
    for vid in ("video_000002", "video_000041", "video_000077"):
        src.delete(vid)
    clock.advance(60)
    result = syncer.reconcile()
    assert result.marked_missing == 3
    assert {v for v, r in mirror(engine).items() if r.missing_since} == {
        "video_000002", "video_000041", "video_000077",
    }  # fmt: skip


def test_a_one_chain_checkpoint_is_resumed_from_both_ends(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(100)])
    one = Syncer(
        SourceSettings(name="s1", base_url="https://example.test/v1", page_size=10),
        src, SqlStore(engine), owner="test-owner", clock=Clock(),
    )  # fmt: skip
    staged: list[int] = []
    one.on_page = lambda counts: staged.append(counts.pages)
    one.should_stop = lambda: len(staged) >= 3
    assert one.backfill().outcome == "interrupted"
    assert state(engine).scan_after_id == "video_000029"
    both, _head = make(src, engine)
    assert both.backfill().outcome == "succeeded"
    assert_mirrors(engine, src)


KEY = "sk-bidir-test-0123456789"


@pytest.mark.parametrize("seed", [1, 2])
def test_both_ends_over_http_while_jobs_move(engine: Engine, seed: int) -> None:
    clock = FakeClock(1_763_000_000.0)
    world = World(clock=clock, seed=seed)
    world.add_jobs(300, created_at=clock() - 86_400, spacing_s=60, status="completed")
    world.add_jobs(40, created_at=clock() - 3_000, spacing_s=0.3,  # ties within a second
                   queued_s=(0, 2_000), render_s=(100, 3_000), fail_rate=0.3)  # fmt: skip
    world.add_jobs(60, created_at=clock() - 100, spacing_s=1, queued_s=(0, 50),
                   render_s=(50, 400))  # fmt: skip
    with Simulator(world, api_key=KEY) as sim:
        source = SourceSettings(name="bidir", base_url=sim.base_url, api_key=Secret(KEY),
                                page_size=7)  # fmt: skip
        syncer = build_syncer(
            source, SqlStore(engine), owner="bidir",
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        ).syncer  # fmt: skip
        for step in itertools.count():
            result = syncer.backfill() if step == 0 else syncer.sync()
            assert result.outcome == "succeeded"
            truth = world.truth()
            assert_mirror_is_truth(engine, Case(), truth, {j["id"] for j in truth})
            if step == 4:
                break
            clock.advance(700)
        desc = [r for r in sim.requests if r.query.get("order") == "desc"]
        assert desc and desc[0].query.get("after") is None
