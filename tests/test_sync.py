"""The sync algorithm against a real SQL store on every backend (DESIGN.md §2 and §3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import SourceSettings
from ingester.errors import LeaseBusyError, NotServedError, PagingError
from ingester.models import sync_errors, sync_runs, sync_state, video_job_transitions, video_jobs
from ingester.protocols import Order, Page
from ingester.store import SqlStore
from ingester.sync import Syncer
from tests.fakes import Clock, ListSource, job


def make(source: ListSource, engine: Engine, clock: Clock | None = None, **settings: Any) -> Syncer:
    settings.setdefault("page_size", 10)
    return Syncer(
        SourceSettings(name="s1", base_url="https://example.test/v1", **settings),
        source,
        SqlStore(engine),
        owner="test-owner",
        clock=clock or Clock(),
    )


def rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def jobs_by_id(engine: Engine) -> dict[str, Any]:
    return {r.id: r for r in rows(engine, sa.select(video_jobs))}


def transitions(engine: Engine) -> list[tuple[str, str | None, str]]:
    t = video_job_transitions.c
    return [
        (r.video_id, r.from_status, r.to_status)
        for r in rows(engine, sa.select(t.video_id, t.from_status, t.to_status).order_by(t.id))
    ]


def cursor(engine: Engine) -> str | None:
    return rows(engine, sa.select(sync_state.c.cursor_id))[0][0]


def errors(engine: Engine) -> list[Any]:
    return rows(engine, sa.select(sync_errors).order_by(sync_errors.c.id))


def test_first_pass_mirrors_everything_and_audits_first_sightings(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(25)] + [job(25, "in_progress"), job(26)])
    result = make(src, engine).sync()
    assert result.outcome == "succeeded"
    assert (result.counts.inserted, result.counts.transitions, result.counts.pages) == (27, 27, 3)
    mirror = jobs_by_id(engine)
    assert len(mirror) == 27
    assert mirror["video_000025"].status == "in_progress"
    assert mirror["video_000003"].raw == src.jobs[3]
    assert mirror["video_000003"].created_at == datetime.fromtimestamp(1_760_000_003, UTC)
    assert all(f is None for _, f, _ in transitions(engine))
    assert cursor(engine) == "video_000024"  # stops at the first open job
    run = rows(engine, sa.select(sync_runs))[0]
    assert (run.outcome, run.items, run.inserted, run.requests) == ("succeeded", 27, 27, 3)


def test_replay_writes_nothing_and_idle_pass_is_one_request(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(30)])
    clock = Clock()
    syncer = make(src, engine, clock)
    syncer.sync()
    before = jobs_by_id(engine)
    clock.advance(60)
    src.requests = 0
    result = syncer.sync()
    assert src.requests == 1
    assert (result.counts.inserted, result.counts.updated, result.counts.transitions) == (0, 0, 0)
    assert jobs_by_id(engine) == before  # not even last_seen_at moved
    assert len(transitions(engine)) == 30


def test_open_jobs_are_reread_every_pass_until_terminal(engine: Engine) -> None:
    src = ListSource(
        [job(i) for i in range(15)] + [job(15, "queued"), *[job(i) for i in range(16, 40)]]
    )
    clock = Clock()
    syncer = make(src, engine, clock)
    syncer.sync()
    assert cursor(engine) == "video_000014"
    src.requests = 0
    src.find("video_000015").update(status="in_progress", progress=40)
    src.find("video_000030").update(progress=99)  # terminal jobs past the open one are re-read too
    clock.advance(60)
    result = syncer.sync()
    assert src.requests == 3  # 25 jobs from the open one onward, pages of 10
    assert (result.counts.updated, result.counts.transitions) == (2, 1)
    src.find("video_000015").update(status="completed", progress=100)
    clock.advance(60)
    syncer.sync()
    assert cursor(engine) == "video_000039"
    chain = [(f, t) for v, f, t in transitions(engine) if v == "video_000015"]
    assert chain == [(None, "queued"), ("queued", "in_progress"), ("in_progress", "completed")]
    m = jobs_by_id(engine)["video_000015"]
    assert (m.status, m.progress) == ("completed", 100)
    assert m.last_changed_at == clock.now
    src.requests = 0
    syncer.sync()
    assert src.requests == 1


def test_malformed_items_are_recorded_and_the_page_still_stored(engine: Engine) -> None:
    bad = [
        {"object": "video", "status": "queued"},  # no id
        job(1, created_at="yesterday"),  # wrong type
        "not an object",
    ]
    good = [job(0), *bad, job(2), job(3, prompt="nul\x00inside \ud800 surrogate")]
    src = ListSource(good)
    result = make(src, engine).sync()
    assert result.outcome == "succeeded"
    assert set(jobs_by_id(engine)) == {"video_000000", "video_000002", "video_000003"}
    errs = [e for e in errors(engine) if e.stage == "validate"]
    assert len(errs) == 3
    assert any(e.video_id == "video_000001" and "created_at" in e.message for e in errs)
    assert all(e.payload and e.request_id for e in errs)
    stored = jobs_by_id(engine)["video_000003"]
    assert stored.prompt == "nul\ufffdinside \ufffd surrogate"
    assert stored.raw["prompt"] == stored.prompt


def test_duplicate_ids_in_a_page_keep_the_later_copy(engine: Engine) -> None:
    src = ListSource([job(0, "queued"), job(1), job(0, "in_progress")])
    make(src, engine).sync()
    assert jobs_by_id(engine)["video_000000"].status == "in_progress"
    assert any("duplicate" in e.message for e in errors(engine))


def test_unknown_status_is_stored_reported_once_and_holds_until_stale(engine: Engine) -> None:
    src = ListSource([job(0), job(1, "rendering", extra_key={"a": 1}), job(2)])
    clock = Clock()
    syncer = make(src, engine, clock, stale_after_s=3600)
    syncer.sync()
    clock.advance(60)
    syncer.sync()
    stored = jobs_by_id(engine)["video_000001"]
    assert stored.status == "rendering" and stored.raw["extra_key"] == {"a": 1}
    reports = [e for e in errors(engine) if "unknown status" in e.message]
    assert len(reports) == 1
    assert cursor(engine) == "video_000000"
    clock.advance(3600)
    syncer.sync()
    assert cursor(engine) == "video_000002"  # stale: no longer holds the watermark


def test_stale_jobs_are_refreshed_by_id_and_404_marks_missing(engine: Engine) -> None:
    src = ListSource([job(0), job(1, "in_progress"), job(2), job(3, "queued"), job(4)])
    clock = Clock()
    syncer = make(src, engine, clock, stale_after_s=3600, stale_refresh_s=600)
    syncer.sync()
    clock.advance(3601)
    src.calls.clear()
    syncer.sync()
    assert cursor(engine) == "video_000004"
    src.find("video_000001").update(status="completed", progress=100)
    src.delete("video_000003")
    clock.advance(300)  # not due yet
    src.requests = 0
    syncer.sync()
    assert src.requests == 1
    clock.advance(301)
    syncer.sync()
    mirror = jobs_by_id(engine)
    assert mirror["video_000001"].status == "completed"
    assert mirror["video_000003"].missing_since == clock.now
    assert mirror["video_000003"].status == "queued"  # never deleted, never rewritten
    clock.advance(601)
    src.requests = 0
    syncer.sync()
    assert src.requests == 1  # nothing stale is left open and present


@pytest.mark.parametrize("mode", ["404", "restart"])
def test_vanished_cursor_recovers_with_a_desc_scan(engine: Engine, mode: str) -> None:
    src = ListSource([job(i) for i in range(40)], unknown_after=mode)
    syncer = make(src, engine)
    syncer.sync()
    assert cursor(engine) == "video_000039"
    src.delete("video_000039")
    src.jobs += [job(i) for i in range(40, 65)] + [job(65, "queued")]
    src.calls.clear()
    result = syncer.sync()
    assert result.outcome == "succeeded"
    assert len(jobs_by_id(engine)) == 66
    assert cursor(engine) == "video_000064"
    desc = [c for c in src.calls if c[1] == "desc"]
    assert desc and desc[0][0] is None  # the probe without `after` comes first
    assert len(desc) == 3  # 26 newer jobs + the boundary job, pages of 10
    assert any("cursor video_000039 lost" in e.message for e in errors(engine))
    syncer.sync()
    assert cursor(engine) == "video_000064"


def test_recovery_waits_for_a_job_older_than_the_cursor_second(engine: Engine) -> None:
    same = 1_760_000_500
    src = ListSource(
        [job(0), job(1, created_at=same), job(2, created_at=same), job(3, created_at=same)]
    )
    syncer = make(src, engine, page_size=1)
    syncer.sync()
    assert cursor(engine) == "video_000003"
    src.delete("video_000003")
    src.calls.clear()
    syncer.sync()
    # ties in the cursor's second may be in any order: read until video_000000 (older)
    assert [c for c in src.calls if c[1] == "desc"][-1][0] == "video_000001"
    assert cursor(engine) == "video_000002"


def test_provider_gone_is_reported_and_the_mirror_untouched(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(5)])
    syncer = make(src, engine)
    syncer.sync()
    before = jobs_by_id(engine)
    src.gone = 410
    with pytest.raises(NotServedError):
        syncer.sync()
    assert jobs_by_id(engine) == before
    run = rows(engine, sa.select(sync_runs).order_by(sync_runs.c.id.desc()))[0]
    assert run.outcome == "failed" and run.finished_at is not None
    assert cursor(engine) == "video_000004"
    src.gone = None
    with pytest.raises(NotServedError):  # reconcile must not mark everything missing either
        src.gone = 404
        syncer.reconcile()
    assert all(r.missing_since is None for r in jobs_by_id(engine).values())


def test_repeated_page_stops_the_pass_and_the_source_goes_head_only(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(50)])
    src.loop_at = "video_000019"
    syncer = make(src, engine)
    result = syncer.sync()
    assert result.outcome == "succeeded" and result.head_only is not None
    assert "`after` ignored" in result.head_only
    assert cursor(engine) == "video_000019"  # the last verified page; never past it
    state = rows(engine, sa.select(sync_state))[0]
    assert state.list_mode == "head-only" and "ignores pagination" in state.list_mode_reason
    again = syncer.sync()  # head-only from now on: one head page, the mode said once
    assert again.head_only == result.head_only and again.counts.pages == 1
    said = [e.message for e in rows(engine, sa.select(sync_errors))]
    assert sum("head-only mode from now on" in m for m in said) == 1
    with pytest.raises(PagingError):  # and a full scan refuses to call itself complete
        syncer.backfill()
    assert all(r.missing_since is None for r in jobs_by_id(engine).values())


def test_full_scan_marks_missing_and_a_later_sighting_clears_it(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(30)])
    clock = Clock()
    syncer = make(src, engine, clock)
    syncer.backfill()
    removed = src.find("video_000007")
    src.delete("video_000007")
    clock.advance(60)
    result = syncer.reconcile()
    assert result.marked_missing == 1
    assert jobs_by_id(engine)["video_000007"].missing_since == clock.now
    assert rows(engine, sa.select(sync_state.c.last_full_scan_at))[0][0] == clock.now
    src.jobs.insert(7, removed)
    clock.advance(60)
    syncer.reconcile()
    assert jobs_by_id(engine)["video_000007"].missing_since is None
    assert len(jobs_by_id(engine)) == 30


def test_windowed_provider_never_marks_jobs_out_of_sight(engine: Engine) -> None:
    src = ListSource([job(i, created_at=1_760_000_000 + 600 * i) for i in range(30)])
    clock = Clock()
    syncer = make(src, engine, clock, list_window_s=86400)
    syncer.backfill()
    src.jobs = src.jobs[20:]  # the window slid: the old jobs are out of sight
    src.delete("video_000025")  # this one is really gone
    clock.advance(1000)
    result = syncer.reconcile()
    assert result.marked_missing == 1
    assert jobs_by_id(engine)["video_000025"].missing_since is not None
    assert all(jobs_by_id(engine)[f"video_{i:06d}"].missing_since is None for i in range(20))


def test_backfill_resumes_from_its_checkpoint(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(45)] + [job(45, "queued")])
    clock = Clock()
    syncer = make(src, engine, clock)
    pages = []
    syncer.on_page = lambda counts: pages.append(counts.pages)
    syncer.should_stop = lambda: len(pages) >= 2
    first = syncer.backfill()
    assert first.outcome == "interrupted"
    assert len(jobs_by_id(engine)) == 20
    state = rows(engine, sa.select(sync_state))[0]
    assert state.scan_after_id == "video_000019" and state.scan_started_at == clock.now
    assert state.cursor_id == "video_000019"
    src.delete("video_000003")  # not seen by the first part; stays unseen
    clock.advance(60)
    src.calls.clear()
    syncer.should_stop = lambda: False
    second = syncer.backfill()
    assert second.outcome == "succeeded"
    assert src.calls[0] == ("video_000019", "asc")
    assert len(jobs_by_id(engine)) == 46
    assert jobs_by_id(engine)["video_000003"].missing_since is None  # seen before it left
    assert cursor(engine) == "video_000044"
    state = rows(engine, sa.select(sync_state))[0]
    assert state.scan_started_at is None and state.last_full_scan_at == clock.now


def test_bounded_backfill_only_touches_its_range(engine: Engine) -> None:
    src = ListSource([job(i) for i in range(50)])
    base = datetime.fromtimestamp(1_760_000_000, UTC)
    syncer = make(src, engine)
    result = syncer.backfill(base + timedelta(seconds=10), base + timedelta(seconds=20))
    assert sorted(jobs_by_id(engine)) == [f"video_{i:06d}" for i in range(10, 20)]
    assert result.counts.requests == 3  # stops once past `until`
    syncer.backfill(base + timedelta(seconds=40))  # since only: walks desc from the head
    assert len(jobs_by_id(engine)) == 20


def test_lease_excludes_a_second_writer_until_it_expires(engine: Engine) -> None:
    store = SqlStore(engine)
    t0 = Clock()()  # the syncer below runs at this instant too
    assert store.acquire_lease("s1", "a", 60, t0)
    run = store.start_run("s1", "sync", "a", t0)
    with pytest.raises(LeaseBusyError, match=r"by another process \(a; its lease expires at "):
        store.acquire_lease("s1", "b", 60, t0 + timedelta(seconds=30))
    src = ListSource([job(0)])
    syncer = make(src, engine)
    with pytest.raises(LeaseBusyError):
        syncer.sync()
    assert store.acquire_lease("s1", "b", 60, t0 + timedelta(seconds=61))
    left = rows(engine, sa.select(sync_runs).where(sync_runs.c.id == run))[0]
    assert left.outcome == "interrupted" and left.finished_at is not None


def test_ids_differing_only_in_case_are_distinct_jobs(engine: Engine) -> None:
    src = ListSource([job(0, id="video_abc"), job(1, id="video_ABC")])
    make(src, engine).sync()
    assert set(jobs_by_id(engine)) == {"video_abc", "video_ABC"}


class LongCursors(ListSource):
    """A provider whose cursors are opaque tokens longer than any id column."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__(jobs)
        self.tokens: dict[str, str] = {}

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        page = super().list_page(after=self.tokens.get(after or "", after), order=order,
                                 limit=limit)  # fmt: skip
        if page.last_id is None:
            return page
        token = "c" * 300 + page.last_id
        self.tokens[token] = page.last_id
        return replace(page, last_id=token)


