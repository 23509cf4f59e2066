"""Database outage: the server under a running service stops for 20 s, then comes back.

A PostgreSQL cluster (initdb + pg_ctl) and a MariaDB server (mariadb-install-db + mariadbd) of
the test's own, on a temp dir and a free port, so they can be stopped without touching the
shared servers. `ingester run` (a real subprocess with a notify socket, metrics and health)
mirrors a moving simulator world; the database is stopped for OUTAGE_S seconds while the world
keeps changing. What must hold: the process stays up, `/healthz` turns 503 and systemd's
STATUS says the pass failed, each failed attempt logs one clear line (no storm, no
traceback), the first pass after the database returns succeeds within one interval, and the
mirror then equals the truth with a consistent audit trail.

A fast test covers the narrow moment the subprocess test cannot aim at: the database going
away between a successful pass and the service's own reads after it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ingester.database import make_engine, migrate
from ingester.models import sync_runs
from ingester.simulator import Fault, Simulator, World
from tests.proc import (
    Proc,
    ThrowawayMariaDB,
    ThrowawayPostgres,
    check_audit,
    check_mirror,
    clean_env,
    figures,
    free_port,
    wait_for,
)

KEY = "sk-outage-test-31d4c0ffee"
OUTAGE_S = 20.0
INTERVAL_S = 2.0
TERMINAL = ("completed", "failed")

Server = ThrowawayPostgres | ThrowawayMariaDB


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A database server of our own, started."""
    srv: Server = ThrowawayPostgres() if request.param == "postgresql" else ThrowawayMariaDB()
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def health(port: int) -> int:
    """The status of /healthz (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def mirrored(url: str, world: World) -> bool:
    engine = make_engine(url)
    try:
        check_mirror(engine, world.truth())
    except (AssertionError, sa.exc.SQLAlchemyError):
        return False
    finally:
        engine.dispose()
    return True


def running_run(url: str) -> int | None:
    """The id of a pass that committed a page and is still running, if any."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(sync_runs.c.id).where(
                    sync_runs.c.outcome == "running", sync_runs.c.pages >= 1
                )
            ).scalar()
    finally:
        engine.dispose()


