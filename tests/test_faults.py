"""API faults: 30% of requests fail in every way the simulator can; passes still converge.

Real HTTP (the simulator on loopback, the real client with real sleeps), a real store. The
faults are 429 with `Retry-After: 1`, 500, 502 (an HTML body), 503, 504, connection resets,
stalls (the client's 0.25 s read timeout fires) and truncated bodies, drawn by the
simulator's seeded `faults.random(rate=0.3, ...)`. What must hold:

- the passes converge: the mirror equals the truth, with a consistent audit trail;
- no request is sent before a `Retry-After` allows it (read from the simulator's own log,
  where every request is stamped when it arrives);
- retries are bounded: no request is tried more than `max_retries + 1` times, and no pass
  retries more than `max_retries` per request it needed;
- every fault is in `sync_errors`: a fault that sent a response by its request id; a reset or
  a stall sends none, so it has no request id: those are counted, by the client's own words
  for them (ConnectionError, ReadTimeout), in rows without one.

The fast tier runs one seed on SQLite; the slow tier more seeds on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import Secret, SourceSettings
from ingester.database import make_engine, migrate
from ingester.errors import IngesterError, TransientApiError
from ingester.models import sync_errors, sync_runs
from ingester.simulator import FakeClock, Fault, RequestRecord, Simulator, World
from ingester.store import SqlStore
from ingester.sync import Syncer
from ingester.wiring import build_syncer
from tests.conftest import create_database, drop_database
from tests.proc import check_audit, check_mirror, figures

KEY = "sk-faults-test-77c1d0e9"
SEED = int(os.environ.get("INGESTER_FAULT_SEED", "5"))
RETRY_AFTER_S = 1
MAX_RETRIES = 3
KINDS = [
    Fault.rate_limited(RETRY_AFTER_S),
    Fault.server_error(500),
    Fault.raw(b"<html><body>502 Bad Gateway</body></html>", 502, "text/html"),
    Fault.unavailable(),
    Fault.error(504),
    Fault.reset(),
    Fault.stall(),
    Fault.truncated(),
]
NO_RESPONSE = ("reset", "stall")  # the client sees no status and no request id
NO_RESPONSE_WORDS = ("ConnectionError", "ReadTimeout", "Timeout")


def make_syncer(sim: Simulator, engine: Engine, clock: FakeClock) -> Syncer:
    source = SourceSettings(
        name="faults", base_url=sim.base_url, api_key=Secret(KEY), page_size=10,
        timeout_s=0.25, connect_timeout_s=1.0, max_retries=MAX_RETRIES,
    )  # fmt: skip
    return build_syncer(  # real sleeps: Retry-After is measured
        source, SqlStore(engine), owner="faults-test",
        clock=lambda: datetime.fromtimestamp(clock(), UTC),
    ).syncer  # fmt: skip


def retry_after_violations(log: list[RequestRecord]) -> list[tuple[float, str]]:
    """(gap, path) of each request sent sooner than a preceding 429's Retry-After allowed."""
    out = []
    for rec, nxt in itertools.pairwise(log):
        if rec.status == 429 and nxt.t - rec.t < RETRY_AFTER_S:
            out.append((round(nxt.t - rec.t, 3), nxt.path))
    return out


def longest_retry_chain(log: list[RequestRecord]) -> int:
    """The most attempts in a row at one target (path and query) that all failed."""
    longest, run, last = 0, 0, None
    for rec in log:
        target = (rec.path, tuple(sorted(rec.query.items())))
        failed = rec.fault is not None
        run = (run + 1 if target == last else 1) if failed else 0
        last = target if failed else None
        longest = max(longest, run)
    return longest


