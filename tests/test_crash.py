"""Crash consistency: `ingester backfill` and `ingester run` SIGKILLed at random instants.

A simulator world of terminal and moving jobs; processes of both kinds are started one after
another against one database and killed at a random moment: after a random delay, after the
running run committed a random number of pages, or after the simulator served a random number
of requests (plus a few random milliseconds). After every kill the database must already be
consistent (rows and transitions agree, the cursor never moved backwards, everything up to
the cursor is mirrored and terminal); after a final pass the mirror equals the truth, no
transition is duplicated and every run a kill left `running` has been closed `interrupted`.

Seeded: INGESTER_CRASH_SEED (default below) and INGESTER_CRASH_KILLS (kills per backend)
reproduce or lengthen a run; the seed is in every assertion message.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.database import make_engine, migrate
from ingester.models import sync_runs, sync_state, video_jobs
from ingester.simulator import Simulator, World
from tests.conftest import create_database, drop_database
from tests.proc import Proc, check_audit, check_mirror, clean_env, figures, run_cli, wait_for

pytestmark = pytest.mark.slow

KEY = "sk-crash-test-5f0e1d2c3b4a"
SEED = int(os.environ.get("INGESTER_CRASH_SEED", "20261124"))
KILLS = int(os.environ.get("INGESTER_CRASH_KILLS", "26"))
SOURCE = "crash"
TERMINAL = ("completed", "failed")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, URL) of an empty migrated database."""
    url, admin = create_database(request.param, tmp_path)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield request.param, url
    drop_database(admin, url)


def _state(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_state).where(sync_state.c.source == SOURCE)).first()


def _running_pages(engine: Engine) -> int:
    with engine.connect() as conn:
        pages = conn.execute(
            sa.select(sa.func.max(sync_runs.c.pages)).where(sync_runs.c.outcome == "running")
        ).scalar()
    return int(pages or 0)


def _check_after_kill(
    engine: Engine, order: dict[str, int], truth_ids: list[str], note: str
) -> int:
    """The database as a kill left it: consistent, with a cursor over terminal jobs only.

    Returns the cursor's position in the truth order (-1 before any)."""
    check_audit(engine, note)
    state = _state(engine)
    cursor = -1 if state is None or state.cursor_id is None else order[state.cursor_id]
    with engine.connect() as conn:
        status = dict(conn.execute(sa.select(video_jobs.c.id, video_jobs.c.status)).all())
    for vid in truth_ids[: cursor + 1]:
        assert status.get(vid) in TERMINAL, f"{note}: {vid} is behind the cursor but " + (
            "not mirrored" if vid not in status else f"{status[vid]}"
        )
    return cursor


def wait_kill_moment(
    mode: str, rng: random.Random, proc: Proc, engine: Engine, sim: Simulator, note: str
) -> None:
    """Wait for the random moment of this kill (or for the process to end first)."""
    if mode == "delay":
        deadline = time.monotonic() + rng.uniform(0.3, 3.0)
        while time.monotonic() < deadline and proc.alive():
            time.sleep(0.01)
    elif mode == "pages":
        k = rng.randrange(1, 60)
        wait_for(lambda: not proc.alive() or _running_pages(engine) >= k, 60, f"{k} pages {note}")
        time.sleep(rng.uniform(0, 0.03))
    else:
        k = sim.request_count + rng.randrange(1, 80)
        wait_for(lambda: not proc.alive() or sim.request_count >= k, 60, f"request {k} {note}")
        time.sleep(rng.uniform(0, 0.02))


