"""The measurements: each builds what it needs, runs one thing, and returns numbers.

Everything goes through the code `ingester backfill` / `ingester sync` run (`cli.make_syncer`,
`VideosClient`, `Syncer`, `SqlStore`), against `bench.server` in another process.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ingester.api import VideosClient
from ingester.cli import make_syncer
from ingester.config import Secret, SourceSettings
from ingester.database import make_engine, migrate
from ingester.protocols import Order, Page
from ingester.store import SqlStore
from ingester.sync import PassResult, Syncer

from .server import API_KEY, Served

POSTGRES_URL = "postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql"
SOURCE = "default"  # the name `ingester` gives the one source of an environment-only config
ROOT = Path(__file__).resolve().parent.parent


def settings(served: Served) -> SourceSettings:
    """The source settings of the benchmark server (pages of 100)."""
    return SourceSettings(
        name=SOURCE, base_url=served.base_url, api_key=Secret(API_KEY), page_size=100
    )


# --- databases ---------------------------------------------------------------------------------


@contextmanager
def database(backend: str, workdir: Path, server_url: str | None = None) -> Iterator[str]:
    """A fresh, migrated database on `backend` for the block; dropped afterwards."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        _migrate(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    base = server_url or POSTGRES_URL
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


# --- the three timings of a backfill ------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One timed run: wall seconds, and what it did."""

    seconds: float
    pages: int = 0
    items: int = 0
    requests: int = 0
    written: int = 0
    cpu_s: float = 0.0  # CPU time of this process (every thread) meanwhile


def fetch_only(served: Served, keep: dict[str | None, Page] | None = None) -> Timed:
    """Walk the whole list `asc` through the client `ingester backfill` uses; no database."""
    client = VideosClient(settings(served))
    after: str | None = None
    pages = items = 0
    started, cpu = time.perf_counter(), time.process_time()
    with client:
        while True:
            page = client.list_page(after=after, order="asc", limit=100)
            pages += 1
            items += len(page.items)
            if keep is not None:
                keep[after] = page
            if not page.has_more or page.last_id is None:
                break
            after = page.last_id
        return Timed(time.perf_counter() - started, pages, items, client.requests,
                     cpu_s=time.process_time() - cpu)  # fmt: skip


def request_time(served: Served, requests: int = 50) -> float:
    """Median seconds of one list request, alone: the floor of each step of a chain."""
    times: list[float] = []
    after: str | None = None
    with VideosClient(settings(served)) as client:
        for _ in range(requests):
            started = time.perf_counter()
            page = client.list_page(after=after, order="asc", limit=100)
            times.append(time.perf_counter() - started)
            after = page.last_id if page.has_more else None
    return statistics.median(times)


class MemorySource:
    """A `PageSource` serving pages fetched beforehand: the write path without HTTP."""

    def __init__(self, pages: dict[str | None, Page]) -> None:
        self.pages = pages
        self.requests = 0
        self.retries = 0

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        """The stored page that followed `after` (only the `asc` walk is stored)."""
        assert order == "asc" and limit == 100, (order, limit)
        self.requests += 1
        return self.pages[after]

    def get_video(self, video_id: str) -> Any | None:
        """Not used by a backfill."""
        raise AssertionError("get_video is not expected in a backfill")


def write_only(served: Served, pages: dict[str | None, Page], url: str) -> Timed:
    """The same pages through the same `Syncer.backfill` and `SqlStore`, no HTTP."""
    engine = make_engine(url)
    try:
        syncer = Syncer(settings(served), MemorySource(pages), SqlStore(engine), owner="bench")
        return _timed(syncer.backfill)
    finally:
        engine.dispose()


def backfill(served: Served, url: str) -> Timed:
    """What `ingester backfill` does (`cli.make_syncer`), timed in this process."""
    engine = make_engine(url)
    try:
        syncer = make_syncer(settings(served), SqlStore(engine), lease_ttl_s=120.0)
        return _timed(syncer.backfill)
    finally:
        engine.dispose()


def sync_pass(served: Served, url: str) -> Timed:
    """One incremental pass, as `ingester sync` runs it, timed in this process."""
    engine = make_engine(url)
    try:
        syncer = make_syncer(settings(served), SqlStore(engine), lease_ttl_s=120.0)
        return _timed(syncer.sync)
    finally:
        engine.dispose()


def _timed(run: Any) -> Timed:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result: PassResult = run()
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    if result.outcome != "succeeded":
        raise RuntimeError(f"the pass ended {result.outcome}")
    c = result.counts
    written = c.inserted + c.updated + c.transitions
    return Timed(seconds, c.pages, c.items, c.requests, written, cpu_s)


# --- peak memory of the real command -------------------------------------------------------------


def backfill_rss(served: Served, url: str, workdir: Path) -> tuple[int, float]:
    """Run `ingester backfill` in a subprocess: (its peak RSS in bytes, wall seconds)."""
    report = workdir / f"rss-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "OPENAI_BASE_URL": served.base_url,
        "OPENAI_API_KEY": API_KEY,
        "INGESTER_DATABASE_URL": url,
        "BENCH_RSS_FILE": str(report),
    }
    env.pop("INGESTER_CONFIG", None)
    cmd = [sys.executable, "-m", "bench.rss_child", "--quiet", "backfill", "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ingester backfill exited {done.returncode}: {done.stderr.strip()}")
    try:
        return int(report.read_text()), seconds
    finally:
        report.unlink(missing_ok=True)
