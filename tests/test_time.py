"""Time: the provider's clock and ours disagree, `created_at` ties, jobs open for days.

The world runs on the provider's clock (a FakeClock hours ahead of or behind ours), the sync
pass on our own (another FakeClock, moved in step). The watermark rule (the cursor is the
newest job such that it and every job before it is terminal, or open longer than
`stale_after_s` by OUR clock since we first saw it) and the staleness rule (a stale open job
is re-read by `GET /videos/{id}` every `stale_refresh_s`, never more often, until terminal)
are checked after every pass. Real HTTP (the simulator) and every database backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.api import VideosClient
from ingester.config import Secret, SourceSettings
from ingester.errors import TransientApiError
from ingester.models import sync_state, video_job_transitions, video_jobs
from ingester.simulator import FakeClock, Fault, Simulator, World
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer
from tests.proc import check_audit, check_mirror, figures

KEY = "sk-time-test-8c7b6a59"
T0 = 1_763_000_000.0
HOUR = 3600.0
STALE_AFTER_S = 24 * HOUR
REFRESH_S = 600.0
TERMINAL = ("completed", "failed")


class Clocks:
    """Our clock and the provider's, `skew_s` apart, moved together."""

    def __init__(self, skew_s: float) -> None:
        self.ours = FakeClock(T0)
        self.provider = FakeClock(T0 + skew_s)

    def advance(self, seconds: float) -> None:
        self.ours.advance(seconds)
        self.provider.advance(seconds)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.ours(), UTC)


def make_syncer(sim: Simulator, engine: Engine, clocks: Clocks) -> Syncer:
    source = SourceSettings(name="time", base_url=sim.base_url, api_key=Secret(KEY),
                            page_size=7, stale_after_s=STALE_AFTER_S,
                            stale_refresh_s=REFRESH_S)  # fmt: skip
    return build_syncer(source, SqlStore(engine), owner="time-test", clock=clocks.now,
                        sleep=lambda _s: None).syncer  # fmt: skip


def mirror(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(video_jobs))}


def cursor(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_state.c.cursor_id)).scalar()


def check_watermark(engine: Engine, truth: list[dict[str, Any]], now: datetime, note: str) -> int:
    """The cursor is exactly the watermark: everything up to it terminal or stale (by our
    clock, from first_seen_at), and the job after it open and not stale. Its position."""
    rows, cur = mirror(engine), cursor(engine)
    ids = [j["id"] for j in truth if j["id"] in rows]
    pos = -1 if cur is None else ids.index(cur)

    def holds(vid: str) -> bool:
        row = rows[vid]
        fresh = (now - row.first_seen_at).total_seconds() < STALE_AFTER_S
        return row.status not in TERMINAL and fresh

    assert not any(holds(v) for v in ids[: pos + 1]), f"{note}: the cursor passed a held job"
    if pos + 1 < len(ids):
        assert holds(ids[pos + 1]), f"{note}: the cursor stopped short of the watermark"
    return pos


