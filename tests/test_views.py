"""The views of revision 0002 and every query of docs/queries.md, on SQLite, PostgreSQL, MariaDB.

The mirror is filled the way production fills it: the simulator serves the jobs over HTTP on
loopback, `VideosClient` reads them, `Syncer` + `SqlStore` write them. Time is a fake clock
shared by the simulator and the syncer, set just before real "now" (the views compare with
the database's clock), and a pass runs at the exact second every job changes, so every
observed time in the audit trail is known in advance.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from ingester.config import Secret, SourceSettings
from ingester.database import downgrade, make_engine, migrate
from ingester.errors import NotServedError
from ingester.models import metadata, video_job_transitions
from ingester.simulator import FakeClock, Simulator, World
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer
from tests.conftest import BACKENDS, create_database, drop_database

VIEWS = ("video_job_timings", "video_jobs_daily", "video_job_failures", "sync_health")
NEVER = 1e8  # a queue or render time that does not end while the test runs
MIN = 60.0
HOUR = 3600.0
DAY = 86400.0
KEY = "sk-sim-views"


@dataclass
class Spec:
    """One simulated job: times are seconds relative to the mirror's `now` (negative: past)."""

    name: str
    source: str
    created: float
    queued: float
    render: float
    failed: bool = False
    model: str | None = "sora-2"
    size: str | None = "1280x720"
    seconds: str | None = "8"
    remix_of: str | None = None  # another spec's name, or a foreign id
    deleted: float | None = None
    id: str = ""

    @property
    def started(self) -> float:
        return self.created + self.queued

    @property
    def ended(self) -> float:
        return self.created + self.queued + self.render


@dataclass
class Mirror:
    """What was put in the mirror, to compute every expected answer from."""

    now: datetime  # the anchor: whole minute, at most a minute before real time
    specs: dict[str, Spec]
    final: float  # the time of the last pass (relative)
    truth: dict[str, dict[str, Any]]  # the provider's objects at the end, by spec name
    passes: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)
    cursor: dict[str, str] = field(default_factory=dict)

    def at(self, rel: float) -> datetime:
        """The absolute time of a relative offset."""
        return self.now + timedelta(seconds=rel)

    def status(self, s: Spec) -> str:
        """The job's status when the last pass ran."""
        if s.source == "archive" or s.ended <= self.final:
            return "failed" if s.failed else "completed"
        return "in_progress" if s.started <= self.final else "queued"

    def missing(self, s: Spec) -> bool:
        return s.deleted is not None

    def of(self, source: str) -> list[Spec]:
        return [s for s in self.specs.values() if s.source == source]


