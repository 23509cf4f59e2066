"""`ingester run` as a real subprocess: scheduling, signals, sd_notify, metrics, health."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from ingester.database import make_engine, migrate
from ingester.models import sync_runs, sync_state, video_job_transitions, video_jobs
from ingester.simulator import Fault, Simulator, World

INGESTER = str(Path(sys.executable).with_name("ingester"))
KEY = "sk-daemon-DISTINCTIVE-55aa"


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """An `ingester run` subprocess with its notify socket and log file."""

    def __init__(
        self, tmp: Path, env: dict[str, str], *args: str, name: str = "d",
        watchdog_usec: int = 3_000_000,
    ) -> None:  # fmt: skip
        self.notify_path = tmp / f"{name}-notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.log_path = tmp / f"{name}.log"
        env = dict(env, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC=str(watchdog_usec))
        self.proc = subprocess.Popen(
            [INGESTER, *args, "run"], env=env, stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def drain_notify(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def saw(self, text: str) -> bool:
        return any(text in m for m in self.drain_notify())

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()


def base_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTER_", "OPENAI_"))}
    env.update(INGESTER_DATABASE_URL=db_url, OPENAI_API_KEY=KEY)
    return env


def mirror_matches(url: str, sims: dict[str, Simulator]) -> bool:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(video_jobs))}
    finally:
        engine.dispose()
    for name, sim in sims.items():
        for job in sim.world.truth():
            row = rows.get(job["id"])
            if row is None or row.raw != job or row.source != name:
                return False
    return True


@pytest.fixture
def moving_sim() -> Iterator[Simulator]:
    world = World(seed=11)
    world.add_jobs(150, created_at=time.time() - 86400, spacing_s=60, status="completed")
    world.add_jobs(20, spacing_s=0.1, queued_s=(0.5, 1.5), render_s=(1, 3))
    with Simulator(world, api_key=KEY) as sim:
        yield sim


def test_service_mirrors_a_changing_world_and_stops_cleanly(
    tmp_path: Path, moving_sim: Simulator, daemons: list[Daemon]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(make_engine(url))
    env = base_env(url)
    env.update(OPENAI_BASE_URL=moving_sim.base_url, INGESTER_SYNC_INTERVAL_S="0.5",
               INGESTER_IDLE_INTERVAL_S="2")  # fmt: skip
    d = Daemon(tmp_path, env, "--log-format", "json")
    daemons.append(d)
    wait_for(lambda: d.saw("READY=1"), 15, "READY")
    wait_for(lambda: mirror_matches(url, {"default": moving_sim}), 30, "first mirror")
    moving_sim.world.add_jobs(5, queued_s=(0.2, 0.5), render_s=(0.5, 1))
    time.sleep(0.2)
    wait_for(lambda: mirror_matches(url, {"default": moving_sim}), 30, "mirror of new jobs")
    wait_for(lambda: all(j["status"] in ("completed", "failed")
                         for j in moving_sim.world.truth()), 30, "terminal world")  # fmt: skip
    wait_for(lambda: mirror_matches(url, {"default": moving_sim}), 30, "terminal mirror")
    assert d.saw("WATCHDOG=1") and d.saw("STATUS=")
    assert d.stop() == 0
    assert d.saw("STOPPING=1")
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    passes = [x for x in lines if x.get("event") == "pass"]
    assert passes and all(x["source"] == "default" and "run_id" in x for x in passes)
    assert any(x["inserted"] > 0 for x in passes)
    assert any(x["kind"] == "reconcile" and x["outcome"] == "succeeded" for x in passes)
    assert any("next passes every 2s" in x["message"] for x in lines)  # idle: the longer one
    assert KEY not in d.log()
    with make_engine(url).connect() as conn:
        outcomes = conn.execute(sa.select(sync_runs.c.outcome)).scalars().all()
        lease = conn.execute(sa.select(sync_state.c.lease_owner)).scalar()
    assert "running" not in outcomes and lease is None


def test_sigterm_mid_pass_commits_the_page_and_marks_the_run_interrupted(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    world = World(seed=5)
    world.add_jobs(3000, created_at=1_763_000_000, spacing_s=1, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        sim.faults.push(Fault.slow(0.4), count=1000, path_contains="/videos")
        url = f"sqlite:///{tmp_path / 'm.db'}"
        migrate(make_engine(url))
        env = base_env(url)
        env["OPENAI_BASE_URL"] = sim.base_url
        d = Daemon(tmp_path, env)
        daemons.append(d)
        engine = make_engine(url)

        def pages() -> int:
            with engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.max(sync_runs.c.pages))).scalar() or 0)

        wait_for(lambda: pages() >= 2, 30, "two pages")
        t0 = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - t0 < 5  # well inside TimeoutStopSec
        with engine.connect() as conn:
            run = conn.execute(sa.select(sync_runs)).one()
            jobs = conn.execute(sa.select(sa.func.count()).select_from(video_jobs)).scalar_one()
            cursor = conn.execute(sa.select(sync_state.c.cursor_id)).scalar()
        assert run.outcome == "interrupted" and run.finished_at is not None
        assert 2 <= run.pages < 30 and jobs == run.pages * 100 == run.inserted
        assert cursor == world.truth()[jobs - 1]["id"]  # the cursor is exactly the last commit


def test_second_signal_exits_at_once(tmp_path: Path, daemons: list[Daemon]) -> None:
    world = World(seed=5)
    world.add_jobs(10, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        sim.faults.push(Fault.stall(), count=5)
        url = f"sqlite:///{tmp_path / 'm.db'}"
        migrate(make_engine(url))
        env = base_env(url)
        env["OPENAI_BASE_URL"] = sim.base_url
        d = Daemon(tmp_path, env)
        daemons.append(d)
        wait_for(lambda: d.saw("READY=1") and sim.request_count >= 1, 15, "a stalled request")
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert d.proc.poll() is None  # the request in hand is still waiting
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(5)
        assert time.monotonic() - t0 < 2 and code != 0


def test_refuses_to_start_on_an_old_schema(tmp_path: Path, daemons: list[Daemon]) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'empty.db'}")
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    d = Daemon(tmp_path, env)
    daemons.append(d)
    assert d.proc.wait(20) == 6
    assert "ingester migrate" in d.log()
    assert not d.saw("READY=1")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_match_the_runs_table_and_health_flips(
    tmp_path: Path, moving_sim: Simulator, daemons: list[Daemon]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(make_engine(url))
    port = free_port()
    env = base_env(url)
    env.update(
        OPENAI_BASE_URL=moving_sim.base_url,
        INGESTER_SYNC_INTERVAL_S="0.5",
        INGESTER_HEALTH_MAX_AGE_S="3",
        INGESTER_METRICS_ADDRESS=f"127.0.0.1:{port}",
    )
    d = Daemon(tmp_path, env)
    daemons.append(d)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: d.saw("READY=1"), 15, "READY")
    wait_for(lambda: get(base + "/healthz")[0] == 200, 15, "healthy")
    wait_for(lambda: mirror_matches(url, {"default": moving_sim}), 30, "mirror")
    moving_sim.gone = 410  # every pass fails from now on
    wait_for(lambda: get(base + "/healthz")[0] == 503, 15, "unhealthy")
    status, body = get(base + "/healthz")
    assert status == 503 and json.loads(body)["healthy"] is False
    moving_sim.gone = None
    wait_for(lambda: get(base + "/healthz")[0] == 200, 15, "healthy again")
    engine = make_engine(url)

    def consistent() -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]] | None:
        """A scrape and the table's figures, taken with no pass finishing in between."""
        before = scrape(base)
        with engine.connect() as conn:
            runs = conn.execute(sa.select(sync_runs).where(sync_runs.c.outcome != "running"))
            done = runs.all()
            moves = conn.execute(sa.select(sa.func.count()).select_from(video_job_transitions))
            table = {
                ("ingester_transitions_total", "default"): float(moves.scalar_one()),
                ("ingester_jobs_upserted_total", "default", "inserted"): float(
                    sum(r.inserted for r in done)
                ),
            }
            for outcome in ("succeeded", "failed"):
                key = ("ingester_passes_total", "default", "sync", outcome)
                table[key] = float(sum(1 for r in done if (r.kind, r.outcome) == ("sync", outcome)))
        after = scrape(base)
        same = all(before.get(k, 0) == after.get(k, 0) for k in table)
        return (after, table) if same else None

    samples, table = wait_for(consistent, 15, "a quiet moment between passes")
    for key, value in table.items():
        assert samples.get(key, 0) == value, (key, samples.get(key), value)
    assert samples[("ingester_http_requests_total", "default", "410")] >= 1
    assert samples[("ingester_http_requests_total", "default", "200")] >= 2
    assert samples[("ingester_http_request_duration_seconds_count", "default")] >= 3
    assert ("ingester_last_success_timestamp_seconds", "default") in samples
    assert ("ingester_open_jobs", "default") in samples
    assert d.stop() == 0


