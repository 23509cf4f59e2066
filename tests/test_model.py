"""Model-based: random worlds evolve in the simulator; after every pass the mirror is the truth.

Real HTTP (the simulator on loopback and the real client), real databases. The world moves
on an injected clock that the sync pass shares, so lifecycles, staleness and timestamps are
reproducible from the seed. Each seed runs against four providers:

- openai: the provider itself; the mirror equals the truth.
- renamed: a gateway naming the lifecycle `pending` / `processing` / `succeeded`.
- litellm-paged: a gateway that pages, wraps every id and lists only the jobs the key owns;
  the mirror, keyed by the upstream id, equals the truth of the owned jobs.
- litellm: a gateway that ignores pagination (always the 20 newest): head-only mode from the
  first pass on; the mirror equals the truth of every job that was ever on the head page
  (open jobs are re-read by id every pass), and holds nothing else.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import Secret, SourceSettings
from ingester.models import sync_errors, sync_runs, video_job_transitions, video_jobs
from ingester.simulator import (
    FakeClock,
    Profile,
    Simulator,
    World,
    litellm_model_id,
    litellm_wrap,
)
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer

KEY = "sk-model-test-0123456789"
HEAD = 20  # the page a gateway that ignores pagination always serves: the 20 newest


def owned(raw_id: str) -> bool:
    """The jobs the test's key owns behind a gateway that filters by owner: about two in three."""
    return zlib.crc32(raw_id.encode()) % 3 != 0


