"""The real `ingester` console script in a subprocess, against the simulator on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from ingester.database import make_engine
from ingester.models import sync_runs, sync_state, video_jobs
from ingester.simulator import Fault, Simulator, World
from tests.proc import Proc, wait_for

INGESTER = str(Path(sys.executable).with_name("ingester"))
KEY = "sk-cli-test-DISTINCTIVE-7f3a9c"
COMMANDS = ["migrate", "sync", "backfill", "run", "status", "demo", "report"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    world = World(seed=3)
    world.add_jobs(120, created_at=1_763_000_000, spacing_s=60, status="completed")
    with Simulator(world, api_key=KEY) as s:
        yield s


@pytest.fixture
def env(tmp_path: Path, sim: Simulator) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTER_", "OPENAI_"))}
    base.update(
        INGESTER_DATABASE_URL=f"sqlite:///{tmp_path / 'mirror.db'}",
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=sim.base_url,
    )
    return base


def ingester(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [INGESTER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingester: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def count_jobs(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(video_jobs)).scalar_one()
    engine.dispose()
    return int(n)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None, tmp_path: Path) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = subprocess.run([INGESTER, *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: ingester" in result.stdout
    if command is None:
        assert all(c in result.stdout for c in COMMANDS)
    assert not (tmp_path / "ingester.db").exists()  # --help touches nothing


def test_migrate_sync_status_backfill(env: dict[str, str], sim: Simulator) -> None:
    assert ingester("migrate", env=env).returncode == 0
    check = ingester("migrate", "--check", env=env)
    assert check.returncode == 0 and "head" in check.stdout
    result = ingester("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert "sync run 1: succeeded; 120 items in 2 pages, 120 inserted" in result.stdout
    status = ingester("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["jobs"]["total"] == 120
    assert report["sources"][0]["cursor_id"] == sim.world.truth()[-1]["id"]
    assert report["runs"][0]["outcome"] == "succeeded"
    text = ingester("status", env=env)
    assert "completed" in text.stdout and "120 mirrored" in text.stdout
    sim.world.delete(sim.world.truth()[5]["id"])
    backfill = ingester("backfill", "--no-progress", env=env)
    assert backfill.returncode == 0, backfill.stderr
    assert "1 marked missing" in backfill.stdout
    for out in (result, status, text, backfill):
        assert KEY not in out.stdout + out.stderr


def test_sync_before_migrate_names_the_fix(env: dict[str, str]) -> None:
    line = one_line_error(ingester("sync", env=env), 6)
    assert "ingester migrate" in line


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"INGESTER_PAGE_SIZE": "500"}, "page_size must be 1..100"),
        ({"INGESTER_SYNC_INTERVAL_S": "soon"}, "is not a number"),
        ({"INGESTER_CONFIG": "/nonexistent/ingester.toml"}, "does not exist"),
        ({"OPENAI_BASE_URL": "http://203.0.113.9/v1"}, "plain http"),
        ({"INGESTER_PROVIDER": "acme"}, "provider"),
        ({"INGESTER_DATABASE_URL": "not a url"}, "not a valid"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    env: dict[str, str], changes: dict[str, str], fragment: str
) -> None:
    env.update(changes)
    line = one_line_error(ingester("sync", env=env), 2)
    assert fragment in line


def test_bad_dates_are_refused(env: dict[str, str]) -> None:
    ingester("migrate", env=env)
    assert "not a date" in one_line_error(ingester("backfill", "--since", "last week", env=env), 2)
    line = one_line_error(
        ingester("backfill", "--since", "2026-02-01", "--until", "2026-01-01", env=env), 2
    )
    assert "before" in line


def test_unreachable_database_hides_the_password(env: dict[str, str]) -> None:
    env["INGESTER_DATABASE_URL"] = "postgresql+psycopg://app:Pw-DISTINCTIVE-91@127.0.0.1:1/db"
    for args in (("sync",), ("migrate",), ("status",)):
        result = ingester(*args, env=env)
        line = one_line_error(result, 6)
        assert "Pw-DISTINCTIVE-91" not in result.stdout + result.stderr
        assert "127.0.0.1" in line


def test_refused_key_says_so_without_printing_it(env: dict[str, str]) -> None:
    ingester("migrate", env=env)
    env["OPENAI_API_KEY"] = "sk-WRONG-DISTINCTIVE-4242"
    result = ingester("sync", env=env)
    line = one_line_error(result, 3)
    assert "refused" in line and "sk-WRONG" not in result.stdout + result.stderr


@pytest.mark.parametrize("gone", [404, 410])
def test_provider_gone_is_reported_and_the_mirror_untouched(
    env: dict[str, str], sim: Simulator, gone: int
) -> None:
    ingester("migrate", env=env)
    assert ingester("sync", env=env).returncode == 0
    url = env["INGESTER_DATABASE_URL"]
    assert count_jobs(url) == 120
    sim.gone = gone
    for args in (("sync",), ("backfill", "--no-progress")):
        line = one_line_error(ingester(*args, env=env), 4)
        assert "does not serve the Videos API" in line
    assert count_jobs(url) == 120
    engine = make_engine(url)
    with engine.connect() as conn:
        missing = conn.execute(
            sa.select(sa.func.count()).where(video_jobs.c.missing_since.is_not(None))
        ).scalar_one()
    assert missing == 0


def test_demo_needs_no_key_and_no_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTER_", "OPENAI_"))}
    result = ingester("demo", "--jobs", "50", "--passes", "2", "--interval", "0.5",
                      env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ingester.db").exists()
    assert "50 mirrored" in result.stdout
    assert count_jobs(f"sqlite:///{tmp_path / 'ingester.db'}") == 50


def test_backfill_while_the_source_is_busy(env: dict[str, str]) -> None:
    import threading

    from ingester.store import SqlStore

    assert ingester("migrate", env=env).returncode == 0
    store = SqlStore(make_engine(env["INGESTER_DATABASE_URL"]))
    assert store.acquire_lease("default", "the-service", 600, datetime.now(UTC))
    line = one_line_error(ingester("backfill", "--no-progress", env=env), 5)
    assert "being synced by another process" in line
    release = threading.Timer(1.5, store.release_lease, ("default", "the-service"))
    release.start()
    waited = ingester("backfill", "--no-progress", "--wait", "20", env=env)
    release.join()
    assert waited.returncode == 0, waited.stderr
    assert "120 inserted" in waited.stdout


def test_backfill_shows_a_progress_bar_on_a_terminal(env: dict[str, str]) -> None:
    import fcntl
    import pty
    import struct
    import termios

    assert ingester("migrate", env=env).returncode == 0
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [INGESTER, "backfill"], env=env, stdout=subprocess.PIPE, stderr=slave, text=True
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.returncode == 0, out
    items = re.search(r"(\d+) items in \d+ pages, 120 inserted", out)
    assert items, out  # the 120 jobs, read from both ends (where they meet, twice)
    assert f"{items[1]} items".encode() in screen and b"new=120" in screen, screen[-300:]
    assert b"\r" in screen  # a redrawn bar, not log lines
    plain = ingester("backfill", env=env)  # stderr is a pipe here: no bar
    assert plain.returncode == 0 and "jobs/s" not in plain.stderr and "\r" not in plain.stderr


def runs(url: str) -> list[str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        outcomes = conn.execute(sa.select(sync_runs.c.outcome).order_by(sync_runs.c.id)).all()
    engine.dispose()
    return [o for (o,) in outcomes]


def test_sigint_wakes_a_retry_after_wait(
    env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    """Ctrl-C while the provider asked for 120 s: the backfill ends now, `interrupted`, 130."""
    assert ingester("migrate", env=env).returncode == 0
    sim.faults.push(Fault.rate_limited(retry_after=120), count=1000)
    backfill = Proc(["backfill", "--no-progress"], env, tmp_path / "backfill.log")
    try:
        wait_for(lambda: any(r.status == 429 for r in sim.requests), 30, "a 429")
        backfill.proc.send_signal(signal.SIGINT)
        code = backfill.proc.wait(30)  # far less than the 120 s asked for
    finally:
        backfill.close()
    assert code == 130, backfill.log()
    assert "backfill run 1: interrupted" in backfill.log()
    assert runs(env["INGESTER_DATABASE_URL"]) == ["interrupted"]
    assert sum(r.status == 429 for r in sim.requests) <= 2  # one per chain, no retry sent


def test_second_signal_during_a_stuck_pass_exits_at_once(
    env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    """The first SIGTERM waits for the request in hand (30 s timeout); a second exits with 7."""
    assert ingester("migrate", env=env).returncode == 0
    sim.faults.push(Fault.stall(), count=1000)
    sync = Proc(["sync"], env, tmp_path / "sync.log")
    try:
        wait_for(lambda: sim.request_count >= 1, 30, "a stalled request")
        sync.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "again to abort" in sync.log(), 30, "the stop to be recorded")
        assert sync.alive()  # the request in hand is still waiting for its answer
        sync.proc.send_signal(signal.SIGINT)
        code = sync.proc.wait(10)  # far less than the client's 30 s timeout
    finally:
        sync.close()
    assert code == 7, sync.log()
    assert "exiting at once" in sync.log()
    assert runs(env["INGESTER_DATABASE_URL"]) == ["running"]  # nothing after the abort


def test_sigint_wakes_the_wait_for_a_busy_source(env: dict[str, str], tmp_path: Path) -> None:
    """`backfill --wait` for a lease held elsewhere wakes on the stop too: 130, no run."""
    from datetime import UTC, datetime

    from ingester.store import SqlStore

    assert ingester("migrate", env=env).returncode == 0
    store = SqlStore(make_engine(env["INGESTER_DATABASE_URL"]))
    assert store.acquire_lease("default", "the-service", 600, datetime.now(UTC))
    backfill = Proc(["backfill", "--no-progress", "--wait", "600"], env, tmp_path / "wait.log")
    try:
        wait_for(lambda: "waiting up to 600s" in backfill.log(), 30, "the wait for the lease")
        backfill.proc.send_signal(signal.SIGINT)
        code = backfill.proc.wait(30)  # far less than the 600 s it was willing to wait
    finally:
        backfill.close()
    store.engine.dispose()
    assert code == 130, backfill.log()
    assert "ingester: error: stop requested" in backfill.log()
    assert runs(env["INGESTER_DATABASE_URL"]) == []


def _lease(url: str) -> tuple[str | None, datetime | None]:
    engine = make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_state.c.lease_owner, sync_state.c.lease_expires_at))
        owner, expires = row.one()
    engine.dispose()
    return owner, expires


def test_a_killed_backfill_does_not_hold_the_source(
    env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    """SIGKILLed mid-run, the holder is a pid of this host that no longer runs: taken over."""
    assert ingester("migrate", env=env).returncode == 0
    sim.faults.push(Fault.stall(), count=2, path_contains="/videos?")  # the first pages hang
    proc = Proc(["backfill", "--no-progress"], env, tmp_path / "killed.log")
    try:
        wait_for(lambda: sim.faults.injected >= 1, what="the backfill's first request")
        owner, _ = _lease(env["INGESTER_DATABASE_URL"])
        assert owner is not None and f":{proc.pid}:" in owner
    finally:
        assert proc.kill() == -signal.SIGKILL
        proc.close()
    sim.faults.clear()
    again = ingester("backfill", "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert "120 inserted" in again.stdout
    assert f"from {owner}: it no longer runs" in again.stdout


def test_a_live_holder_is_named_with_its_expiry(env: dict[str, str]) -> None:
    from ingester.store import SqlStore

    assert ingester("migrate", env=env).returncode == 0
    url = env["INGESTER_DATABASE_URL"]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        owner = f"{socket.gethostname()}:{holder.pid}:0badcafe"
        assert SqlStore(make_engine(url)).acquire_lease("default", owner, 600, datetime.now(UTC))
        _, expires = _lease(url)
        assert expires is not None
        line = one_line_error(ingester("backfill", "--no-progress", env=env), 5)
        assert owner in line and f"expires at {expires:%Y-%m-%d %H:%M:%S} UTC" in line
    finally:
        holder.kill()
        holder.wait()
    assert ingester("backfill", "--no-progress", env=env).returncode == 0  # now gone: taken


@pytest.mark.parametrize("args", [("sync",), ("backfill", "--no-progress"), ("run",)])
def test_no_api_key_is_refused_before_any_request(
    env: dict[str, str], sim: Simulator, tmp_path: Path, args: tuple[str, ...]
) -> None:
    assert ingester("migrate", env=env).returncode == 0
    del env["OPENAI_API_KEY"]
    line = one_line_error(ingester(*args, env=env, timeout=20), 2)
    for where in ("OPENAI_API_KEY,", "OPENAI_API_KEY_FILE", "credential openai-api-key",
                  "api_key_env", "api_key_file"):  # fmt: skip
        assert where in line
    config = tmp_path / "ingester.toml"
    config.write_text(f'[[sources]]\nname = "prod"\nbase_url = "{sim.base_url}"\n')
    line = one_line_error(ingester("--config", str(config), *args, env=env, timeout=20), 2)
    assert "source prod has no API key" in line and "credential prod-api-key" in line
    assert sim.requests == []
