"""`ingester run`: the long-running service (APScheduler 3.x, signals, systemd notify).

One scheduler job per source. Each tick runs an incremental pass, then a reconcile scan
when one is due (or pending). The next tick comes after the pass interval while jobs are
open and after the idle interval otherwise, with jitter; APScheduler never starts a job
while the previous run of it is still going (`max_instances=1`) and coalesces missed runs.

Signals (`stopping`, as for the one-shot commands): the first SIGTERM/SIGINT only records
the request; the pass in hand finishes its page (its commit) and the process exits 0. A
second one exits at once. SIGHUP reloads the configuration. Every wait wakes on the stop.

The watchdog (`WatchdogSec=`) is pinged from progress, not from the scheduler being alive:
each worker notes a heartbeat when a tick starts and ends, a response arrives or a page is
committed (a wait the pass chose, such as a Retry-After, counts until it ends), and the main
loop pings only while no running pass has been silent longer than the watchdog interval. So
a stuck pass gets the service restarted; `WatchdogSec=` must exceed the client timeout.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Connection

from .config import Settings, SourceSettings
from .database import make_engine, require_head, translated
from .errors import ConfigError, IngesterError, LeaseBusyError, StoreError
from .metrics import Metrics, MetricsServer
from .models import sync_state
from .stopping import StopToken, stop_on_signals
from .store import SqlStore
from .systemd import Notifier
from .wiring import build_syncer

log = logging.getLogger(__name__)


class SourceWorker:
    """Runs the passes of one source; called by the scheduler, never twice at once."""

    def __init__(
        self,
        settings: Settings,
        source: SourceSettings,
        store: SqlStore,
        owner: str,
        stop: StopToken,
        metrics: Metrics,
        reschedule: Callable[[str, float], None],
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.stop = stop
        self.metrics = metrics
        self.reschedule = reschedule
        self.interval_s = settings.sync_interval_s
        self.last_summary = "no pass yet"
        self.running = False
        self.heartbeat = time.monotonic()  # the last sign of progress (later during a wait)

        def on_response(status: int | None, elapsed_s: float) -> None:
            metrics.record_response(source.name, status, elapsed_s)
            self.beat()

        def on_page(_counts: object) -> None:
            metrics.lease.labels(source.name).set(1)
            self.beat()

        self.wired = build_syncer(
            source, store, owner=owner, stop=stop, lease_ttl_s=settings.lease_ttl_s,
            on_page=on_page, on_response=on_response, sleep=self._wait,
        )  # fmt: skip
        self.syncer = self.wired.syncer

    def beat(self) -> None:
        """Note that the pass made progress."""
        self.heartbeat = max(self.heartbeat, time.monotonic())

    def _wait(self, seconds: float) -> None:
        # a wait the pass chose (Retry-After, budget, back-off) is not silence until it ends
        self.heartbeat = max(self.heartbeat, time.monotonic() + seconds)
        self.stop.sleep(seconds)

    def silent_s(self, now: float) -> float:
        """How long the running pass has shown no progress (0 when no pass runs)."""
        return max(0.0, now - self.heartbeat) if self.running else 0.0

    def tick(self) -> None:
        """One scheduled run: a sync pass, then a reconcile scan when due."""
        name = self.source.name
        if self.stop():
            return
        self.running = True
        self.beat()
        try:
            result = self.syncer.sync()
            self.metrics.record_pass(name, result)
            self._summary(result.kind, result.outcome, result.counts.items, result.elapsed_s)
            if result.outcome == "succeeded" and not result.head_only and self._reconcile_due():
                scan = self.syncer.reconcile()
                self.metrics.record_pass(name, scan)
                self._summary(scan.kind, scan.outcome, scan.counts.items, scan.elapsed_s)
            self._set_interval(
                self.settings.sync_interval_s
                if result.open_jobs
                else self.settings.effective_idle_interval_s
            )
            open_jobs = self.store.count_open(name, self.source.terminal_statuses)
            self.metrics.open_jobs.labels(name).set(open_jobs)
        except LeaseBusyError:
            log.info("source %s is busy in another process; skipping this tick", name)
        except (IngesterError, KeyboardInterrupt) as exc:
            self.metrics.record_failure(name, "sync")
            self.last_summary = f"{name}: failed: {exc}"
            log.error(
                "pass of %s failed: %s", name, exc,
                extra={"fields": {"event": "pass_failed", "source": name,
                                  "request_id": getattr(exc, "request_id", None)}},
            )  # fmt: skip
            self._set_interval(self.settings.sync_interval_s)
        except Exception:  # a bug: keep the service up, say it loudly, try again next tick
            self.metrics.record_failure(name, "sync")
            log.exception("unexpected error in the pass of %s", name)
        finally:
            self.running = False
            self.beat()
            self.metrics.lease.labels(name).set(0)

    def _summary(self, kind: str, outcome: str, items: int, elapsed_s: float) -> None:
        self.last_summary = f"{self.source.name}: {kind} {outcome}, {items} items, {elapsed_s:.1f}s"

    def _set_interval(self, seconds: float) -> None:
        if seconds != self.interval_s and not self.stop():
            self.interval_s = seconds
            self.reschedule(self.source.name, seconds)

    @contextmanager
    def _reading(self, what: str) -> Iterator[Connection]:
        """A connection for a small read; driver errors become StoreError (one log line)."""
        with translated(f"database error while {what}"), self.store.engine.connect() as conn:
            yield conn

    def _reconcile_due(self) -> bool:
        with self._reading("checking whether a reconcile is due") as conn:
            row = conn.execute(
                sa.select(sync_state.c.last_full_scan_at, sync_state.c.scan_started_at).where(
                    sync_state.c.source == self.source.name
                )
            ).first()
        if row is None:
            return False
        if row.scan_started_at is not None:
            return True  # a pending scan (interrupted reconcile or backfill): finish it
        last = row.last_full_scan_at
        due = timedelta(seconds=self.settings.reconcile_interval_s)
        return last is None or datetime.now(UTC) - last >= due

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.wired.close()


class Service:
    """The scheduler and the workers of every configured source."""

    def __init__(self, settings: Settings, owner: str, notifier: Notifier) -> None:
        self.owner = owner
        self.notifier = notifier
        self.stop = StopToken()
        self.reload_requested = threading.Event()
        self.settings = settings
        engine = make_engine(settings.database_url)
        require_head(engine)
        self.store = SqlStore(engine)
        self.metrics = Metrics(settings.health_max_age_s or _default_max_age(settings))
        self.server = (
            MetricsServer(self.metrics, settings.metrics_address)
            if settings.metrics_address
            else None
        )
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max(1, len(settings.sources)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self.workers: dict[str, SourceWorker] = {}

    def start(self) -> None:
        """Schedule every source (first pass right away) and start serving metrics."""
        for source in self.settings.sources:
            self._add(source)
        self.scheduler.start()
        if self.server is not None:
            self.server.start()

    def _add(self, source: SourceSettings) -> None:
        worker = SourceWorker(
            self.settings, source, self.store, self.owner, self.stop, self.metrics,
            self._reschedule,
        )  # fmt: skip
        self.workers[source.name] = worker
        self.metrics.add_source(source.name, self._last_success(source.name))
        self.scheduler.add_job(
            worker.tick,
            self._trigger(self.settings.sync_interval_s),
            id=source.name,
            name=f"sync {source.name}",
            next_run_time=datetime.now(UTC),
        )

    def _trigger(self, seconds: float) -> IntervalTrigger:
        jitter = min(self.settings.jitter_s, seconds / 4) or None
        return IntervalTrigger(seconds=seconds, jitter=jitter, timezone=UTC)

    def _reschedule(self, name: str, seconds: float) -> None:
        log.info("source %s: next passes every %.0fs", name, seconds)
        self.scheduler.reschedule_job(name, trigger=self._trigger(seconds))

    def _last_success(self, name: str) -> float | None:
        try:
            with self.store.engine.connect() as conn:
                last = conn.execute(
                    sa.select(sync_state.c.last_success_at).where(sync_state.c.source == name)
                ).scalar()
        except sa.exc.SQLAlchemyError:
            return None
        return last.timestamp() if last is not None else None

    def reload(self, settings: Settings) -> None:
        """Apply a new configuration: sources added, removed or changed are rescheduled."""
        if settings.database_url != self.settings.database_url:
            log.warning("the database URL cannot change on reload; restart to apply it")
            return
        self.scheduler.pause()
        try:
            for name, worker in list(self.workers.items()):
                self.scheduler.remove_job(name)
                worker.close()
            self.workers.clear()
            self.settings = settings
            for source in settings.sources:
                self._add(source)
        finally:
            self.scheduler.resume()
        log.info("configuration reloaded: %d source(s)", len(settings.sources))

    def stalled(self, limit_s: float) -> list[str]:
        """The sources whose running pass has been silent longer than `limit_s`."""
        now = time.monotonic()
        return [n for n, w in list(self.workers.items()) if w.silent_s(now) > limit_s]

    def status_line(self) -> str:
        """The STATUS= line for systemd: the last pass of each source."""
        return "; ".join(w.last_summary for w in self.workers.values())[:400]

    def shutdown(self) -> None:
        """Stop scheduling, let the passes in hand commit their page, close everything."""
        self.stop.request()
        self.scheduler.shutdown(wait=True)
        for worker in self.workers.values():
            worker.close()
        if self.server is not None:
            self.server.stop()
        self.store.engine.dispose()


def _default_max_age(settings: Settings) -> float:
    """Unhealthy after missing about three passes."""
    return 3 * max(settings.sync_interval_s, settings.effective_idle_interval_s) + 60


def run_service(load: Callable[[], Settings], owner: str, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    notifier = notifier or Notifier()
    settings = load()
    service = Service(settings, owner, notifier)

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        service.reload_requested.set()

    previous_hup = signal.signal(signal.SIGHUP, on_hup)
    try:
        with stop_on_signals(service.stop):
            service.start()
            names = ", ".join(s.name for s in settings.sources)
            log.info("service started: %d source(s): %s", len(settings.sources), names)
            notifier.ready(f"syncing {names}")
            watchdog_s = notifier.watchdog_s
            tick = min(1.0, watchdog_s / 3) if watchdog_s else 1.0
            last_status = ""
            last_stalled: list[str] = []
            while not service.stop.event.wait(tick):
                stalled = service.stalled(watchdog_s) if watchdog_s else []
                if stalled and stalled != last_stalled:
                    log.warning("no progress in %s for %gs: not pinging the watchdog",
                                ", ".join(stalled), watchdog_s)  # fmt: skip
                last_stalled = stalled
                if service.scheduler.running and not stalled:
                    notifier.watchdog()
                if service.reload_requested.is_set():
                    service.reload_requested.clear()
                    notifier.send(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
                    try:
                        service.reload(load())
                    except (ConfigError, StoreError) as exc:
                        log.error("reload refused, keeping the running configuration: %s", exc)
                    sources = ", ".join(s.name for s in service.settings.sources)
                    notifier.ready(f"syncing {sources}")
                status = service.status_line()
                if status != last_status:
                    notifier.status(status)
                    last_status = status
            log.info("stop requested: finishing the pages in hand")
            notifier.stopping()
            service.shutdown()
            log.info("service stopped")
            return 0
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        notifier.close()
