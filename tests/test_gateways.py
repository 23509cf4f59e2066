"""Gateways (issue 11): each item of its "What to build", over real HTTP, on every backend.

The simulator's profiles stand for the gateways of DESIGN.md §1a (`litellm`: LiteLLM 1.110.2,
which ignores limit/order/after and wraps ids; `litellm-paged`: newer LiteLLM, paged, with
jobs of other owners dropped from pages; `window`: the last 24 h only). Syncers are built as
production builds them: a `VideosClient` per chain (full scans walk from both ends), a
`SqlStore` on SQLite, PostgreSQL and MariaDB. The world and the passes share one fake clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from ingester import status
from ingester.api import VideosClient
from ingester.config import Secret, SourceSettings, load_settings
from ingester.errors import ApiError, PagingError
from ingester.metrics import Metrics
from ingester.models import sync_errors, sync_state, video_job_transitions, video_jobs
from ingester.protocols import ErrorBuffer
from ingester.simulator import FakeClock, Fault, Profile, Simulator, World, litellm_unwrap
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer
from tests.proc import INGESTER, clean_env

NOW = float(int(time.time()))  # near real time: the CLI's passes run on the real clock
KEY = "sk-gw-test-5e0c1a"
LITELLM_HEADER = (("custom-llm-provider", "openai"),)
HOUR = 3600.0
DAY = 86400.0
LONG = (1e6, 1e6)  # a render that does not end while the test runs
ODD_MODEL = "veo~3.?"  # LiteLLM-wrapped ids of this model hold `+`, `/` and `=`

Serve = Callable[..., Simulator]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start simulators (several may serve one world); all stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(world: World, profile: Profile = "openai", **kw: Any) -> Simulator:
            return stack.enter_context(Simulator(world, profile=profile, api_key=KEY, **kw))

        yield start


def syncer(sim: Simulator, engine: Engine, clock: FakeClock, **settings: Any) -> Syncer:
    """A syncer of source "gw" on `sim`, wired as the CLI wires it (two clients)."""
    settings.setdefault("page_size", 100)
    if sim.profile.startswith("litellm"):
        settings.setdefault("provider", "litellm")
    source = SourceSettings(name="gw", base_url=sim.base_url, api_key=Secret(KEY), **settings)
    return build_syncer(
        source, SqlStore(engine), owner="gw-test", sleep=lambda _s: None,
        clock=lambda: datetime.fromtimestamp(clock(), UTC),
    ).syncer  # fmt: skip


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(video_jobs))}


def errors_with(engine: Engine, text: str) -> list[str]:
    with engine.connect() as conn:
        messages = conn.execute(sa.select(sync_errors.c.message)).scalars().all()
    return [m for m in messages if text in m]


def state(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_state).where(sync_state.c.source == "gw")).one()


def list_calls(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.path == f"{sim.prefix}/videos"]


def by_id_calls(sim: Simulator) -> list[str]:
    """The ids read by `GET /videos/{id}`, as sent (percent-encoded)."""
    base = f"{sim.prefix}/videos/"
    return [r.path[len(base) :] for r in sim.requests if r.path.startswith(base)]


def assert_one_row_per_job(engine: Engine, world: World) -> None:
    """Every live job once under its upstream id, current, never missing; clean chains."""
    truth = {j["id"]: j for j in world.truth()}
    mirror = rows(engine)
    assert set(mirror) == set(truth)
    for vid, job in truth.items():
        row = mirror[vid]
        assert (row.status, row.progress, row.missing_since) == (job["status"], job["progress"],
                                                                 None), vid  # fmt: skip
        assert row.prompt == job["prompt"] and row.raw["prompt"] == job["prompt"]
    t = video_job_transitions.c
    with engine.connect() as conn:
        chains: dict[str, list[Any]] = {}
        for r in conn.execute(sa.select(video_job_transitions).order_by(t.id)):
            chains.setdefault(r.video_id, []).append(r)
    assert set(chains) == set(truth)
    for vid, chain in chains.items():
        assert chain[0].from_status is None
        for prev, nxt in itertools.pairwise(chain):
            assert (nxt.from_status, nxt.from_status != nxt.to_status) == (prev.to_status, True)
        assert chain[-1].to_status == mirror[vid].status


def cli(*args: str, url: str, base_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script through the litellm preset, on the test's database."""
    values = dict(INGESTER_DATABASE_URL=url, OPENAI_API_KEY=KEY, OPENAI_BASE_URL=base_url,
                  INGESTER_PROVIDER="litellm", INGESTER_SOURCE="gw", **env)  # fmt: skip
    return subprocess.run([INGESTER, *args], env=clean_env(**values), capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# --- 1. paging verified, never trusted ----------------------------------------------------------


@pytest.mark.parametrize(
    ("default_order", "served", "page_size", "ignored"),
    [
        ("desc", 20, 100, "`order` ignored"),  # LiteLLM 1.110.2: the 20 newest, whatever asked
        ("asc", 20, 100, "`after` ignored"),  # the same oldest page again and again
        ("desc", 50, 20, "`limit` ignored"),
    ],
)
def test_ignored_paging_is_detected_at_once_recorded_once_and_shown(
    engine: Engine, serve: Serve, clock: FakeClock,
    default_order: str, served: int, page_size: int, ignored: str,
) -> None:  # fmt: skip
    world = World(clock=clock, seed=1)
    world.add_jobs(250, created_at=NOW - 1000, status="completed")
    sim = serve(world, "litellm", default_order=default_order, default_limit=served)
    s = syncer(sim, engine, clock, page_size=page_size)
    results = []
    for n in range(3):
        sim.reset_log()
        results.append(s.sync())
        assert results[-1].outcome == "succeeded"
        # the first pass gives up within its first two pages (plus the head); later ones
        # read the head only
        assert len(list_calls(sim)) <= (3 if n == 0 else 1)
        clock.advance(60)
    reason = results[0].head_only
    assert reason and "ignores pagination" in reason and ignored in reason
    assert f"only its newest {served} jobs are visible" in reason
    assert all(r.head_only == reason for r in results)
    assert len(errors_with(engine, "ignores pagination")) == 1
    assert len(rows(engine)) == served
    # `ingester status`, text and JSON
    report = status.collect(engine, "gw")
    (src,) = report["sources"]
    assert (src["list_mode"], src["list_mode_reason"]) == ("head-only", reason)
    assert json.loads(json.dumps(report))["sources"][0]["list_mode"] == "head-only"
    text = status.render(report)
    assert "mode: head-only since" in text and reason in text
    # /metrics: one series, labelled with the reason; gone once the source is paged again
    metrics = Metrics(max_age_s=3600)

    def head_only() -> dict[tuple[str, str], float]:
        families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
        fam = next(f for f in families if f.name == "ingester_head_only")
        return {(x.labels["source"], x.labels["reason"]): x.value for x in fam.samples}

    for r in results:
        metrics.record_pass("gw", r)
    assert head_only() == {("gw", reason): 1.0}
    metrics.record_pass("gw", dataclasses.replace(results[-1], head_only=None))
    assert head_only() == {("gw", ""): 0.0}


# --- 2. a full scan is complete only when proven complete ---------------------------------------


def test_the_issues_scenario_sync_exits_0_backfill_refuses_and_marks_nothing(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    """250 jobs mirrored from the provider, then read through LiteLLM 1.110.2 (the issue)."""
    world = World(clock=clock, seed=2)
    world.add_jobs(240, created_at=NOW - HOUR, spacing_s=10, status="completed")
    world.add_jobs(10, created_at=NOW - 60, render_s=LONG)
    plain, llm = serve(world), serve(world, "litellm")
    assert syncer(plain, engine, clock).sync().outcome == "succeeded"
    before = rows(engine)
    assert len(before) == 250

    synced = cli("sync", url=url_of(engine), base_url=llm.base_url)
    assert synced.returncode == 0, synced.stderr
    assert "head-only mode: this gateway ignores pagination" in synced.stdout
    refused = cli("backfill", url=url_of(engine), base_url=llm.base_url)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("ingester: error: this gateway ignores pagination"), line
    assert "nothing was marked missing" in line and "Traceback" not in refused.stdout

    with pytest.raises(PagingError, match="cannot be proven complete"):
        syncer(llm, engine, clock).backfill()
    after = rows(engine)
    assert set(after) == set(before)  # no row under a wrapped id
    assert all(r.missing_since is None for r in after.values())
    st = state(engine)
    assert st.last_full_scan_at is None and st.scan_started_at is None
    assert len(errors_with(engine, "head-only mode from now on")) == 1


@pytest.mark.parametrize("gateway", ["window", "window-configured", "forgets-oldest"])
def test_a_complete_scan_marks_missing_only_within_the_span_it_listed(
    engine: Engine, serve: Serve, clock: FakeClock, gateway: str
) -> None:
    world = World(clock=clock, seed=3)
    old = world.add_jobs(40, created_at=NOW - 3 * DAY, spacing_s=1800, status="completed")
    recent = world.add_jobs(40, created_at=NOW - 20 * HOUR, spacing_s=1200, status="completed")
    assert syncer(serve(world), engine, clock).sync().outcome == "succeeded"
    assert len(rows(engine)) == 80
    clock.advance(600)
    world.delete(recent[20])  # deleted in the middle of what the gateway lists
    if gateway == "forgets-oldest":
        for vid in old:
            world.delete(vid)
        sim, settings = serve(world), {}
    else:
        sim = serve(world, "window")
        settings = {"list_window_s": DAY} if gateway == "window-configured" else {}
    result = syncer(sim, engine, clock, page_size=7, **settings).backfill()
    assert result.outcome == "succeeded" and result.marked_missing == 1
    missing = {vid for vid, r in rows(engine).items() if r.missing_since is not None}
    assert missing == {recent[20]}
    assert state(engine).last_full_scan_at is not None


# --- 3. head-only mode --------------------------------------------------------------------------


def test_head_only_mode_keeps_the_newest_and_every_open_job_current(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=4)
    world.add_jobs(100, created_at=NOW - 1000, status="completed")
    opened = world.add_jobs(10, created_at=NOW - 100, queued_s=(0, 0), render_s=(900, 1000))
    sim = serve(world, "litellm")
    s = syncer(sim, engine, clock)

    def current() -> None:
        mirror = rows(engine)
        for vid, row in mirror.items():
            job = world.get(vid)
            assert (row.status, row.progress, row.prompt) == (job["status"], job["progress"],
                                                              job["prompt"]), vid  # fmt: skip

    assert s.sync().head_only  # the head: the 10 open jobs and 10 finished ones
    assert set(opened) <= set(rows(engine))
    current()
    gap = "possible gap"
    assert not errors_with(engine, gap)  # the first pass had nothing to connect to

    world.add_jobs(15, created_at=NOW - 50, status="completed")
    clock.advance(10)
    sim.reset_log()
    assert s.sync().outcome == "succeeded"
    # the 15 new jobs pushed the 5 oldest open ones off the head: each is read by id, once
    assert sorted(by_id_calls(sim)) == sorted(opened[:5])
    current()
    assert not errors_with(engine, gap)  # 5 of the head were mirrored already

    clock.advance(2000)  # every open job has finished
    new = world.add_jobs(25, created_at=NOW + 100, status="completed")
    sim.reset_log()
    result = s.sync()
    assert result.outcome == "succeeded" and result.head_only
    assert sorted(by_id_calls(sim)) == sorted(opened)
    current()
    assert {world.get(v)["status"] for v in opened} <= {"completed", "failed"}
    assert set(new[5:]) <= set(rows(engine)) and not set(new[:5]) & set(rows(engine))
    (msg,) = errors_with(engine, gap)
    assert "shorten the sync interval" in msg
    world.add_jobs(5, created_at=NOW + 200, status="completed")
    assert s.sync().outcome == "succeeded"
    assert len(errors_with(engine, gap)) == 1  # the head held mirrored jobs again


# --- 4. following the cursor the provider gives -------------------------------------------------


def test_the_cursor_is_followed_through_empty_pages(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=5)
    ids = world.add_jobs(200, created_at=NOW - 1000, status="completed")
    mine = set(ids[::17])  # most pages of 10 hold no job of this key's owner

    sim = serve(world, "litellm-paged", visible=lambda raw: raw in mine)
    s = syncer(sim, engine, clock, page_size=10)
    result = s.sync()
    assert result.outcome == "succeeded" and not result.head_only
    assert set(rows(engine)) == mine
    assert len(list_calls(sim)) == 20
    more = world.add_jobs(40, created_at=NOW, status="completed")
    mine |= set(more[3::9])
    assert s.sync().outcome == "succeeded"
    assert set(rows(engine)) == mine
    assert state(engine).list_mode is None
    # a full scan from both ends goes through them too and completes, but a filtered list
    # proves nothing about the jobs it does not show: none is marked missing, and it says so
    gone = ids[17 * 5]
    world.delete(gone)
    clock.advance(60)
    result = s.backfill()
    assert result.outcome == "succeeded" and result.marked_missing == 0
    assert all(r.missing_since is None for r in rows(engine).values())
    assert state(engine).last_full_scan_at is not None
    said = errors_with(engine, "the list is filtered")
    assert len(said) == 1 and "marks no job missing" in said[0]


def test_a_key_that_sees_a_part_of_the_list_marks_nothing_missing(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    """Mirrored directly, then through newer LiteLLM with a non-admin key: no false alarm."""
    world = World(clock=clock, seed=9)
    ids = world.add_jobs(100, created_at=NOW - 1000, status="completed")
    direct = syncer(serve(world, "openai"), engine, clock, page_size=10)
    assert direct.backfill().outcome == "succeeded" and len(rows(engine)) == 100
    mine = set(ids[::3])
    gateway = syncer(serve(world, "litellm-paged", visible=lambda raw: raw in mine), engine,
                     clock, page_size=10)  # fmt: skip
    clock.advance(60)
    result = gateway.backfill()
    assert result.outcome == "succeeded" and result.marked_missing == 0
    assert len(rows(engine)) == 100 and all(r.missing_since is None for r in rows(engine).values())


def test_a_repeated_cursor_stops_the_pass(engine: Engine, serve: Serve, clock: FakeClock) -> None:
    world = World(clock=clock, seed=6)
    world.add_jobs(30, created_at=NOW - 1000, status="completed")
    sim = serve(world)
    empty = {"object": "list", "data": [], "first_id": None, "last_id": "video_x", "has_more": True}
    sim.faults.push(Fault.raw(json.dumps(empty).encode()), count=2, path_contains="/videos?")
    result = syncer(sim, engine, clock).sync()
    assert result.outcome == "succeeded"
    assert result.head_only and "gave the cursor video_x twice" in result.head_only
    assert len(list_calls(sim)) == 3  # two empty pages, then the head
    assert len(rows(engine)) == 30


# --- 5. one row per job across gateways ---------------------------------------------------------


def test_one_row_per_job_across_provider_and_gateways(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=7)
    odd = "video_a+b/c=d"  # an opaque upstream id
    template = World(clock=clock)
    template.add_jobs(1, created_at=NOW - 5000, status="completed", model=ODD_MODEL)
    world.add_raw({**template.truth()[0], "id": odd, "status": "in_progress", "progress": 5,
                   "completed_at": None}, created_at=NOW - 5000)  # fmt: skip
    world.add_jobs(60, created_at=NOW - 4000, spacing_s=30, status="completed", model=ODD_MODEL)
    world.add_jobs(8, created_at=NOW - 100, model=ODD_MODEL, render_s=(200, 600))
    plain, paged, llm = serve(world), serve(world, "litellm-paged"), serve(world, "litellm")

    assert syncer(plain, engine, clock, page_size=7).sync().outcome == "succeeded"
    assert_one_row_per_job(engine, world)

    clock.advance(30)
    result = syncer(paged, engine, clock, page_size=7).sync()
    assert result.outcome == "succeeded" and not result.head_only
    assert_one_row_per_job(engine, world)
    afters = [r.query["after"] for r in list_calls(paged) if "after" in r.query]
    assert len(afters) >= 9  # the open `odd` job holds the cursor at the start
    # sent percent-encoded: a bare `+` would have arrived as a space
    assert all(litellm_unwrap(a) in rows(engine) for a in afters[1:])
    assert all(c in "".join(afters) for c in "+/=")

    clock.advance(30)
    result = syncer(llm, engine, clock, page_size=7).sync()
    assert result.head_only
    assert_one_row_per_job(engine, world)
    assert quote(odd, safe="") in by_id_calls(llm) and "%2B" in quote(odd, safe="")
    assert all(r.status == 200 for r in llm.requests)

    clock.advance(30)
    assert syncer(plain, engine, clock, page_size=7).sync().head_only  # until a scan proves
    assert_one_row_per_job(engine, world)
    back = syncer(plain, engine, clock, page_size=7)
    result = back.backfill()
    assert result.outcome == "succeeded" and result.marked_missing == 0
    assert state(engine).list_mode is None
    clock.advance(700)  # every lifecycle job has ended
    result = back.sync()
    assert result.outcome == "succeeded" and not result.head_only
    assert_one_row_per_job(engine, world)


# --- 6. partial objects never erase -------------------------------------------------------------


def test_back_from_a_paged_gateway_the_provider_gets_the_upstream_cursor(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    """The cursor was listed wrapped; the provider rejects that form: no cursor is lost."""
    world = World(clock=clock, seed=11)
    world.add_jobs(30, created_at=NOW - 1000, status="completed")
    plain, paged = serve(world), serve(world, "litellm-paged")
    assert syncer(plain, engine, clock, page_size=7).sync().outcome == "succeeded"
    world.add_jobs(5, created_at=NOW - 20, status="completed")  # the cursor ends on these
    assert syncer(paged, engine, clock, page_size=7).sync().outcome == "succeeded"
    assert state(engine).cursor_id == world.truth()[-1]["id"]
    world.add_jobs(3, created_at=NOW - 10, status="completed")
    result = syncer(plain, engine, clock, page_size=7).sync()
    assert result.outcome == "succeeded" and result.counts.inserted == 3
    assert errors_with(engine, "lost") == []
    assert not [r for r in list_calls(plain) if r.query.get("order") == "desc"]  # no recovery
    assert_one_row_per_job(engine, world)


def test_a_partial_by_id_answer_keeps_the_prompt_and_changes_nothing_unchanged(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=8)
    opened = world.add_jobs(5, created_at=NOW - 2000, queued_s=(0, 0), render_s=(5000, 5000))
    world.add_jobs(30, created_at=NOW - 1000, status="completed", prompt="a fox on a bicycle")
    assert syncer(serve(world), engine, clock).sync().outcome == "succeeded"
    llm = serve(world, "litellm")
    s = syncer(llm, engine, clock)

    first = s.sync()  # the head's ids come wrapped: those rows change form once
    assert first.head_only and sorted(by_id_calls(llm)) == sorted(opened)
    assert_one_row_per_job(engine, world)
    clock.advance(100)  # the open jobs move on: their by-id answers (no prompt) are written
    llm.reset_log()
    moved = s.sync()
    assert sorted(by_id_calls(llm)) == sorted(opened)
    assert (moved.counts.updated, moved.counts.inserted) == (5, 0)
    assert_one_row_per_job(engine, world)
    for vid in opened:
        row = rows(engine)[vid]
        assert row.prompt == world.get(vid)["prompt"] and "prompt" in row.raw
    for _ in range(2):
        again = s.sync()
        c = again.counts
        assert (c.updated, c.inserted, c.transitions) == (0, 0, 0)
    assert_one_row_per_job(engine, world)


# --- 7. today's gateway statuses by default -----------------------------------------------------


def test_the_gateways_statuses_are_known_by_default(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    names = {"queued": "pending", "in_progress": "processing", "completed": "succeeded",
             "failed": "expired"}  # fmt: skip
    world = World(clock=clock, seed=9, status_names=names)
    ids = world.add_jobs(12, created_at=NOW - 1000, spacing_s=10, status="completed")
    world.set_status(ids[1], "cancelled")
    world.set_status(ids[2], "expired")
    opened = ["pending", "processing", "preprocessing", "running"]
    for k, open_status in enumerate(opened, 4):
        world.set_status(ids[k], open_status)
    lifecycle = world.add_jobs(2, created_at=NOW - 5, queued_s=(10, 10), render_s=(100, 100))
    s = syncer(serve(world), engine, clock)
    assert s.sync().outcome == "succeeded"
    assert state(engine).cursor_id == ids[3]  # succeeded, cancelled, expired pass; pending holds
    assert [rows(engine)[v].status for v in ids[4:8]] == opened
    # each open job is read again every pass until it is terminal
    finals = ["cancelled", "succeeded", "expired", "completed"]
    for k, final in enumerate(finals, 4):
        world.set_status(ids[7], "running", progress=10 * k)
        world.set_status(ids[k], final)
        assert s.sync().outcome == "succeeded"
        assert rows(engine)[ids[k]].status == final
        if k < 7:
            assert state(engine).cursor_id == ids[k]
            assert rows(engine)[ids[7]].progress == 10 * k
    assert state(engine).cursor_id == ids[-1]  # the lifecycle jobs hold it, `pending`
    assert [rows(engine)[v].status for v in lifecycle] == ["pending"] * 2
    clock.advance(50)
    s.sync()
    assert [rows(engine)[v].status for v in lifecycle] == ["processing"] * 2
    clock.advance(100)
    s.sync()
    assert [rows(engine)[v].status for v in lifecycle] == ["succeeded"] * 2
    assert state(engine).cursor_id == lifecycle[-1]
    assert not errors_with(engine, "unknown status")


def test_an_unknown_status_is_stored_reported_once_and_open_until_stale(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=10)
    ids = world.add_jobs(10, created_at=NOW - 1000, spacing_s=10, status="completed")
    world.set_status(ids[3], "rendering")
    sim = serve(world)
    s = syncer(sim, engine, clock, stale_after_s=HOUR, stale_refresh_s=600)
    for _ in range(2):
        assert s.sync().outcome == "succeeded"
        assert rows(engine)[ids[3]].status == "rendering"
        assert state(engine).cursor_id == ids[2]
        clock.advance(60)
    clock.advance(HOUR)  # stale: it no longer holds the watermark
    assert s.sync().outcome == "succeeded"
    assert state(engine).cursor_id == ids[-1]
    world.set_status(ids[3], "completed")
    clock.advance(601)
    sim.reset_log()
    s.sync()
    assert by_id_calls(sim) == [ids[3]]  # behind the cursor: read by id, as it is due
    assert rows(engine)[ids[3]].status == "completed"
    assert len(errors_with(engine, "unknown status 'rendering'")) == 1


def test_statuses_configured_per_source_still_win(
    engine: Engine, serve: Serve, clock: FakeClock
) -> None:
    world = World(clock=clock, seed=11)
    ids = world.add_jobs(6, created_at=NOW - 1000, spacing_s=10, status="completed")
    world.set_status(ids[1], "running")
    world.set_status(ids[3], "expired")
    s = syncer(serve(world), engine, clock, open_statuses=("queued", "in_progress", "expired"),
               terminal_statuses=("completed", "failed", "running"))  # fmt: skip
    assert s.sync().outcome == "succeeded"
    assert state(engine).cursor_id == ids[2]  # `running` passes, `expired` holds
    assert not errors_with(engine, "unknown status")


# --- 8. the litellm provider preset (no database) -----------------------------------------------


def test_the_litellm_preset_sends_its_header_unless_configured_otherwise(
    serve: Serve, clock: FakeClock, tmp_path: Path
) -> None:
    world = World(clock=clock)
    world.add_jobs(3, created_at=NOW - 10, status="completed")
    sim = serve(world, "litellm")

    def listed(source: SourceSettings) -> int:
        client = VideosClient(source, on_error=ErrorBuffer(), sleep=lambda _s: None)
        return len(client.list_page(after=None, order="desc", limit=20).items)

    env = {"INGESTER_PROVIDER": "litellm", "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": KEY}
    (from_env,) = load_settings(env=env).sources
    assert from_env.provider == "litellm" and listed(from_env) == 3
    toml = tmp_path / "ingester.toml"
    source = f'[[sources]]\nname = "gw"\nprovider = "litellm"\nbase_url = "{sim.base_url}"\n'
    toml.write_text(source + 'api_key_env = "GW_KEY"\n')
    (from_toml,) = load_settings(env={"GW_KEY": KEY}, config_path=str(toml)).sources
    assert from_toml.auth_headers()["custom-llm-provider"] == "openai"
    assert from_toml.auth_headers()["Authorization"] == f"Bearer {KEY}"
    assert listed(from_toml) == 3
    toml.write_text(
        source + 'api_key_env = "GW_KEY"\nheaders = {"custom-llm-provider" = "azure"}\n'
    )
    (explicit,) = load_settings(env={"GW_KEY": KEY}, config_path=str(toml)).sources
    assert explicit.auth_headers()["custom-llm-provider"] == "azure"
    with pytest.raises(ApiError, match="LLM Provider NOT provided"):
        listed(explicit)  # what was configured is what was sent
    # the openai and azure presets send no such header
    azure = SourceSettings(provider="azure", base_url=sim.base_url, api_key=Secret(KEY))
    assert set(azure.auth_headers()) == {"api-key"}
    assert set(SourceSettings(api_key=Secret(KEY)).auth_headers()) == {"Authorization"}


def test_demo_of_the_litellm_profile_says_head_only(tmp_path: Path) -> None:
    env = clean_env(INGESTER_DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}")
    args = ["demo", "--profile", "litellm", "--jobs", "60", "--passes", "2", "--interval", "0"]
    result = subprocess.run([INGESTER, *args], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "head-only mode: this gateway ignores pagination" in result.stdout
    assert "mode: head-only since" in result.stdout