def first_success_after(url: str, when: datetime) -> datetime | None:
    """When the first pass that started after `when` and succeeded started."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(sync_runs.c.started_at)).where(
                    sync_runs.c.outcome == "succeeded", sync_runs.c.started_at > when
                )
            ).scalar()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


@pytest.mark.slow
def test_service_survives_a_database_outage(server: Server, tmp_path: Path) -> None:
    backend = "postgresql" if isinstance(server, ThrowawayPostgres) else "mariadb"
    admin = make_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE ingester_outage"))
    admin.dispose()
    url = make_url(server.url).set(database="ingester_outage").render_as_string(False)
    migrate(make_engine(url))

    world = World(seed=41)
    world.add_jobs(400, created_at=time.time() - 86_400, spacing_s=120, queued_s=(0, 0),
                   render_s=(0, 0), fail_rate=0.1)  # fmt: skip
    world.add_jobs(10, spacing_s=0.3, queued_s=(0.5, 2), render_s=(2, 6))
    port = free_port()
    with Simulator(world, api_key=KEY) as sim:
        config = tmp_path / "ingester.toml"
        config.write_text(
            f"sync_interval_s = {INTERVAL_S}\njitter_s = 0.1\nhealth_max_age_s = 5\n"
            f'metrics_address = "127.0.0.1:{port}"\n'
            f'[[sources]]\nname = "default"\nbase_url = "{sim.base_url}"\n'
            'api_key_env = "OPENAI_API_KEY"\npage_size = 50\n'
        )
        env = clean_env(INGESTER_DATABASE_URL=url, OPENAI_API_KEY=KEY,
                        INGESTER_CONFIG=str(config))  # fmt: skip
        d = Proc(["run"], env, tmp_path / "daemon.log", notify=True)
        try:
            wait_for(lambda: health(port) == 200, 30, "a healthy service")
            wait_for(lambda: mirrored(url, world), 30, "the first mirror")
            d.notified()

            # the outage starts in the middle of a pass (slowed down so that one is caught
            # between two pages), and the world keeps moving while the database is away
            before = len(d.log().splitlines())
            world.add_jobs(200, spacing_s=0.01, queued_s=(0, 0), render_s=(0, 0))
            world.add_jobs(8, spacing_s=0.5, queued_s=(0.5, 3), render_s=(2, 8))
            sim.faults.push(Fault.slow(0.3), count=12, path_contains="/videos")
            cut = wait_for(lambda: running_run(url), 30, "a pass between two pages")
            server.stop()
            down = time.monotonic()
            sim.faults.clear()
            first_503: float | None = None
            while time.monotonic() - down < OUTAGE_S:
                assert d.alive(), f"the service died during the outage: {d.log()[-2000:]}"
                d.notified()  # keep the notify queue drained (it holds only a few datagrams)
                if first_503 is None and health(port) == 503:
                    first_503 = time.monotonic() - down
                if time.monotonic() - down > OUTAGE_S / 2 and len(world) < 620:
                    world.add_jobs(5, spacing_s=0.5, queued_s=(0.5, 3), render_s=(2, 8))
                time.sleep(0.25)
            during = d.log().splitlines()[before:]
            status_during = [m for m in d.notified() if "STATUS=" in m and "failed" in m]
            server.start()
            up_wall = datetime.now(UTC)
            up = time.monotonic()
            resumed_at = wait_for(lambda: first_success_after(url, up_wall), 30, "a success")
            resumed_s = (resumed_at - up_wall).total_seconds()
            wait_for(lambda: health(port) == 200, 15, "healthy again")
            healthy_s = time.monotonic() - up
            wait_for(lambda: all(j["status"] in TERMINAL for j in world.truth()), 30, "stillness")
            wait_for(lambda: mirrored(url, world), 30, "the mirror after the outage")
            assert d.stop() == 0, d.log()[-2000:]
        finally:
            d.close()

    assert first_503 is not None and first_503 <= 12, f"/healthz never said 503 ({first_503})"
    assert status_during, "systemd's STATUS never said the pass failed"
    failed = [line for line in during if "pass of default failed" in line]
    noisy = [line for line in during if " INFO " not in line]
    assert OUTAGE_S / INTERVAL_S - 3 <= len(failed) <= OUTAGE_S / INTERVAL_S + 2, failed
    assert len(noisy) <= 2 * len(failed), "a storm of log lines:\n" + "\n".join(noisy)
    assert not [line for line in during if "Traceback" in line], "\n".join(noisy)
    assert resumed_s <= INTERVAL_S + 1, f"no pass succeeded for {resumed_s:.1f}s after the outage"
    engine = make_engine(url)
    try:
        check_mirror(engine, world.truth(), source="default")
        transitions = check_audit(engine)
        with engine.connect() as conn:
            outcomes = [r.outcome for r in conn.execute(sa.select(sync_runs.c.outcome))]
            cut_outcome = conn.execute(
                sa.select(sync_runs.c.outcome).where(sync_runs.c.id == cut)
            ).scalar()
    finally:
        engine.dispose()
    assert "running" not in outcomes
    assert cut_outcome in ("interrupted", "failed"), f"the pass the outage cut is {cut_outcome}"
    figures(
        "outage", backend=backend, outage_s=OUTAGE_S, interval_s=INTERVAL_S,
        failed_attempts=len(failed), warning_or_error_lines=len(noisy),
        first_503_after_s=round(first_503, 1), resumed_after_s=round(resumed_s, 2),
        healthy_after_s=round(healthy_s, 1), jobs=len(world), transitions=transitions,
        runs={o: outcomes.count(o) for o in sorted(set(outcomes))}, cut_run=cut_outcome,
        sample_line=json.dumps(failed[0][:200]) if failed else None,
    )  # fmt: skip


def test_database_lost_right_after_a_pass_is_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ingester.config import Secret, Settings, SourceSettings
    from ingester.daemon import SourceWorker
    from ingester.metrics import Metrics
    from ingester.protocols import RunCounts
    from ingester.runs import PassResult
    from ingester.stopping import StopToken
    from ingester.store import SqlStore

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"  # nobody listens
    source = SourceSettings(name="gone", base_url="http://127.0.0.1:9/v1")
    settings = Settings(database_url=Secret(url), sources=(source,))
    worker = SourceWorker(settings, source, SqlStore(make_engine(url)), "owner", StopToken(),
                          Metrics(60), lambda _name, _s: None)  # fmt: skip

    class PassThenOutage:
        def sync(self) -> PassResult:
            return PassResult(1, "sync", "succeeded", RunCounts())

    worker.syncer = PassThenOutage()  # type: ignore[assignment]
    with caplog.at_level("INFO"):
        worker.tick()
    worker.close()
    problems = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR", "CRITICAL")]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert problems[0].exc_info is None  # a line, not a traceback
    assert "database error while" in problems[0].getMessage()