def run_under_faults(
    engine: Engine, seed: int, rounds: int, history: int = 100
) -> dict[str, object]:
    """Sync a moving world under 30% random faults until the mirror equals the truth."""
    clock = FakeClock(1_763_000_000.0)
    world = World(clock=clock, seed=seed)
    world.add_jobs(history, created_at=clock() - 86_400, spacing_s=60, queued_s=(0, 0),
                   render_s=(0, 0), fail_rate=0.2)  # fmt: skip
    note = f"[seed {seed}, {engine.dialect.name}]"
    passes: Counter[str] = Counter()
    with Simulator(world, api_key=KEY) as sim:
        syncer = make_syncer(sim, engine, clock)
        sim.faults.random(rate=0.3, kinds=KINDS, seed=seed)
        for i in range(rounds + 12):
            if i < rounds:
                world.add_jobs(3 + i % 4, spacing_s=0.4, queued_s=(0, 60), render_s=(30, 300),
                               fail_rate=0.3)  # fmt: skip
                clock.advance(90)
            else:
                clock.advance(3600)  # a quiet spell: everything finishes
            try:
                passes[syncer.sync().outcome] += 1
            except IngesterError as exc:
                assert isinstance(exc, TransientApiError), f"{note}: {exc!r}"
                passes["failed"] += 1
                continue
            if i >= rounds:
                try:
                    check_mirror(engine, world.truth(), source="faults", note=note)
                except AssertionError:
                    continue
                break
        else:
            raise AssertionError(f"{note}: no convergence after {passes}")
        sim.faults.clear()
        log = sim.requests
        for rec in log:
            if rec.fault == "stall":
                assert rec.status is None  # stalled requests are logged on arrival
    check_mirror(engine, world.truth(), source="faults", note=note)
    transitions = check_audit(engine, note)
    assert not retry_after_violations(log), f"{note}: {retry_after_violations(log)}"
    assert longest_retry_chain(log) <= MAX_RETRIES + 1, note
    with engine.connect() as conn:
        runs = conn.execute(sa.select(sync_runs)).all()
        rows = conn.execute(sa.select(sync_errors)).all()
    for run in runs:  # bounded per pass: at most MAX_RETRIES per request it needed
        assert run.retries <= MAX_RETRIES * (run.requests - run.retries), f"{note}: run {run.id}"
    assert sum(r.requests for r in runs) == len(log), f"{note}: requests counted != sent"
    recorded = {r.request_id for r in rows if r.request_id}
    faulted = [r for r in log if r.fault is not None]
    with_response = [r for r in faulted if r.fault not in NO_RESPONSE]
    missing = [(r.status, r.request_id) for r in with_response if r.request_id not in recorded]
    assert not missing, f"{note}: faults missing from sync_errors: {missing}"
    silent = [r for r in faulted if r.fault in NO_RESPONSE]
    anonymous = [
        r for r in rows
        if r.request_id is None and r.stage == "http"
        and any(w in r.message for w in NO_RESPONSE_WORDS)
    ]  # fmt: skip
    assert len(anonymous) >= len(silent), f"{note}: {len(silent)} resets/stalls, rows {anonymous}"
    kinds = Counter(
        f"{r.status}" if r.fault in ("status", "body") else str(r.fault) for r in faulted
    )
    return {
        "seed": seed, "backend": engine.dialect.name, "requests": len(log),
        "faults": len(faulted), "fault_kinds": dict(sorted(kinds.items())),
        "passes": dict(passes), "retries": sum(r.retries for r in runs),
        "error_rows": len(rows), "jobs": len(world.truth()), "transitions": transitions,
        "longest_retry_chain": longest_retry_chain(log),
        "min_gap_after_429_s": min(
            (round(b.t - a.t, 3) for a, b in itertools.pairwise(log) if a.status == 429),
            default=None,
        ),
    }  # fmt: skip


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_passes_converge_under_30_percent_faults(sqlite_engine: Engine) -> None:
    result = run_under_faults(sqlite_engine, SEED, rounds=5)
    figures("faults", tier="fast", **result)
    assert result["faults"] >= 10  # the seed really exercised the client


def test_retry_after_outlives_a_pass_that_gave_up(sqlite_engine: Engine) -> None:
    """A 429 on the last allowed attempt fails the pass; the next pass still waits."""
    clock = FakeClock(1_763_000_000.0)
    world = World(clock=clock, seed=3)
    world.add_jobs(5, created_at=clock() - 3600, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        syncer = make_syncer(sim, sqlite_engine, clock)
        sim.faults.push(Fault.rate_limited(RETRY_AFTER_S), count=MAX_RETRIES + 1)
        with pytest.raises(TransientApiError):
            syncer.sync()
        assert syncer.sync().outcome == "succeeded"
        log = sim.requests
    assert [r.status for r in log] == [429] * (MAX_RETRIES + 1) + [200]
    assert not retry_after_violations(log), retry_after_violations(log)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("offset", [1, 2])
def test_more_seeds_converge(backend: str, offset: int, tmp_path: Path) -> None:
    url, admin = create_database(backend, tmp_path)
    engine = make_engine(url)
    try:
        migrate(engine)
        result = run_under_faults(engine, SEED + offset * 100, rounds=15, history=300)
        figures("faults", tier="slow", **result)
    finally:
        engine.dispose()
        drop_database(admin, url)


def test_a_failed_page_read_ahead_is_one_error_row(sqlite_engine: Engine) -> None:
    """The page after the one being written fails first: its error is still recorded once."""

    class SlowStore(SqlStore):
        def snapshots(self, ids: list[str]) -> Any:
            time.sleep(0.3)  # the request read ahead fails meanwhile
            return super().snapshots(ids)

    world = World(seed=1)
    world.add_jobs(25, created_at=1_763_000_000, status="completed")
    with Simulator(world, api_key=KEY) as sim:
        source = SourceSettings(name="faults", base_url=sim.base_url, api_key=Secret(KEY),
                                page_size=10, max_retries=0)  # fmt: skip
        syncer = build_syncer(source, SlowStore(sqlite_engine), owner="t").syncer
        sim.faults.push(Fault.server_error(500), path_contains="after=")
        with pytest.raises(TransientApiError):
            syncer.sync()
        faulted = [r.request_id for r in sim.requests if r.fault]
    with sqlite_engine.connect() as conn:
        rows = conn.execute(sa.select(sync_errors.c.request_id)).scalars().all()
    assert rows == faulted, rows
