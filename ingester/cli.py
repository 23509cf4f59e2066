"""The `ingester` command: migrate, sync, backfill, run, status, demo, report.

Only this module (and `daemon`) builds concrete objects, through `wiring`, and configures
logging. Every `IngesterError` ends as one line on stderr and a non-zero exit code:

    1  a pass failed (provider or data error)      5  the source is busy (lease held elsewhere)
    2  bad settings or input                        6  the database failed or is not migrated
    3  the provider refused the API key             7  aborted by a second stop signal
    4  the provider does not serve the Videos API 130  interrupted by SIGINT/SIGTERM

Stopping (`stopping`, the same for every command): the first SIGINT/SIGTERM lets the pass
commit the page in hand and wakes every wait (Retry-After, budget, back-off, `--wait`, the
demo's interval); the run ends `interrupted` and a one-shot command exits 130 (`run` exits 0).
A second signal exits at once with 7 (`stopping.ABORT_EXIT_CODE`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import click

from . import status as status_mod
from .config import Settings, SourceSettings, load_settings
from .database import make_engine, migrate, require_head, safe_url, schema_revision
from .errors import (
    AuthError,
    ConfigError,
    IngesterError,
    Interrupted,
    LeaseBusyError,
    NotServedError,
    StoreError,
)
from .protocols import RunCounts
from .runs import PassResult
from .stopping import stop_on_signals
from .store import SqlStore
from .wiring import build_syncer

if TYPE_CHECKING:
    from .simulator import Profile

log = logging.getLogger("ingester")

EXIT_CODES: list[tuple[type[IngesterError], int]] = [
    (ConfigError, 2),
    (AuthError, 3),
    (NotServedError, 4),
    (LeaseBusyError, 5),
    (StoreError, 6),
    (Interrupted, 130),  # stopped while waiting, before a run began (`--wait`, the demo)
]


# --- logging -----------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(fmt: str, verbose: int, quiet: bool) -> None:
    """Configure the root logger: one line per event on stdout (the journal reads it)."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO)
    for noisy in ("urllib3", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


# --- the command group -------------------------------------------------------------------------


class Context:
    """What every subcommand gets: the settings and how to build objects from them."""

    def __init__(self, flags: dict[str, Any], config_path: str | None) -> None:
        self.flags = flags
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings, built on first use (so `--help` never needs a valid config)."""
        if self._settings is None:
            self._settings = load_settings(self.flags, config_path=self.config_path)
        return self._settings

    def store(self, *, check_head: bool = True) -> SqlStore:
        """A store on the configured database, optionally checked to be at the migration head."""
        engine = make_engine(self.settings.database_url)
        if check_head:
            require_head(engine)
        return SqlStore(engine)


pass_ctx = click.make_pass_decorator(Context)


class Group(click.Group):
    """A click group that turns IngesterError into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IngesterError as exc:
            code = next((c for t, c in EXIT_CODES if isinstance(exc, t)), 1)
            click.echo(f"ingester: error: {exc}", err=True)
            ctx.exit(code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", help="TOML settings file "
              "[env: INGESTER_CONFIG].")  # fmt: skip
@click.option("--database-url", metavar="URL", help="SQLAlchemy URL of the mirror "
              "[env: INGESTER_DATABASE_URL; default: sqlite:///ingester.db].")  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log line format "
              "[env: INGESTER_LOG_FORMAT; default: text].")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="More log detail (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="ingester")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    database_url: str | None,
    log_format: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Keep a SQL mirror of a video provider's jobs (GET /videos), with an audit trail."""
    flags = {"database_url": database_url, "log_format": log_format}
    ctx.obj = Context(flags, config_path)
    fmt = log_format or os.environ.get("INGESTER_LOG_FORMAT") or "text"
    setup_logging(fmt if fmt in ("text", "json") else "text", verbose, quiet)


source_option = click.option(
    "--source", "source_name", metavar="NAME", help="Which configured source (needed when "
    "the config has several)."
)  # fmt: skip


