"""Model-based: random worlds evolve in the simulator; after every pass the mirror is the truth.

Real HTTP (the simulator on loopback and the real client), real databases. The world moves
on an injected clock that the sync pass shares, so lifecycles, staleness and timestamps are
reproducible from the seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import Secret, SourceSettings
from ingester.models import sync_runs, video_job_transitions, video_jobs
from ingester.simulator import FakeClock, Simulator, World
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer

KEY = "sk-model-test-0123456789"


@pytest.fixture
def world_clock() -> FakeClock:
    return FakeClock(1_763_000_000.0)


@pytest.fixture
def sim(world_clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(World(clock=world_clock, seed=7), api_key=KEY) as s:
        yield s


def syncer_for(sim: Simulator, engine: Engine, clock: FakeClock, page_size: int) -> Syncer:
    source = SourceSettings(
        name="model", base_url=sim.base_url, api_key=Secret(KEY), page_size=page_size,
        stale_after_s=6 * 3600, stale_refresh_s=600,
    )  # fmt: skip
    return build_syncer(
        source, SqlStore(engine), owner="model-test", sleep=lambda _s: None,
        clock=lambda: datetime.fromtimestamp(clock(), UTC),
    ).syncer  # fmt: skip


def assert_mirror_is_truth(engine: Engine, truth: list[dict[str, Any]], deleted: set[str]) -> None:
    with engine.connect() as conn:
        mirror = {r.id: r for r in conn.execute(sa.select(video_jobs))}
        chains: dict[str, list[Any]] = {}
        t = video_job_transitions.c
        for r in conn.execute(sa.select(video_job_transitions).order_by(t.id)):
            chains.setdefault(r.video_id, []).append(r)
    for job in truth:
        row = mirror.get(job["id"])
        assert row is not None, f"{job['id']} is not mirrored"
        assert row.raw == job
        assert row.status == job["status"]
        assert row.progress == job["progress"]
        assert row.model == job["model"] and row.size == job["size"]
        assert row.seconds == job["seconds"] and row.prompt == job["prompt"]
        assert row.created_at == datetime.fromtimestamp(job["created_at"], UTC)
        for key in ("completed_at", "expires_at"):
            expect = job[key] and datetime.fromtimestamp(job[key], UTC)
            assert getattr(row, key) == expect
        assert row.error_code == (job["error"] or {}).get("code")
        assert row.error_message == (job["error"] or {}).get("message")
        assert row.missing_since is None
    assert set(mirror) - {j["id"] for j in truth} <= deleted  # nothing invented
    for vid, chain in chains.items():
        assert chain[0].from_status is None, f"{vid}: first transition must be a first sighting"
        for prev, nxt in itertools.pairwise(chain):
            assert nxt.from_status == prev.to_status, f"{vid}: broken chain"
            assert nxt.from_status != nxt.to_status, f"{vid}: transition without a change"
        assert chain[-1].to_status == mirror[vid].status, f"{vid}: chain ends elsewhere"
    assert set(chains) == set(mirror)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_lifecycles_converge_pass_after_pass(
    engine: Engine, sim: Simulator, world_clock: FakeClock, seed: int
) -> None:
    rng = random.Random(seed)
    world = sim.world
    syncer = syncer_for(sim, engine, world_clock, page_size=rng.choice([3, 7, 10, 100]))
    world.add_jobs(40, created_at=world_clock() - 86_400, spacing_s=300, status="completed")
    deleted: set[str] = set()
    for _round in range(8):
        for _ in range(rng.randrange(0, 4)):
            world.add_jobs(
                rng.randrange(1, 15),
                spacing_s=rng.choice([0, 0.4, 2]),  # ties within a second included
                queued_s=(0, 120), render_s=(10, 600), fail_rate=0.3,
            )  # fmt: skip
            world_clock.advance(rng.uniform(0, 30))
        truth = world.truth()
        open_jobs = [j["id"] for j in truth if j["status"] in ("queued", "in_progress")]
        if open_jobs and rng.random() < 0.4:
            world.set_status(rng.choice(open_jobs), "processing", progress=rng.randrange(100))
        if rng.random() < 0.3:
            victim = rng.choice(truth)["id"]
            world.delete(victim)
            deleted.add(victim)
        world_clock.advance(rng.uniform(10, 400))
        result = syncer.sync()
        assert result.outcome == "succeeded"
        assert_mirror_is_truth(engine, world.truth(), deleted)
    # frozen "processing" jobs finish; a long quiet spell completes everything else
    for job in world.truth():
        if job["status"] == "processing":
            world.set_status(job["id"], "completed", progress=100)
    world_clock.advance(3600)
    syncer.sync()
    assert_mirror_is_truth(engine, world.truth(), deleted)
    before = sim.request_count
    again = syncer.sync()  # nothing new, nothing open: one request, nothing written
    assert sim.request_count - before == 1
    c = again.counts
    assert (c.inserted, c.updated, c.transitions) == (0, 0, 0)
    with engine.connect() as conn:
        outcomes = conn.execute(sa.select(sync_runs.c.outcome)).scalars().all()
    assert set(outcomes) == {"succeeded"}