@pytest.mark.parametrize("skew_h", [-30, 6])
def test_skewed_provider_clock_never_moves_the_cursor_over_an_open_job(
    engine: Engine, skew_h: int
) -> None:
    clocks = Clocks(skew_h * HOUR)
    world = World(clock=clocks.provider, seed=abs(skew_h))
    p0 = clocks.provider()
    world.add_jobs(20, created_at=p0 - 2 * 86_400, spacing_s=600, status="completed")
    (slow,) = world.add_jobs(1, created_at=p0 - 5, queued_s=(60, 60), render_s=(7200, 7200))
    world.add_jobs(10, created_at=p0 - 4, spacing_s=0.3, queued_s=(0, 5), render_s=(10, 60))
    note = f"[provider clock {skew_h:+d} h]"
    with Simulator(world, api_key=KEY) as sim:
        syncer = make_syncer(sim, engine, clocks)
        positions = []
        for step in (0, 120, 600, 1800, 3600, 3600):
            clocks.advance(step)
            world.add_jobs(2, spacing_s=0.5, queued_s=(0, 30), render_s=(30, 90))
            assert syncer.sync().outcome == "succeeded"
            check_mirror(engine, world.truth(), source="time", note=note)
            positions.append(check_watermark(engine, world.truth(), clocks.now(), note))
            if world.get(slow)["status"] not in TERMINAL:
                assert positions[-1] < 20, f"{note}: the cursor passed the open job"
        assert world.get(slow)["status"] == "completed"
    assert positions == sorted(positions), f"{note}: the cursor moved back: {positions}"
    check_audit(engine, note)
    with engine.connect() as conn:
        chain = conn.execute(
            sa.select(video_job_transitions.c.to_status)
            .where(video_job_transitions.c.video_id == slow)
            .order_by(video_job_transitions.c.id)
        ).scalars().all()  # fmt: skip
    assert chain == ["in_progress", "completed"] or chain == ["queued", "in_progress", "completed"]


@pytest.mark.parametrize("skew_h", [0, -48])
def test_job_open_for_days_is_stale_after_a_day_of_our_clock_and_refreshed_by_id(
    engine: Engine, skew_h: int
) -> None:
    clocks = Clocks(skew_h * HOUR)
    world = World(clock=clocks.provider, seed=3)
    p0 = clocks.provider()
    world.add_jobs(10, created_at=p0 - 86_400, spacing_s=60, status="completed")
    (stuck,) = world.add_jobs(1, created_at=p0 - 10, status="completed")
    world.set_status(stuck, "in_progress", progress=40, completed_at=None, expires_at=None)
    world.add_jobs(10, created_at=p0 - 5, spacing_s=0.2, status="completed")
    note = f"[provider clock {skew_h:+d} h]"
    with Simulator(world, api_key=KEY) as sim:
        syncer = make_syncer(sim, engine, clocks)

        def sync_and_count() -> tuple[int, int]:
            sim.reset_log()
            assert syncer.sync().outcome == "succeeded"
            check_mirror(engine, world.truth(), source="time", note=note)
            check_watermark(engine, world.truth(), clocks.now(), note)
            log = sim.requests
            gets = sum(1 for r in log if r.path.endswith("/" + stuck))
            return len(log) - gets, gets

        lists, gets = sync_and_count()
        assert cursor(engine) == world.truth()[9]["id"] and gets == 0, note
        held = []
        for hours in (4, 4, 4, 4, 4, 3):  # a day less an hour: the job still holds the cursor
            clocks.advance(hours * HOUR)
            lists, gets = sync_and_count()
            held.append(cursor(engine) == world.truth()[9]["id"])
            assert gets == 0 and lists == 2, f"{note}: {lists} list requests, {gets} GETs"
        assert all(held), f"{note}: a job younger than stale_after_s stopped holding"
        clocks.advance(HOUR + 1)  # first seen more than a day ago by our clock: stale
        lists, gets = sync_and_count()
        assert cursor(engine) == world.truth()[-1]["id"], f"{note}: stale job still holds"
        assert gets == 1, note
        refreshes, quiet, last_get = 1, 0, clocks.ours()
        for minutes in [4] * 4 + [11] * 3 + [360] * 8:  # two more days, some passes too soon
            clocks.advance(minutes * 60)
            lists, gets = sync_and_count()
            assert lists == 1, f"{note}: an idle pass is one list request, not {lists}"
            due = clocks.ours() - last_get >= REFRESH_S
            assert gets == due, f"{note}: {gets} GETs {clocks.ours() - last_get:.0f}s after one"
            if gets:
                refreshes, last_get = refreshes + 1, clocks.ours()
            else:
                quiet += 1
        assert refreshes >= 11 and quiet >= 2, (note, refreshes, quiet)
        world.set_status(stuck, "completed", progress=100, completed_at=int(clocks.provider()))
        clocks.advance(REFRESH_S + 1)
        lists, gets = sync_and_count()
        assert gets == 1 and mirror(engine)[stuck].status == "completed", note
        clocks.advance(REFRESH_S + 1)
        assert sync_and_count() == (1, 0), f"{note}: a terminal job is refreshed no more"
        assert mirror(engine)[stuck].missing_since is None
    check_audit(engine, note)