def owner_id() -> str:
    """Who holds a lease: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def finish(result: PassResult) -> None:
    """Print a one-line summary and exit non-zero unless the pass succeeded."""
    c = result.counts
    click.echo(
        f"{result.kind} run {result.run_id}: {result.outcome}; {c.items} items in {c.pages} "
        f"pages, {c.inserted} inserted, {c.updated} updated, {c.transitions} transitions, "
        f"{c.requests} requests, {c.retries} retries, {c.errors} errors"
        + (f", {result.marked_missing} marked missing" if result.marked_missing else "")
        + f" ({result.elapsed_s:.1f}s)"
    )
    if result.head_only:
        click.echo(f"head-only mode: {result.head_only}; the newest jobs and every open job are "
                   "kept current, nothing is claimed about older ones")  # fmt: skip
    if result.outcome == "interrupted":
        sys.exit(130)


# --- commands ----------------------------------------------------------------------------------


@cli.command("migrate")
@click.option("--check", is_flag=True, help="Only report whether the schema is at the head.")
@pass_ctx
def migrate_cmd(obj: Context, check: bool) -> None:
    """Create or upgrade the tables (Alembic) to the current schema."""
    engine = make_engine(obj.settings.database_url)
    current, head = schema_revision(engine)
    if check:
        click.echo(f"schema at {current or '(empty)'}; head is {head}")
        if current != head:
            sys.exit(6)
        return
    migrate(engine)
    click.echo(f"{safe_url(engine)}: schema at {head} (was {current or 'empty'})")


@cli.command("sync")
@source_option
@pass_ctx
def sync_cmd(obj: Context, source_name: str | None) -> None:
    """Run one incremental pass: new jobs, open jobs, and stale jobs by id."""
    settings = obj.settings
    source = settings.source(source_name)
    source.require_key()
    store = obj.store()
    with (
        stop_on_signals() as stop,
        build_syncer(
            source, store, owner=owner_id(), stop=stop, lease_ttl_s=settings.lease_ttl_s
        ) as syncer,
    ):
        finish(syncer.sync())


def parse_day(value: str | None) -> datetime | None:
    """A --since/--until value: a date (YYYY-MM-DD) or an ISO datetime; UTC unless given."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a date (YYYY-MM-DD) or ISO datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command("backfill")
@source_option
@click.option("--since", metavar="DATE", help="Only jobs created at or after this date (UTC).")
@click.option("--until", metavar="DATE", help="Only jobs created before this date (UTC).")
@click.option("--wait", "wait_s", type=float, default=0.0, metavar="SECONDS",
              help="If the source is busy, wait up to this long for its lease.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")  # fmt: skip
@pass_ctx
def backfill_cmd(
    obj: Context,
    source_name: str | None,
    since: str | None,
    until: str | None,
    wait_s: float,
    progress: bool | None,
) -> None:
    """Scan the whole list (resumable) and mark jobs the provider no longer lists."""
    lo, hi = parse_day(since), parse_day(until)
    if lo and hi and lo >= hi:
        raise ConfigError("--since must be before --until")
    settings = obj.settings
    source = settings.source(source_name)
    source.require_key()
    store = obj.store()
    with (
        stop_on_signals() as stop,
        progress_reporter(progress) as on_page,
        build_syncer(
            source, store, owner=owner_id(), stop=stop, lease_ttl_s=settings.lease_ttl_s,
            on_page=on_page,
        ) as syncer,
    ):  # fmt: skip
        deadline, waited = time.monotonic() + wait_s, False
        while True:
            try:
                result = syncer.backfill(lo, hi)
                break
            except LeaseBusyError as busy:
                if time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.info("%s; waiting up to %gs for its lease", busy, wait_s)
                    waited = True
                stop.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finish(result)


@cli.command("status")
@source_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--runs", default=5, show_default=True, help="How many recent runs to show.")
@click.option("--errors", default=10, show_default=True, help="How many recent errors to show.")
@pass_ctx
def status_cmd(
    obj: Context, source_name: str | None, as_json: bool, runs: int, errors: int
) -> None:
    """Show the cursor, lease, recent runs, jobs by status and recent errors."""
    report = status_mod.collect(obj.store().engine, source_name, runs=runs, errors=errors)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(status_mod.render(report))


@cli.command("demo")
@click.option("--jobs", default=300, show_default=True, help="Jobs in the simulated world.")
@click.option("--passes", default=3, show_default=True, help="Sync passes to run.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@click.option("--profile", type=click.Choice(["openai", "litellm", "litellm-paged", "window"]),
              default="openai", show_default=True,
              help="The provider or gateway the simulator imitates.")  # fmt: skip