def scrape(base: str) -> dict[tuple[str, ...], float]:
    status, text = get(base + "/metrics")
    assert status == 200
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(v for k, v in sorted(s.labels.items(), key=lambda kv: kv[0] != "source"))
            out[(s.name, *labels)] = s.value
    return out


def test_unit_files_verify_and_are_hardened(tmp_path: Path) -> None:
    analyze = "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        pytest.skip("systemd-analyze is not installed")
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    for unit in ("ingester.service", "ingester-backfill.service"):
        text = (deploy / unit).read_text().replace("/opt/ingester/bin/ingester", INGESTER)
        (tmp_path / unit).write_text(text)
        verify = subprocess.run([analyze, "verify", str(tmp_path / unit)],
                                capture_output=True, text=True)  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        sec = subprocess.run(
            [analyze, "security", "--offline=true", "--threshold=20", str(tmp_path / unit)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert sec.returncode == 0, sec.stdout[-500:]
        exposure = float(sec.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
        assert exposure <= 2.0, exposure


def test_two_daemons_share_three_sources_on_postgresql(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    from tests.conftest import create_database, drop_database

    url, admin = create_database("postgresql", tmp_path)
    try:
        migrate(make_engine(url))
        sims: dict[str, Simulator] = {}
        for i, name in enumerate(("alpha", "beta", "gamma")):
            world = World(seed=20 + i)
            world.add_jobs(250, created_at=time.time() - 86400, spacing_s=60, status="completed")
            world.add_jobs(30, spacing_s=0.2, queued_s=(0.2, 2), render_s=(1, 4))
            sims[name] = Simulator(world, api_key=KEY).start()
        config = tmp_path / "ingester.toml"
        config.write_text(
            "sync_interval_s = 0.3\njitter_s = 0.1\nlease_ttl_s = 10\n"
            + "".join(
                f'[[sources]]\nname = "{n}"\nbase_url = "{s.base_url}"\n'
                f'api_key_env = "OPENAI_API_KEY"\npage_size = 50\n'
                for n, s in sims.items()
            )
        )
        env = base_env(url)
        env["INGESTER_CONFIG"] = str(config)
        for n in ("one", "two"):
            daemons.append(Daemon(tmp_path, env, name=n))
        for d in daemons:
            wait_for(lambda d=d: d.saw("READY=1"), 15, "READY")
        time.sleep(3)
        for s in sims.values():
            s.world.add_jobs(10, spacing_s=0.1, queued_s=(0.2, 1), render_s=(0.5, 2))
        wait_for(
            lambda: all(
                j["status"] in ("completed", "failed")
                for s in sims.values()
                for j in s.world.truth()
            ),
            30,
            "terminal",
        )
        wait_for(lambda: mirror_matches(url, sims), 30, "every source current")
        assert all(d.stop() == 0 for d in daemons)
        engine = make_engine(url)
        with engine.connect() as conn:
            t = video_job_transitions.c
            dup = conn.execute(
                sa.select(t.video_id, t.from_status, t.to_status)
                .group_by(t.video_id, t.from_status, t.to_status)
                .having(sa.func.count() > 1)
            ).all()
            runs = conn.execute(sa.select(sync_runs).order_by(sync_runs.c.started_at)).all()
        engine.dispose()
        assert dup == []
        owners = {r.owner.rsplit(":", 2)[1] for r in runs}
        assert owners == {str(d.proc.pid) for d in daemons}  # both did work
        for name in sims:
            mine = [r for r in runs if r.source == name]
            assert len(mine) >= 5 and all(r.outcome != "running" for r in mine)
            for prev, nxt in itertools.pairwise(mine):
                assert nxt.started_at >= prev.finished_at, f"{name}: two passes at once"
    finally:
        for d in daemons:
            d.close()
        for s in sims.values():
            s.stop()
        drop_database(admin, url)


def test_sighup_reloads_the_sources(tmp_path: Path, daemons: list[Daemon]) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(make_engine(url))
    worlds = [World(seed=31), World(seed=32)]
    for w in worlds:
        w.add_jobs(30, created_at=1_763_000_000, status="completed")
    with Simulator(worlds[0], api_key=KEY) as one, Simulator(worlds[1], api_key=KEY) as two:
        entry = 'name = "{}"\nbase_url = "{}"\napi_key_env = "OPENAI_API_KEY"\n'
        config = tmp_path / "ingester.toml"
        config.write_text(
            "sync_interval_s = 0.5\n[[sources]]\n" + entry.format("one", one.base_url)
        )
        env = base_env(url)
        env["INGESTER_CONFIG"] = str(config)
        d = Daemon(tmp_path, env)
        daemons.append(d)
        wait_for(lambda: mirror_matches(url, {"one": one}), 20, "first source")
        config.write_text(config.read_text() + "[[sources]]\n" + entry.format("two", two.base_url))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: mirror_matches(url, {"one": one, "two": two}), 20, "reloaded source")
        assert d.saw("RELOADING=1")
        config.write_text("sync_interval_s = [broken")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in d.log(), 10, "refused reload")
        assert d.proc.poll() is None  # a bad config never takes the service down
        assert d.stop() == 0


def watchdog_pings(d: Daemon, seconds: float) -> int:
    """WATCHDOG=1 messages received in the next `seconds` (those queued before are dropped)."""
    before = len(d.drain_notify())
    time.sleep(seconds)
    return sum("WATCHDOG=1" in m for m in d.drain_notify()[before:])


def test_watchdog_pings_stop_while_a_pass_hangs(tmp_path: Path, daemons: list[Daemon]) -> None:
    """A list request that never answers (120 s client timeout): no WATCHDOG=1 after 1 s."""
    world = World(seed=7)
    world.add_jobs(10, created_at=1_763_000_000, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        sim.faults.push(Fault.stall(), count=1000, path_contains="/videos")
        url = f"sqlite:///{tmp_path / 'm.db'}"
        migrate(make_engine(url))
        config = tmp_path / "ingester.toml"
        config.write_text(f'[[sources]]\nname = "stuck"\nbase_url = "{sim.base_url}"\n'
                          'api_key_env = "OPENAI_API_KEY"\ntimeout_s = 120\n')  # fmt: skip
        env = dict(base_env(url), INGESTER_CONFIG=str(config))
        d = Daemon(tmp_path, env, watchdog_usec=1_000_000)
        daemons.append(d)
        wait_for(lambda: d.saw("READY=1") and sim.request_count >= 1, 15, "a stalled request")
        wait_for(lambda: "no progress in stuck" in d.log(), 15, "the stall to be noticed")
        assert watchdog_pings(d, 2.5) == 0
        assert d.proc.poll() is None and sim.request_count <= 2  # still in the same requests


def test_watchdog_pings_go_on_while_idle(tmp_path: Path, daemons: list[Daemon]) -> None:
    """A healthy service between passes (idle interval far beyond the watchdog) keeps pinging."""
    world = World(seed=8)
    world.add_jobs(10, created_at=1_763_000_000, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        url = f"sqlite:///{tmp_path / 'm.db'}"
        migrate(make_engine(url))
        env = dict(base_env(url), OPENAI_BASE_URL=sim.base_url, INGESTER_SYNC_INTERVAL_S="600")
        d = Daemon(tmp_path, env, "--log-format", "json", watchdog_usec=1_000_000)
        daemons.append(d)
        wait_for(lambda: mirror_matches(url, {"default": sim}), 30, "the first pass")
        wait_for(lambda: '"kind": "reconcile"' in d.log(), 30, "the first tick to end")
        assert watchdog_pings(d, 2.5) >= 3  # one every third of the interval
        assert "no progress" not in d.log()
        assert d.stop() == 0