@dataclass(frozen=True)
class Case:
    """A provider the mirror is kept from."""

    profile: Profile = "openai"
    status_names: dict[str, str] | None = None
    visible: Callable[[str], bool] | None = None  # the jobs listed (litellm-paged)

    def name(self, status: str) -> str:
        """A lifecycle status as this provider names it."""
        return (self.status_names or {}).get(status, status)

    def served(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as the mirror must hold it in `raw`: with the id it was listed under."""
        if self.profile in ("litellm", "litellm-paged"):
            return {**job, "id": litellm_wrap(job["id"], litellm_model_id(job))}
        return job


CASES = {
    "openai": Case(),
    "renamed": Case(
        status_names={"queued": "pending", "in_progress": "processing", "completed": "succeeded"}
    ),
    "litellm-paged": Case("litellm-paged", visible=owned),
    "litellm": Case("litellm"),
}


def syncer_for(
    case: Case, sim: Simulator, engine: Engine, clock: FakeClock, page_size: int
) -> Syncer:
    provider = "litellm" if case.profile.startswith("litellm") else "openai"
    source = SourceSettings(
        name="model", provider=provider, base_url=sim.base_url, api_key=Secret(KEY),
        page_size=page_size, stale_after_s=6 * 3600, stale_refresh_s=600,
    )  # fmt: skip
    return build_syncer(
        source, SqlStore(engine), owner="model-test", sleep=lambda _s: None,
        clock=lambda: datetime.fromtimestamp(clock(), UTC),
    ).syncer  # fmt: skip


def assert_mirror_is_truth(
    engine: Engine, case: Case, truth: list[dict[str, Any]], may_hold: set[str]
) -> None:
    """Every job of `truth` is mirrored exactly; the mirror holds nothing outside `may_hold`."""
    with engine.connect() as conn:
        mirror = {r.id: r for r in conn.execute(sa.select(video_jobs))}
        chains: dict[str, list[Any]] = {}
        t = video_job_transitions.c
        for r in conn.execute(sa.select(video_job_transitions).order_by(t.id)):
            chains.setdefault(r.video_id, []).append(r)
    for job in truth:
        row = mirror.get(job["id"])
        assert row is not None, f"{job['id']} is not mirrored"
        raw = dict(row.raw)
        if case.profile == "litellm" and "usage" in raw:
            assert raw.pop("usage") is None  # what its by-id answer adds
        assert raw == case.served(job)
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
    assert set(mirror) <= may_hold, "a job the provider never listed is mirrored"
    for vid, chain in chains.items():
        assert chain[0].from_status is None, f"{vid}: first transition must be a first sighting"
        for prev, nxt in itertools.pairwise(chain):
            assert nxt.from_status == prev.to_status, f"{vid}: broken chain"
            assert nxt.from_status != nxt.to_status, f"{vid}: transition without a change"
        assert chain[-1].to_status == mirror[vid].status, f"{vid}: chain ends elsewhere"
    assert set(chains) == set(mirror)


def gaps(engine: Engine) -> int:
    """How many "possible gap" errors were recorded."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(sync_errors.c.message.like("possible gap%"))
        return int(conn.execute(query).scalar_one())


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [2, 5, 9])  # page sizes 3, 10, 100
def test_random_lifecycles_converge_pass_after_pass(engine: Engine, case: str, seed: int) -> None:
    rng = random.Random(seed)
    c = CASES[case]
    clock = FakeClock(1_763_000_000.0)
    world = World(clock=clock, seed=7, status_names=c.status_names)
    head_only = c.profile == "litellm"
    with Simulator(world, api_key=KEY, profile=c.profile, visible=c.visible) as sim:
        page_size = rng.choice([3, 7, 10, 100])
        syncer = syncer_for(c, sim, engine, clock, page_size)
        world.add_jobs(40, created_at=clock() - 86_400, spacing_s=300, status="completed")
        deleted: set[str] = set()
        ever: set[str] = set()  # every job the head page showed (head-only)
        want_gaps = 0
        open_statuses = (c.name("queued"), c.name("in_progress"))

        def sync(first: bool = False) -> Any:
            """One pass; then the mirror is the truth of what the provider lets us see."""
            nonlocal want_gaps
            truth = world.truth()
            head = {j["id"] for j in truth[-HEAD:]}
            if head_only and not first and len(truth) > HEAD and not head & ever:
                want_gaps += 1  # none of the head was seen before: jobs may have been missed
            ever.update(head)
            result = syncer.sync()
            assert result.outcome == "succeeded"
            assert (result.head_only is not None) == head_only, result.head_only
            if head_only:
                seen = [j for j in truth if j["id"] in ever]
                assert_mirror_is_truth(engine, c, seen, ever)
                assert gaps(engine) == want_gaps
            else:
                visible = [j for j in truth if c.visible is None or c.visible(j["id"])]
                assert_mirror_is_truth(engine, c, visible, {j["id"] for j in visible} | deleted)
            return result

        for round_ in range(8):
            for _ in range(rng.randrange(0, 4)):
                world.add_jobs(
                    rng.randrange(1, 15),
                    spacing_s=rng.choice([0, 0.4, 2]),  # ties within a second included
                    queued_s=(0, 120), render_s=(10, 600), fail_rate=0.3,
                )  # fmt: skip
                clock.advance(rng.uniform(0, 30))
            truth = world.truth()
            open_jobs = [j["id"] for j in truth if j["status"] in open_statuses]
            if open_jobs and rng.random() < 0.4:
                world.set_status(
                    rng.choice(open_jobs), c.name("in_progress"), progress=rng.randrange(100)
                )
            if rng.random() < 0.3:
                victim = rng.choice(truth)["id"]
                world.delete(victim)
                deleted.add(victim)
            clock.advance(rng.uniform(10, 400))
            sync(first=round_ == 0)
        # frozen in_progress jobs finish; a long quiet spell completes everything else
        for job in world.truth():
            if job["status"] == c.name("in_progress"):
                world.set_status(job["id"], c.name("completed"), progress=100)
        clock.advance(3600)
        sync()
        before = sim.request_count
        again = sync()  # nothing new, nothing open: nothing written
        requests = sim.request_count - before
    counts = again.counts
    assert (counts.inserted, counts.updated, counts.transitions) == (0, 0, 0)
    # the page after the cursor, or the head; with a filtering gateway too: the pass asks
    # from the last page it passed whole, not from its newest own job (DESIGN.md §2.2)
    assert requests == 1
    with engine.connect() as conn:
        outcomes = conn.execute(sa.select(sync_runs.c.outcome)).scalars().all()
        said = conn.execute(
            sa.select(sa.func.count()).where(sync_errors.c.message.like("%head-only mode from%"))
        ).scalar_one()
    assert set(outcomes) == {"succeeded"}
    assert said == (1 if head_only else 0)  # said once, when the mode began