@pass_ctx
def demo_cmd(obj: Context, jobs: int, passes: int, interval: float, profile: Profile) -> None:
    """Mirror the built-in simulator (loopback, no key, no network) and print the status."""
    from .simulator import Simulator, World

    world = World(seed=1)
    now = time.time()
    world.add_jobs(jobs - jobs // 10, created_at=now - 3 * 86400, spacing_s=60.0,
                   queued_s=(0, 0), render_s=(0, 0))  # fmt: skip
    world.add_jobs(jobs // 10, created_at=now - 5, spacing_s=0.5, queued_s=(1, 3),
                   render_s=(2, 2 + interval * passes))  # fmt: skip
    key = uuid.uuid4().hex
    provider = "litellm" if profile.startswith("litellm") else "openai"
    with Simulator(world, profile=profile, api_key=key) as sim:
        from .config import Secret

        source = SourceSettings(
            name="demo", provider=provider, base_url=sim.base_url, api_key=Secret(key)
        )
        engine = make_engine(obj.settings.database_url)
        migrate(engine)
        store = SqlStore(engine)
        with (
            stop_on_signals() as stop,
            build_syncer(
                source, store, owner=owner_id(), stop=stop, lease_ttl_s=obj.settings.lease_ttl_s
            ) as syncer,
        ):
            for i in range(passes):
                if i:
                    stop.sleep(interval)
                finish(syncer.sync())
        click.echo(f"\nmirror: {safe_url(engine)}\n")
        click.echo(status_mod.render(status_mod.collect(engine, "demo")))


@cli.command("run")
@click.option("--interval", "sync_interval_s", type=float, metavar="SECONDS",
              help="Pass interval while jobs are open [env: INGESTER_SYNC_INTERVAL_S; "
              "default: 60].")  # fmt: skip
@click.option("--idle-interval", "idle_interval_s", type=float, metavar="SECONDS",
              help="Pass interval while no job is open [env: INGESTER_IDLE_INTERVAL_S; "
              "default: the pass interval].")  # fmt: skip
@click.option("--metrics-address", metavar="HOST:PORT", help="Serve /metrics and /healthz "
              "here (off by default) [env: INGESTER_METRICS_ADDRESS].")  # fmt: skip
@pass_ctx
def run_cmd(
    obj: Context,
    sync_interval_s: float | None,
    idle_interval_s: float | None,
    metrics_address: str | None,
) -> None:
    """Run as a service: sync every source on its interval until SIGTERM (SIGHUP reloads)."""
    from .daemon import run_service

    obj.flags.update(
        sync_interval_s=sync_interval_s,
        idle_interval_s=idle_interval_s,
        metrics_address=metrics_address,
    )

    def load() -> Settings:
        settings = load_settings(obj.flags, config_path=obj.config_path)
        for source in settings.sources:
            source.require_key()
        return settings

    load()  # fail fast on bad settings or a missing key, before anything starts
    sys.exit(run_service(load, owner=owner_id()))


@cli.command("report")
@click.option("--source", "source_name", metavar="NAME", help="Only this source [default: all].")
@click.option("-o", "--output", default="report.html", show_default=True, metavar="FILE",
              type=click.Path(dir_okay=False), help="Where to write the HTML page.")  # fmt: skip
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3660),
              help="How many days of jobs to chart.")  # fmt: skip
@pass_ctx
def report_cmd(obj: Context, source_name: str | None, output: str, days: int) -> None:
    """Write a static HTML report: jobs per day, render times, failure codes, sync health."""
    from pathlib import Path

    from . import report

    click.echo(report.write(obj.store().engine, Path(output), source=source_name, days=days))


# --- helpers ----------------------------------------------------------------------------------


@contextmanager
def progress_reporter(enabled: bool | None) -> Iterator[Callable[[RunCounts], None]]:
    """A page callback: a tqdm bar on a terminal, else a progress line every 10 s."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        from tqdm import tqdm

        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 0
        bar = tqdm(  # items read (a scan from both ends reads the page where they meet twice)
            unit=" items",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=width > 0,
            ncols=None if width > 0 else 80,  # a terminal that reports no size
        )

        def on_bar(counts: RunCounts) -> None:
            bar.update(counts.items - bar.n)
            bar.set_postfix(pages=counts.pages, new=counts.inserted, upd=counts.updated)

        try:
            yield on_bar
        finally:
            bar.close()
        return
    last = [time.monotonic()]

    def on_line(counts: RunCounts) -> None:
        if time.monotonic() - last[0] >= 10.0:
            last[0] = time.monotonic()
            log.info(
                "progress: %d items in %d pages, %d inserted, %d updated",
                counts.items, counts.pages, counts.inserted, counts.updated,
            )  # fmt: skip

    yield on_line


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ingester")


if __name__ == "__main__":
    main()