def test_cursors_longer_than_an_id_are_followed_and_kept(engine: Engine) -> None:
    src = LongCursors([job(i) for i in range(45)])
    syncer = make(src, engine)
    assert syncer.sync().counts.inserted == 45
    before = src.requests
    assert syncer.sync().counts.inserted == 0 and src.requests - before == 1
    assert state_row(engine).cursor_after == "c" * 300 + "video_000044"
    stops = iter([False, False, True])
    syncer.should_stop = lambda: next(stops, False)
    assert syncer.backfill().outcome in ("interrupted", "succeeded")
    syncer.should_stop = lambda: False
    result = syncer.backfill()  # resumes from what it could keep; a token is no job id, so
    assert result.outcome == "succeeded" and result.marked_missing == 0  # nothing is marked


def state_row(engine: Engine) -> Any:
    return rows(engine, sa.select(sync_state))[0]


def test_a_list_item_without_a_field_keeps_the_mirrored_value(engine: Engine) -> None:
    """A partial answer in the list erases nothing, and changes the row only by its values."""
    src = ListSource([job(0, "in_progress"), job(1)])
    syncer = make(src, engine)
    syncer.sync()
    for item in src.jobs:
        del item["prompt"]  # a gateway that leaves it out of its list
    assert syncer.sync().counts.updated == 0
    src.find("video_000000").update(status="completed", progress=100)
    result = syncer.sync()
    assert (result.counts.updated, result.counts.transitions) == (1, 1)
    row = jobs_by_id(engine)["video_000000"]
    assert row.status == "completed" and row.prompt == "prompt 0"
    assert row.raw["prompt"] == "prompt 0" and row.raw["status"] == "completed"