def history(rng: random.Random) -> list[Spec]:
    """Sixty finished jobs between 72 and 26 hours ago: models, sizes, queues, failures."""
    minutes = sorted(rng.sample(range(26 * 60, 72 * 60), 60), reverse=True)
    specs: list[Spec] = []
    for i, m in enumerate(minutes):
        model = rng.choice(["sora-2", "sora-2", "sora-2-pro"])
        render = rng.randrange(6, 25) * 10.0 if model == "sora-2" else rng.randrange(18, 61) * 10.0
        remix = rng.choice(specs).name if specs and rng.random() < 0.1 else None
        specs.append(
            Spec(
                f"h{i:02d}",
                "main",
                created=-m * MIN,
                queued=rng.choice([0.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
                render=render,
                failed=rng.random() < 0.15,
                model=model,
                size=rng.choice(["1280x720", "720x1280", "1792x1024"]),
                seconds=rng.choice(["4", "8", "8", "12", None]),
                remix_of=remix,
            )
        )
    return specs


def recent() -> list[Spec]:
    """Hand-placed jobs of the last day, each there for a cookbook question."""
    m = MIN
    return [
        Spec("expired", "main", -1470 * m, 1 * m, 4 * m),  # assets expired 25 min ago
        Spec("expiring_a", "main", -1430 * m, 2 * m, 3 * m),  # expires in 15 min
        Spec("expiring_b", "main", -1400 * m, 1 * m, 4 * m, seconds="4"),  # in 45 min
        Spec("expires_later", "main", -1320 * m, 1 * m, 4 * m),  # in 2 h 05
        # within the span the reconcile lists (jobs newer than it follow), so it is marked
        Spec("vanished", "main", -1380 * m, NEVER, 0, deleted=-270 * m),
        Spec("original", "main", -240 * m, 2 * m, 4 * m),
        Spec(
            "remix1",
            "main",
            -180 * m,
            1 * m,
            5 * m,
            model="sora-2-pro",
            size="1792x1024",
            seconds="12",
            remix_of="original",
        ),
        Spec("failed1", "main", -150 * m, 2 * m, 2 * m, failed=True),
        Spec("remix2", "main", -130 * m, 2 * m, 8 * m, seconds="abc", remix_of="remix1"),
        Spec("stuck", "main", -125 * m, 15 * m, NEVER, model="sora-2-pro"),
        Spec(
            "external_remix",
            "main",
            -90 * m,
            1 * m,
            9 * m,
            seconds=None,
            remix_of="video_from_another_account",
        ),
        Spec("failed2", "main", -60 * m, 2 * m, 1 * m, failed=True, model="sora-2-pro"),
        Spec("queued_long", "main", -30 * m, NEVER, 0),
        Spec("quick", "main", -20 * m, 0, 8 * m),
        Spec("queued_new", "main", -3 * m, NEVER, 0),
    ]


def archive() -> list[Spec]:
    """Another provider, backfilled once five days ago: first sightings of finished jobs."""
    return [
        Spec(
            f"a{i}",
            "archive",
            -6 * DAY + i * 7 * MIN,
            1 * MIN,
            4 * MIN,
            failed=i in (2, 5),
            seconds="16" if i == 0 else "8",
        )
        for i in range(8)
    ]


# Things that happen between job events (relative minutes): not jobs changing.
RECONCILE, MALFORMED, FAILED_PASS, IDLE = -260 * MIN, -100 * MIN, -50 * MIN, -1 * MIN


def build_mirror(engine: Engine) -> Mirror:
    """Fill an empty, migrated database through the simulator; return what went in."""
    anchor = datetime.fromtimestamp(int(time.time()) // 60 * 60, UTC)
    base = anchor.timestamp()
    specs = {s.name: s for s in [*history(random.Random(2026)), *recent(), *archive()]}
    clock = FakeClock(base)
    mirror = Mirror(anchor, specs, IDLE, {})
    store = SqlStore(engine)

    def syncer(sim: Simulator, name: str) -> Syncer:
        settings = SourceSettings(name=name, base_url=sim.base_url, api_key=Secret(KEY))
        return build_syncer(
            settings,
            store,
            owner=f"test-{name}",
            sleep=lambda _s: None,
            clock=lambda: datetime.fromtimestamp(clock.t, UTC),
        ).syncer

    def add(world: World, s: Spec) -> None:
        remix = specs[s.remix_of].id if s.remix_of in specs else s.remix_of
        (s.id,) = world.add_jobs(
            1,
            created_at=base + s.created,
            model=s.model,
            size=s.size,
            seconds=s.seconds,
            queued_s=(s.queued, s.queued),
            render_s=(s.render, s.render),
            fail_rate=1.0 if s.failed else 0.0,
            prompt=f"prompt of {s.name}",
            remix_of=remix,
        )

    def remove(world: World, s: Spec) -> None:
        assert world.delete(s.id)

    def record(source: str, t: float, kind: str, outcome: str) -> None:
        mirror.passes.setdefault(source, []).append((t, kind, outcome))

    old_world = World(clock=clock, seed=5)
    with Simulator(old_world, api_key=KEY) as old_sim:
        for s in archive():
            add(old_world, specs[s.name])
        clock.set(base - 5 * DAY)
        syncer(old_sim, "archive").backfill()
        record("archive", -5 * DAY, "backfill", "succeeded")
        mirror.truth.update({s.name: old_world.get(s.id) for s in mirror.of("archive")})

    world = World(clock=clock, seed=7)
    main = [s for s in specs.values() if s.source == "main"]
    events: dict[float, list[Callable[[], object]]] = defaultdict(list)
    for s in main:
        events[s.created].append(partial(add, world, s))
        for t in (s.started, s.ended):
            if t <= IDLE:
                events[t]
        if s.deleted is not None:
            events[s.deleted].append(partial(remove, world, s))  # s.id is known only then
    for t in (RECONCILE, MALFORMED, FAILED_PASS, IDLE):
        assert t not in events, "a special pass must not coincide with a job event"
        events[t]
    with Simulator(world, api_key=KEY) as sim:
        sync = syncer(sim, "main")
        for t in sorted(events):
            clock.set(base + t)
            for change in events[t]:
                change()
            if t == RECONCILE:
                sync.reconcile()
                record("main", t, "reconcile", "succeeded")
            elif t == MALFORMED:
                key = world.add_raw({"object": "video", "status": "queued"}, created_at=base + t)
                sync.sync()
                world.delete(key)
                record("main", t, "sync", "succeeded")
            elif t == FAILED_PASS:
                sim.gone = 410
                with pytest.raises(NotServedError):
                    sync.sync()
                sim.gone = None
                record("main", t, "sync", "failed")
            else:
                sync.sync()
                record("main", t, "sync", "succeeded")
        mirror.truth.update({s.name: world.get(s.id) for s in main if s.deleted is None})
    return mirror


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Mirror]]:
    """A database of each backend of its own, migrated and filled once for the module."""
    url, admin = create_database(request.param, tmp_path_factory.mktemp(request.param))
    engine = make_engine(url)
    try:
        migrate(engine)
        yield engine, build_mirror(engine)
    finally:
        engine.dispose()
        drop_database(admin, url)


@pytest.fixture(scope="module", params=BACKENDS)
def blank_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database of each backend of its own (not conftest's session one: sharing
    that would interleave backends and fill the `filled` mirror twice)."""
    url, admin = create_database(request.param, tmp_path_factory.mktemp(request.param))
    engine = make_engine(url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        drop_database(admin, url)


@pytest.fixture
def empty(blank_db: Engine) -> Engine:
    """`blank_db` with every table emptied."""
    with blank_db.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return blank_db


def query(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as dicts, timestamps made aware UTC whatever the backend returned."""
    with engine.connect() as conn:
        return [
            {k: norm(v) for k, v in r.items()}
            for r in conn.execute(sa.text(sql), params).mappings()
        ]


def norm(value: Any) -> Any:
    """A result value comparable across backends: aware datetimes, dates, floats."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)  # SQLite keeps text
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return date.fromisoformat(value)
    if hasattr(value, "as_integer_ratio") and not isinstance(value, int | float):
        return float(value)  # Decimal
    return value


def backend(engine: Engine) -> str:
    """The conftest name of the engine's backend."""
    return "mariadb" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def approx_between(value: float, lo: float, hi: float, slack: float = 1.5) -> bool:
    """`value` within [lo, hi] give or take `slack` (clock reads bracket a query)."""
    return lo - slack <= value <= hi + slack


def percentile_cont(values: list[float], p: float) -> float:
    """The SQL `percentile_cont`: linear interpolation between the closest ranks."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] if lo + 1 >= len(v) else v[lo] + (v[lo + 1] - v[lo]) * (pos - lo)


# --- what the mirror must say, computed from what went in -------------------------------------


def expected_timing(m: Mirror, s: Spec) -> dict[str, Any]:
    """The row of video_job_timings for one job."""
    started: float | None
    finished: float | None
    source: str | None
    if s.source == "archive":  # first sighted finished: only the provider's timestamps
        started, finished, source = None, s.ended, "job"
    else:
        started = s.started if s.started <= m.final else None
        finished = s.ended if s.ended <= m.final else None
        source = "transitions" if started is not None or finished is not None else None

    def secs(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    return {
        "video_id": s.id,
        "source": s.source,
        "model": s.model,
        "size": s.size,
        "seconds": s.seconds,
        "status": m.status(s),
        "created_at": m.at(s.created),
        "started_at": None if started is None else m.at(started),
        "finished_at": None if finished is None else m.at(finished),
        "queued_s": secs(s.created, started),
        "render_s": secs(started, finished),
        "total_s": secs(s.created, finished),
        "timing_source": source,
    }


def numeric_seconds(s: Spec) -> float:
    return float(s.seconds) if s.seconds is not None and re.fullmatch(r"\d+", s.seconds) else 0.0


def expected_daily(m: Mirror) -> dict[tuple[Any, ...], dict[str, Any]]:
    """video_jobs_daily keyed by (day, source, model)."""
    groups: dict[tuple[Any, ...], list[Spec]] = defaultdict(list)
    for s in m.specs.values():
        groups[(m.at(s.created).date(), s.source, s.model)].append(s)
    out = {}
    for key, specs in groups.items():
        st = Counter(m.status(s) for s in specs)
        done = st["completed"] + st["failed"]
        out[key] = {
            "created": len(specs),
            "completed": st["completed"],
            "failed": st["failed"],
            "still_open": sum(
                1 for s in specs if m.status(s) in ("queued", "in_progress") and s.deleted is None
            ),
            "missing": sum(
                1
                for s in specs
                if m.status(s) in ("queued", "in_progress") and s.deleted is not None
            ),
            "failure_rate": round(st["failed"] / done, 4) if done else None,
            "video_seconds": sum(numeric_seconds(s) for s in specs if m.status(s) == "completed"),
        }
    return out


def expected_failures(m: Mirror) -> dict[tuple[str, str], dict[str, Any]]:
    """video_job_failures keyed by (source, error_code)."""
    groups: dict[tuple[str, str], list[Spec]] = defaultdict(list)
    for s in m.specs.values():
        if m.status(s) == "failed":
            groups[(s.source, m.truth[s.name]["error"]["code"])].append(s)
    out = {}
    for key, specs in groups.items():
        # the change to failed was observed at its second; archive jobs: their completed_at,
        # which the simulator sets to the same second
        latest = max(specs, key=lambda s: (s.ended, s.id))
        out[key] = {
            "failures": len(specs),
            "first_seen_at": m.at(min(s.ended for s in specs)),
            "last_seen_at": m.at(latest.ended),
            "example_message": m.truth[latest.name]["error"]["message"],
            "example_video_id": latest.id,
        }
    return out


def passes_since(m: Mirror, source: str, rel: float) -> list[tuple[float, str, str]]:
    return [p for p in m.passes.get(source, []) if p[0] >= rel]


# --- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_db", BACKENDS, indirect=True)
def test_views_migrate_up_and_down_and_stay_out_of_autogenerate(fresh_db: str) -> None:
    engine = make_engine(fresh_db)
    try:
        migrate(engine)
        assert set(VIEWS) <= set(sa.inspect(engine).get_view_names())
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        downgrade(engine, "0001")
        inspector = sa.inspect(engine)
        assert not set(VIEWS) & set(inspector.get_view_names())
        assert "video_jobs" in inspector.get_table_names()
        migrate(engine)
        assert set(VIEWS) <= set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()


# --- the views on a mirror filled through the simulator ------------------------------------------


def test_timings_view(filled: tuple[Engine, Mirror]) -> None:
    engine, m = filled
    rows = {r["video_id"]: r for r in query(engine, "SELECT * FROM video_job_timings")}
    assert len(rows) == len(m.specs)
    for s in m.specs.values():
        assert rows[s.id] == expected_timing(m, s), s.name
    # spot checks that do not go through expected_timing
    assert rows[m.specs["remix1"].id]["queued_s"] == 60.0
    assert rows[m.specs["remix1"].id]["render_s"] == 300.0
    assert rows[m.specs["stuck"].id]["timing_source"] == "transitions"
    assert rows[m.specs["stuck"].id]["render_s"] is None
    assert rows[m.specs["quick"].id]["queued_s"] == 0.0  # first sighted rendering
    assert rows[m.specs["a0"].id]["total_s"] == 300.0
    assert rows[m.specs["a0"].id]["timing_source"] == "job"
    assert rows[m.specs["queued_new"].id]["timing_source"] is None


def test_daily_view(filled: tuple[Engine, Mirror]) -> None:
    engine, m = filled
    rows = query(engine, "SELECT * FROM video_jobs_daily")
    got = {(r.pop("day"), r.pop("source"), r.pop("model")): r for r in rows}
    assert got == expected_daily(m)
    today = {k: v for k, v in got.items() if k[1] == "main" and k[0] == m.now.date()}
    assert sum(v["still_open"] for v in today.values()) >= 1  # queued_new is from today
    archive_ = [v for k, v in got.items() if k[1] == "archive"]
    assert sum(v["video_seconds"] for v in archive_) == 16 + 8 * 5  # a2, a5 failed
    assert sum(v["missing"] for v in got.values()) == 1


def test_failures_view(filled: tuple[Engine, Mirror]) -> None:
    engine, m = filled
    rows = query(engine, "SELECT * FROM video_job_failures")
    got = {(r.pop("source"), r.pop("error_code")): r for r in rows}
    assert got == expected_failures(m)
    assert sum(v["failures"] for k, v in got.items() if k[0] == "archive") == 2
    failed2 = m.specs["failed2"]
    latest_main = max(got[k]["last_seen_at"] for k in got if k[0] == "main")
    assert latest_main == m.at(failed2.ended)


def test_sync_health_view(filled: tuple[Engine, Mirror]) -> None:
    engine, m = filled
    t0 = datetime.now(UTC)
    rows = {r["source"]: r for r in query(engine, "SELECT * FROM sync_health")}
    t1 = datetime.now(UTC)
    assert set(rows) == {"main", "archive"}
    main, old = rows["main"], rows["archive"]
    cursor_created = m.at(m.specs["remix2"].created)  # the last terminal job before `stuck`
    assert main["cursor_id"] == m.specs["remix2"].id
    assert main["cursor_created_at"] == cursor_created
    age = (t0 - cursor_created).total_seconds(), (t1 - cursor_created).total_seconds()
    assert approx_between(main["cursor_age_s"], *age)
    assert main["last_success_at"] == m.at(IDLE)
    since = (t0 - m.at(IDLE)).total_seconds(), (t1 - m.at(IDLE)).total_seconds()
    assert approx_between(main["since_success_s"], *since)
    recent_passes = passes_since(m, "main", -DAY)
    assert main["passes_24h"] == len(recent_passes) > 20
    assert main["failed_passes_24h"] == 1
    assert main["errors_24h"] == 2  # the malformed item and the 410 of the failed pass
    assert main["open_jobs"] == 3  # stuck, queued_long, queued_new; vanished is missing
    assert main["last_full_scan_at"] == m.at(RECONCILE)
    assert old["last_success_at"] == m.at(-5 * DAY)
    assert (old["passes_24h"], old["failed_passes_24h"], old["errors_24h"]) == (0, 0, 0)
    assert old["open_jobs"] == 0
    assert old["cursor_id"] == m.specs["a7"].id
    assert old["last_full_scan_at"] == m.at(-5 * DAY)


def test_timings_say_when_the_end_comes_from_the_job(empty: Engine) -> None:
    """A pruned audit trail: start observed, end only from the provider's completed_at."""
    t = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    row = {
        "id": "video_pruned",
        "source": "s1",
        "model": "sora-2",
        "status": "completed",
        "progress": 100,
        "created_at": t,
        "completed_at": t + timedelta(seconds=400),
        "raw": {},
        "content_hash": "0" * 32,
        "first_seen_at": t,
        "last_seen_at": t,
        "last_changed_at": t,
    }
    with empty.begin() as conn:
        conn.execute(sa.insert(metadata.tables["video_jobs"]), row)
        conn.execute(
            sa.insert(video_job_transitions),
            [
                {
                    "video_id": "video_pruned",
                    "source": "s1",
                    "from_status": None,
                    "to_status": "queued",
                    "observed_at": t,
                },
                {
                    "video_id": "video_pruned",
                    "source": "s1",
                    "from_status": "queued",
                    "to_status": "in_progress",
                    "observed_at": t + timedelta(seconds=100),
                },
            ],
        )
    (got,) = query(empty, "SELECT * FROM video_job_timings")
    assert got["timing_source"] == "mixed"
    assert (got["queued_s"], got["render_s"], got["total_s"]) == (100.0, 300.0, 400.0)


@pytest.mark.parametrize(
    ("seconds", "counted"),
    [
        ("8", 8.0),
        ("12.5", 12.5),
        (None, 0.0),
        ("abc", 0.0),
        ("", 0.0),
        (" 8", 0.0),
        ("8.", 0.0),
        (".5", 0.0),
        ("1.2.3", 0.0),
        ("1e3", 0.0),
        ("-4", 0.0),
        ("٣", 0.0),
        ("9" * 13, 0.0),
    ],
)
def test_daily_sums_only_plain_numeric_seconds(
    empty: Engine, seconds: str | None, counted: float
) -> None:
    t = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    base = {
        "source": "s1",
        "model": "sora-2",
        "progress": 100,
        "created_at": t,
        "raw": {},
        "content_hash": "0" * 32,
        "first_seen_at": t,
        "last_seen_at": t,
        "last_changed_at": t,
    }
    with empty.begin() as conn:
        conn.execute(
            sa.insert(metadata.tables["video_jobs"]),
            [
                {**base, "id": "v_odd", "status": "completed", "seconds": seconds},
                {**base, "id": "v_four", "status": "completed", "seconds": "4"},
                {**base, "id": "v_failed", "status": "failed", "seconds": "20"},
            ],
        )
    (row,) = query(empty, "SELECT * FROM video_jobs_daily")
    assert row["video_seconds"] == counted + 4.0
    assert (row["completed"], row["failed"], row["failure_rate"]) == (2, 1, 0.3333)


# --- the cookbook: every query of docs/queries.md, as documented, on every backend ------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "queries.md"
DIALECT_LABELS = {"SQLite": "sqlite", "PostgreSQL": "postgresql", "MariaDB": "mariadb"}


def cookbook() -> dict[str, dict[str, str]]:
    """Each documented query by name, then by backend (a block without a label is for all)."""
    parts = re.split(r"<!-- query: (\w+) -->", DOC.read_text(encoding="utf-8"))
    queries: dict[str, dict[str, str]] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        per: dict[str, str] = {}
        for block in re.findall(r"```sql\n(.*?)```", body, re.S):
            label = re.fullmatch(r"-- (\w+)", block.splitlines()[0])
            targets = [DIALECT_LABELS[label.group(1)]] if label else list(BACKENDS)
            for target in targets:
                assert target not in per, f"{name}: two queries for {target}"
                per[target] = block
        assert set(per) == set(BACKENDS), f"{name}: no query for {set(BACKENDS) - set(per)}"
        queries[name] = per
    return queries


QUERIES = cookbook()
Check = Callable[[list[dict[str, Any]], Mirror, datetime, datetime], None]
CHECKS: dict[str, Check] = {}
PARAMS: dict[str, Callable[[Mirror], dict[str, Any]]] = {
    "remix_chain": lambda m: {"video_id": m.specs["remix2"].id},
    "job_history": lambda m: {"video_id": m.specs["remix1"].id},
}


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def test_every_documented_query_is_checked() -> None:
    assert len(QUERIES) >= 10
    assert set(QUERIES) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_cookbook_query(filled: tuple[Engine, Mirror], name: str) -> None:
    engine, m = filled
    sql = QUERIES[name][backend(engine)]
    params = PARAMS[name](m) if name in PARAMS else {}
    assert set(sa.text(sql).compile().params) == set(params), "stray :name in the SQL?"
    t0 = datetime.now(UTC)
    rows = query(engine, sql, **params)
    t1 = datetime.now(UTC)
    CHECKS[name](rows, m, t0, t1)


@check("queued_too_long")
def _queued_too_long(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    s = m.specs["queued_long"]  # not queued_new (3 min), not vanished (missing)
    assert [r["id"] for r in rows] == [s.id]
    assert (rows[0]["source"], rows[0]["created_at"]) == ("main", m.at(s.created))
    created = m.at(s.created)
    span = (t0 - created).total_seconds(), (t1 - created).total_seconds()
    assert approx_between(rows[0]["queued_s"], *span)


@check("render_percentiles")
def _render_percentiles(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for s in m.specs.values():
        timing = expected_timing(m, s)
        if timing["status"] == "completed" and timing["render_s"] is not None:
            groups[(s.model, s.size)].append(timing["render_s"])
    assert [(r["model"], r["size"]) for r in rows] == sorted(groups)
    for r in rows:
        values = groups[(r["model"], r["size"])]
        assert r["jobs"] == len(values)
        assert r["p50_s"] == pytest.approx(percentile_cont(values, 0.5))
        assert r["p95_s"] == pytest.approx(percentile_cont(values, 0.95))
    pro = [r for r in rows if r["model"] == "sora-2-pro"]
    assert pro and all(r["p50_s"] >= 180 for r in pro)  # pro jobs render 180..600 s


@check("expiring_soon")
def _expiring_soon(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    a, b = m.specs["expiring_a"], m.specs["expiring_b"]  # not expired, not expires_later
    assert [r["id"] for r in rows] == [a.id, b.id]
    assert rows[0]["expires_at"] == m.at(a.ended + DAY)


@check("remixes")
def _remixes(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    expected = []
    for s in sorted(m.specs.values(), key=lambda s: (s.created, s.id)):
        if s.remix_of is None:
            continue
        orig = m.specs.get(s.remix_of)
        expected.append(
            {
                "remix_id": s.id,
                "remix_status": m.status(s),
                "remixed_at": m.at(s.created),
                "original_id": orig.id if orig else s.remix_of,
                "original_status": m.status(orig) if orig else None,
                "original_prompt": f"prompt of {orig.name}" if orig else None,
            }
        )
    assert rows == expected
    assert rows[-1]["original_id"] == "video_from_another_account"


@check("remix_chain")
def _remix_chain(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    chain = [m.specs[n] for n in ("remix2", "remix1", "original")]
    assert [(r["depth"], r["id"]) for r in rows] == [(i, s.id) for i, s in enumerate(chain)]
    assert rows[2]["prompt"] == "prompt of original"
    assert all(r["status"] == "completed" for r in rows)


@check("job_history")
def _job_history(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    s = m.specs["remix1"]
    got = [(r["observed_at"], r["from_status"], r["to_status"], r["progress"]) for r in rows]
    assert got == [
        (m.at(s.created), None, "queued", 0),
        (m.at(s.started), "queued", "in_progress", 0),
        (m.at(s.ended), "in_progress", "completed", 100),
    ]
    assert {r["run_kind"] for r in rows} == {"sync"}
    assert len({r["run_id"] for r in rows}) == 3


@check("stuck_rendering")
def _stuck_rendering(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    s = m.specs["stuck"]
    assert [(r["video_id"], r["started_at"]) for r in rows] == [(s.id, m.at(s.started))]


def _by_model_since(m: Mirror, days: int, t1: datetime) -> dict[str | None, list[Spec]]:
    first_day = t1.date() - timedelta(days=days - 1)
    out: dict[str | None, list[Spec]] = defaultdict(list)
    for s in m.specs.values():
        if m.at(s.created).date() >= first_day:
            out[s.model].append(s)
    return out


@check("failure_rate_by_model")
def _failure_rate(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    groups = _by_model_since(m, 7, t1)
    assert [r["model"] for r in rows] == sorted(groups)  # type: ignore[type-var]
    for r in rows:
        st = Counter(m.status(s) for s in groups[r["model"]])
        assert (r["created"], r["completed"], r["failed"]) == (
            len(groups[r["model"]]),
            st["completed"],
            st["failed"],
        )
        pct = 100 * st["failed"] / (st["completed"] + st["failed"])
        assert abs(r["failed_pct"] - pct) <= 0.05 + 1e-9


@check("video_minutes")
def _video_minutes(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    groups = _by_model_since(m, 30, t1)
    assert [r["model"] for r in rows] == sorted(groups)  # type: ignore[type-var]
    for r in rows:
        done = [s for s in groups[r["model"]] if m.status(s) == "completed"]
        assert r["completed"] == len(done)
        minutes = sum(numeric_seconds(s) for s in done) / 60
        assert abs(r["video_minutes"] - minutes) <= 0.05 + 1e-9
    assert sum(r["video_minutes"] for r in rows) > 5


@check("failure_codes")
def _failure_codes(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    expected = expected_failures(m)
    got = {(r["source"], r["error_code"]): r for r in rows}
    assert set(got) == set(expected)
    for key, r in got.items():
        e = expected[key]
        assert (r["failures"], r["first_seen_at"], r["last_seen_at"], r["example_message"]) == (
            e["failures"],
            e["first_seen_at"],
            e["last_seen_at"],
            e["example_message"],
        )
    counts = [r["failures"] for r in rows]
    assert counts == sorted(counts, reverse=True)


@check("finished_per_hour")
def _finished_per_hour(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    hours: dict[str, Counter[str]] = defaultdict(Counter)
    for s in m.specs.values():
        status = m.status(s)
        if status in ("completed", "failed") and m.at(s.ended) >= t1 - timedelta(days=1):
            hours[m.at(s.ended).strftime("%Y-%m-%d %H")][status] += 1
    assert [(r["hour"], r["completed"], r["failed"]) for r in rows] == [
        (h, c["completed"], c["failed"]) for h, c in sorted(hours.items())
    ]
    assert sum(r["failed"] for r in rows) == 2  # failed1, failed2


@check("vanished")
def _vanished(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    s = m.specs["vanished"]
    assert [(r["id"], r["status"]) for r in rows] == [(s.id, "queued")]
    assert rows[0]["missing_since"] == m.at(RECONCILE)
    assert rows[0]["last_seen_at"] == m.at(s.created)


@check("sync_verdict")
def _sync_verdict(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    assert [(r["source"], r["verdict"]) for r in rows] == [
        ("archive", "stale"),
        ("main", "degraded"),
    ]
    main = rows[1]
    assert main["passes_24h"] == len(passes_since(m, "main", -DAY))
    assert (main["failed_passes_24h"], main["errors_24h"], main["open_jobs"]) == (1, 2, 3)
    cursor_created = m.at(m.specs["remix2"].created)
    lo = (t0 - cursor_created).total_seconds() / 60
    hi = (t1 - cursor_created).total_seconds() / 60
    assert round(lo) <= main["cursor_age_min"] <= round(hi) + 1


@check("failed_runs")
def _failed_runs(rows: list[dict[str, Any]], m: Mirror, t0: datetime, t1: datetime) -> None:
    assert [(r["source"], r["kind"], r["started_at"]) for r in rows] == [
        ("main", "sync", m.at(FAILED_PASS))
    ]
    assert "does not serve the Videos API" in rows[0]["error"]
    assert rows[0]["errors"] == 1