def test_sigkill_at_random_instants_loses_and_duplicates_nothing(
    database: tuple[str, str], tmp_path: Path
) -> None:
    backend, url = database
    seed = SEED + (0 if backend == "sqlite" else 1)
    rng = random.Random(seed)
    world = World(seed=seed)
    now = time.time()
    # history: terminal already (zero-length lifecycles), a sixth of them failed
    world.add_jobs(3000, created_at=now - 7 * 86400, spacing_s=60, queued_s=(0, 0),
                   render_s=(0, 0), fail_rate=0.15)  # fmt: skip
    world.add_jobs(30, created_at=now - 2, spacing_s=0.2, queued_s=(0.5, 3), render_s=(1, 6),
                   fail_rate=0.2)  # fmt: skip
    engine = make_engine(url)
    with Simulator(world, api_key=KEY) as sim:
        config = tmp_path / "ingester.toml"
        config.write_text(
            "lease_ttl_s = 1.5\nsync_interval_s = 0.3\nidle_interval_s = 0.3\n"
            "reconcile_interval_s = 3\njitter_s = 0.05\n"
            f'[[sources]]\nname = "{SOURCE}"\nbase_url = "{sim.base_url}"\n'
            'api_key_env = "OPENAI_API_KEY"\npage_size = 20\ntimeout_s = 10\n'
        )
        env = clean_env(INGESTER_DATABASE_URL=url, OPENAI_API_KEY=KEY,
                        INGESTER_CONFIG=str(config))  # fmt: skip
        kills, finished, mid_run = 0, 0, 0
        modes: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        positions: list[int] = []
        left_running: set[int] = set()
        cycle = 0
        while kills < KILLS:
            cycle += 1
            note = f"[seed {seed}, {backend}, cycle {cycle}]"
            assert cycle <= KILLS * 3, f"{note}: processes keep finishing before their kill"
            if rng.random() < 0.5:  # the world moves on between processes
                world.add_jobs(rng.randrange(1, 8), spacing_s=rng.choice([0.0, 0.3]),
                               queued_s=(0.2, 2), render_s=(0.5, 5), fail_rate=0.2)  # fmt: skip
            kind = rng.choice(["backfill", "run"])
            args = ["backfill", "--no-progress", "--wait", "20"] if kind == "backfill" else ["run"]
            mode = rng.choice(["delay", "pages", "requests"])
            proc = Proc(args, env, tmp_path / f"{kind}-{cycle}.log")
            try:
                try:
                    wait_kill_moment(mode, rng, proc, engine, sim, note)
                except AssertionError as exc:  # say why the process never got there
                    raise AssertionError(f"{exc}\n{proc.log()[-1500:]}") from None
                if not proc.alive():  # finished first (a short backfill): not a kill
                    assert proc.proc.returncode == 0, f"{note}: {kind} failed: {proc.log()[-800:]}"
                    finished += 1
                    continue
                proc.kill()
            finally:
                proc.close()
            kills += 1
            modes[mode] += 1
            kinds[kind] += 1
            with engine.connect() as conn:
                running = dict(conn.execute(
                    sa.select(sync_runs.c.id, sync_runs.c.owner)
                    .where(sync_runs.c.outcome == "running")
                ).all())  # fmt: skip
            mid_run += any(f":{proc.pid}:" in (owner or "") for owner in running.values())
            left_running |= set(running)
            truth_ids = [j["id"] for j in world.truth()]
            order = {vid: i for i, vid in enumerate(truth_ids)}
            position = _check_after_kill(engine, order, truth_ids, note)
            assert not positions or position >= positions[-1], (
                f"{note}: the cursor moved backwards from {positions[-1]} to {position}"
            )
            positions.append(position)

        # the final pass: let every job finish, complete any pending scan, then sync
        note = f"[seed {seed}, {backend}, final]"
        wait_for(lambda: all(j["status"] in TERMINAL for j in world.truth()), 60, "a still world")
        for args in (("backfill", "--no-progress", "--wait", "20"), ("sync",)):
            done = run_cli(*args, env=env)
            assert done.returncode == 0, f"{note}: {args[0]}: {done.stdout} {done.stderr}"
        truth = world.truth()
        check_mirror(engine, truth, source=SOURCE, note=note)
        transitions = check_audit(engine, note)
        state = _state(engine)
        assert state.cursor_id == truth[-1]["id"], f"{note}: the cursor is not at the end"
        assert len(truth) - 1 >= positions[-1], note
        assert state.scan_started_at is None and state.lease_owner is None, note
        with engine.connect() as conn:
            runs = {r.id: r for r in conn.execute(sa.select(sync_runs))}
        dangling = [r.id for r in runs.values() if r.outcome == "running"]
        assert not dangling, f"{note}: runs left running: {dangling}"
        for run_id in left_running:
            run = runs[run_id]
            assert run.outcome == "interrupted" and run.finished_at is not None, (
                f"{note}: run {run_id} a kill left running is {run.outcome}"
            )
        outcomes = Counter(r.outcome for r in runs.values())
    engine.dispose()
    figures(
        "crash", backend=backend, seed=seed, kills=kills, kills_mid_run=mid_run,
        finished_before_kill=finished, kill_modes=dict(modes), killed_kinds=dict(kinds),
        jobs=len(truth), transitions=transitions, runs=dict(outcomes),
        runs_closed_interrupted=len(left_running), cursor_positions=len(set(positions)),
    )  # fmt: skip