@pytest.mark.parametrize("unknown_after", ["404", "400", "restart"])
def test_ties_within_one_second_survive_a_vanished_cursor(
    engine: Engine, unknown_after: str
) -> None:
    clocks = Clocks(0)
    world = World(clock=clocks.provider, seed=17)
    p0 = clocks.provider()
    world.add_jobs(10, created_at=p0 - 100, spacing_s=1, status="completed")
    second = world.add_jobs(20, created_at=p0 - 10, spacing_s=0.04, status="completed")
    assert len({int(world.get(v)["created_at"]) for v in second}) == 1  # all in one second
    assert second != sorted(second)  # ties are not in id order
    note = f"[unknown after: {unknown_after}]"
    with Simulator(world, api_key=KEY, unknown_after=unknown_after) as sim:  # type: ignore[arg-type]
        syncer = make_syncer(sim, engine, clocks)
        assert syncer.sync().outcome == "succeeded"
        assert cursor(engine) == second[-1]
        # the cursor job vanishes; more jobs arrive, some in the very same second
        world.delete(second[-1])
        late = world.add_jobs(6, created_at=p0 - 10 + 0.85, spacing_s=0.02, queued_s=(0, 0),
                              render_s=(30, 30))  # fmt: skip
        world.add_jobs(5, created_at=p0 - 2, spacing_s=0.1, status="failed")
        clocks.advance(5)
        assert syncer.sync().outcome == "succeeded"
        truth = world.truth()
        rows = mirror(engine)
        assert all(v in rows for v in late), f"{note}: a job of the cursor's second was lost"
        check_watermark(engine, truth, clocks.now(), note)
        clocks.advance(60)
        assert syncer.sync().outcome == "succeeded"
        truth = world.truth()
        with engine.connect() as conn:
            extra = set(conn.execute(sa.select(video_jobs.c.id)).scalars()) - {
                j["id"] for j in truth
            }
        assert extra == {second[-1]}, note  # the vanished job stays (absence deletes nothing)
        check_mirror(engine, [*truth, world_row(engine, second[-1])], source="time", note=note)
        assert cursor(engine) == truth[-1]["id"]
    check_audit(engine, note)


def world_row(engine: Engine, vid: str) -> dict[str, Any]:
    """The raw object the mirror keeps for a job the provider no longer lists."""
    return dict(mirror(engine)[vid].raw)


@pytest.mark.parametrize("skew_h", [-3, 3])
def test_retry_after_http_date_is_read_on_the_providers_clock(skew_h: int) -> None:
    """`Retry-After: <date>` with the response's own `Date`: wait what the server meant."""
    world = World(seed=1)
    world.add_jobs(3, created_at=T0, status="completed")
    sleeps: list[float] = []
    provider_now = datetime.now(UTC).timestamp() + skew_h * HOUR
    with Simulator(world, api_key=KEY) as sim:
        date = formatdate(provider_now, usegmt=True)
        until = formatdate(provider_now + 2, usegmt=True)
        sim.faults.push(Fault.error(429, retry_after=until, headers={"Date": date}))
        source = SourceSettings(name="t", base_url=sim.base_url, api_key=Secret(KEY),
                                max_retry_wait_s=60)  # fmt: skip
        with VideosClient(source, sleep=sleeps.append) as client:
            try:
                page = client.list_page(after=None, order="asc", limit=10)
            except TransientApiError as exc:
                raise AssertionError(f"gave up instead of waiting: {exc}") from None
    assert len(page.items) == 3
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 2.0, sleeps
    figures("time", case="retry-after date", skew_h=skew_h, waited_s=sleeps[0])
