"""The SQL side of the mirror: page upserts, transitions, cursor, runs, errors and the lease.

`SqlStore` implements `protocols.Store` on SQLAlchemy Core. Every method is one
transaction; driver errors are translated to `StoreError` here, at the boundary, with the
statement and its parameters left out (they may hold user data).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .errors import LeaseBusyError, StoreError
from .models import sync_errors, sync_runs, sync_state, video_job_transitions, video_jobs
from .protocols import (
    ErrorEvent,
    JobSnapshot,
    PageWrite,
    RunCounts,
    ScanStart,
    SourceState,
    Transition,
)
from .records import VideoRecord, clean_text

log = logging.getLogger(__name__)

WINDOW_GRACE = timedelta(minutes=5)
MESSAGE_CAP = 2000

_jobs = video_jobs.c
_state = sync_state.c


class SqlStore:
    """The mirror in a SQL database (SQLite, PostgreSQL or MariaDB)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            text = " ".join(str(orig).split())[:300]
            raise StoreError(f"database error while {what}: {text}") from exc

    # --- lease -------------------------------------------------------------------------------

    def acquire_lease(self, source: str, owner: str, ttl_s: float, now: datetime) -> bool:
        """Take the lease if free, ours or expired; then close runs a dead holder left open."""
        self._ensure_state(source, now)
        with self._tx("taking the lease") as conn:
            taken = conn.execute(
                sa.update(sync_state)
                .where(
                    _state.source == source,
                    sa.or_(
                        _state.lease_owner.is_(None),
                        _state.lease_owner == owner,
                        _state.lease_expires_at < now,
                    ),
                )
                .values(
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=ttl_s),
                    updated_at=now,
                )
            ).rowcount
            if taken != 1:
                return False
            # Whoever left a run `running` for this source is gone: we hold the lease now.
            conn.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.source == source, sync_runs.c.outcome == "running")
                .values(
                    outcome="interrupted",
                    finished_at=now,
                    error="the process ended before closing this run",
                )
            )
        return True

    def release_lease(self, source: str, owner: str) -> None:
        """Give the lease back if we still hold it."""
        with self._tx("releasing the lease") as conn:
            conn.execute(
                sa.update(sync_state)
                .where(_state.source == source, _state.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _ensure_state(self, source: str, now: datetime) -> None:
        with self._tx("reading the sync state") as conn:
            exists = conn.execute(sa.select(_state.source).where(_state.source == source)).first()
        if exists:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(sync_state).values(source=source, updated_at=now))
        except IntegrityError:
            pass  # another process created it first
        except SQLAlchemyError as exc:
            raise StoreError(f"database error while creating the sync state: {exc}") from exc

    # --- state -------------------------------------------------------------------------------

    def load_state(self, source: str) -> SourceState:
        """The source's cursor, scan checkpoint and reported statuses."""
        with self._tx("reading the sync state") as conn:
            row = conn.execute(sa.select(sync_state).where(_state.source == source)).first()
            if row is None:
                return SourceState()
            missing = False
            if row.cursor_id is not None:
                missing = (
                    conn.execute(
                        sa.select(_jobs.missing_since).where(_jobs.id == row.cursor_id)
                    ).scalar()
                    is not None
                )
        return SourceState(
            cursor_id=row.cursor_id,
            cursor_created_at=row.cursor_created_at,
            cursor_missing=missing,
            scan_kind=row.scan_kind,
            scan_run_id=row.scan_run_id,
            scan_started_at=row.scan_started_at,
            scan_after_id=row.scan_after_id,
            scan_since=row.scan_since,
            scan_until=row.scan_until,
            reported_statuses=frozenset(row.reported_statuses or ()),
        )

    # --- runs and errors ---------------------------------------------------------------------

    def start_run(self, source: str, kind: str, owner: str, now: datetime) -> int:
        """Open a `sync_runs` row (outcome running) and return its id."""
        with self._tx("opening a run") as conn:
            result = conn.execute(
                sa.insert(sync_runs).values(
                    source=source, kind=kind, owner=owner, started_at=now, outcome="running"
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def finish_run(
        self, run_id: int, outcome: str, counts: RunCounts, error: str | None, now: datetime
    ) -> None:
        """Close the run with its outcome and final counts."""
        with self._tx("closing a run") as conn:
            conn.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.id == run_id)
                .values(outcome=outcome, finished_at=now, error=_cap(error), **_counts(counts))
            )
            if outcome == "succeeded":
                source = sa.select(sync_runs.c.source).where(sync_runs.c.id == run_id)
                conn.execute(
                    sa.update(sync_state)
                    .where(_state.source == source.scalar_subquery())
                    .values(last_success_at=now)
                )

    def record_errors(self, source: str, run_id: int | None, events: list[ErrorEvent]) -> None:
        """Keep errors that arose outside a page."""
        if events:
            with self._tx("recording errors") as conn:
                _insert_errors(conn, source, run_id, events, datetime.now(UTC))

    # --- pages -------------------------------------------------------------------------------

    def snapshots(self, ids: list[str]) -> dict[str, JobSnapshot]:
        """The stored snapshot of each of `ids` that is in the mirror."""
        query = sa.select(
            _jobs.id, _jobs.status, _jobs.content_hash, _jobs.first_seen_at, _jobs.missing_since
        ).where(_jobs.id.in_(ids))
        with self._tx("reading jobs") as conn:
            rows = conn.execute(query).all()
        return {
            r.id: JobSnapshot(
                r.status, r.content_hash, r.first_seen_at, r.missing_since is not None
            )
            for r in rows
        }

    def write_page(self, batch: PageWrite, lease_ttl_s: float) -> None:
        """Commit one page: rows, transitions, errors, cursor/checkpoint, run counts, lease."""
        now = batch.now
        state_values: dict[str, Any] = {
            "lease_expires_at": now + timedelta(seconds=lease_ttl_s),
            "updated_at": now,
        }
        if batch.cursor is not None:
            state_values["cursor_id"], state_values["cursor_created_at"] = batch.cursor
        if batch.scan_after_id is not None:
            state_values["scan_after_id"] = batch.scan_after_id
        if batch.reported_statuses is not None:
            state_values["reported_statuses"] = sorted(batch.reported_statuses)
        with self._tx("writing a page") as conn:
            held = conn.execute(
                sa.update(sync_state)
                .where(_state.source == batch.source, _state.lease_owner == batch.owner)
                .values(**state_values)
            ).rowcount
            if held != 1:
                raise LeaseBusyError(
                    f"lost the lease of source {batch.source}; the page was not written"
                )
            if batch.inserts:
                conn.execute(
                    sa.insert(video_jobs),
                    [_insert_row(r, batch.source, now) for r in batch.inserts],
                )
            if batch.updates:
                conn.execute(
                    sa.update(video_jobs)
                    .where(_jobs.id == sa.bindparam("_id"))
                    .values({k: sa.bindparam(k) for k in _UPDATE_KEYS}),
                    [_update_row(r, batch.source, now) for r in batch.updates],
                )
            _update_ids(conn, batch.touches, last_seen_at=now, missing_since=None)
            _update_ids(conn, batch.checked, last_checked_at=now)
            _update_ids(conn, batch.gone, missing_since=now, only_present=True)
            if batch.transitions:
                conn.execute(
                    sa.insert(video_job_transitions),
                    [_transition_row(t, batch, now) for t in batch.transitions],
                )
            if batch.errors:
                _insert_errors(conn, batch.source, batch.run_id, batch.errors, now)
            conn.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.id == batch.run_id)
                .values(**_counts(batch.counts))
            )

    # --- full scans --------------------------------------------------------------------------

    def begin_scan(self, source: str, scan: ScanStart) -> SourceState:
        """Start a scan checkpoint unless a pending one has the same bounds (then resume it)."""
        state = self.load_state(source)
        resume = (
            state.scan_started_at is not None
            and state.scan_since == scan.since
            and state.scan_until == scan.until
        )
        values: dict[str, Any] = {"scan_kind": scan.kind, "scan_run_id": scan.run_id}
        if not resume:
            values.update(
                scan_started_at=scan.started_at,
                scan_after_id=None,
                scan_since=scan.since,
                scan_until=scan.until,
            )
        with self._tx("starting a scan") as conn:
            conn.execute(sa.update(sync_state).where(_state.source == source).values(**values))
        if resume:
            log.info("resuming the %s scan of %s after %s", scan.kind, source, state.scan_after_id)
        return self.load_state(source)

    def finish_scan(self, source: str, now: datetime, windowed: bool) -> int:
        """Close the pending scan: mark jobs it did not see missing; return how many."""
        state = self.load_state(source)
        started = state.scan_started_at
        if started is None:
            return 0
        seen = sa.and_(_jobs.source == source, _jobs.last_seen_at >= started)
        where = [
            _jobs.source == source,
            _jobs.last_seen_at < started,
            _jobs.missing_since.is_(None),
        ]
        if state.scan_since is not None:
            where.append(_jobs.created_at >= state.scan_since)
        if state.scan_until is not None:
            where.append(_jobs.created_at < state.scan_until)
        with self._tx("finishing a scan") as conn:
            oldest = conn.execute(sa.select(sa.func.min(_jobs.created_at)).where(seen)).scalar()
            marked = 0
            if oldest is None:
                log.warning("the scan of %s saw no job; missing_since left untouched", source)
            else:
                if windowed:
                    # Out of the provider's window is out of sight, not gone: only jobs newer
                    # than the oldest one listed (plus the time the window slid meanwhile).
                    where.append(_jobs.created_at >= oldest + (now - started) + WINDOW_GRACE)
                marked = conn.execute(
                    sa.update(video_jobs).where(*where).values(missing_since=now)
                ).rowcount
            done: dict[str, Any] = {
                "scan_kind": None,
                "scan_run_id": None,
                "scan_started_at": None,
                "scan_after_id": None,
                "scan_since": None,
                "scan_until": None,
                "updated_at": now,
            }
            if state.scan_since is None and state.scan_until is None:
                done["last_full_scan_at"] = now
            conn.execute(sa.update(sync_state).where(_state.source == source).values(**done))
        return int(marked)

    def stale_open_ids(
        self,
        source: str,
        terminal: tuple[str, ...],
        first_seen_before: datetime,
        checked_before: datetime,
        limit: int,
    ) -> list[str]:
        """Open jobs older than the stale age, not re-read since `checked_before`."""
        query = (
            sa.select(_jobs.id)
            .where(
                _jobs.source == source,
                _jobs.status.not_in(terminal),
                _jobs.missing_since.is_(None),
                _jobs.first_seen_at <= first_seen_before,
                sa.or_(_jobs.last_checked_at.is_(None), _jobs.last_checked_at <= checked_before),
            )
            .order_by(_jobs.created_at, _jobs.id)
            .limit(limit)
        )
        with self._tx("reading stale jobs") as conn:
            return list(conn.execute(query).scalars())


# --- row builders ------------------------------------------------------------------------------

_UPDATE_KEYS = (
    "source", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error_code", "error_message", "raw",
    "content_hash", "last_seen_at", "last_changed_at", "missing_since",
)  # fmt: skip


def _update_row(rec: VideoRecord, source: str, now: datetime) -> dict[str, Any]:
    return {
        "_id": rec.id,
        "source": source,
        "model": rec.model,
        "status": rec.status,
        "progress": rec.progress,
        "created_at": rec.created_at,
        "completed_at": rec.completed_at,
        "expires_at": rec.expires_at,
        "prompt": rec.prompt,
        "size": rec.size,
        "seconds": rec.seconds,
        "remixed_from_video_id": rec.remixed_from_video_id,
        "error_code": rec.error_code,
        "error_message": rec.error_message,
        "raw": rec.raw,
        "content_hash": rec.content_hash,
        "last_seen_at": now,
        "last_changed_at": now,
        "missing_since": None,
    }


def _insert_row(rec: VideoRecord, source: str, now: datetime) -> dict[str, Any]:
    row = _update_row(rec, source, now)
    row["id"] = row.pop("_id")
    row["first_seen_at"] = now
    row["last_checked_at"] = None
    return row


def _transition_row(t: Transition, batch: PageWrite, now: datetime) -> dict[str, Any]:
    return {
        "video_id": t.video_id,
        "source": batch.source,
        "from_status": t.from_status,
        "to_status": t.to_status,
        "progress": t.progress,
        "observed_at": now,
        "run_id": batch.run_id,
    }


def _update_ids(
    conn: Connection, ids: Sequence[str], *, only_present: bool = False, **values: Any
) -> None:
    if not ids:
        return
    query = sa.update(video_jobs).where(_jobs.id.in_(ids))
    if only_present:
        query = query.where(_jobs.missing_since.is_(None))
    conn.execute(query.values(**values))


def _insert_errors(
    conn: Connection,
    source: str,
    run_id: int | None,
    events: Sequence[ErrorEvent],
    now: datetime,
) -> None:
    conn.execute(
        sa.insert(sync_errors),
        [
            {
                "run_id": run_id,
                "source": source,
                "occurred_at": now,
                "stage": e.stage,
                "http_status": e.http_status,
                "request_id": _short(e.request_id),
                "video_id": _short(e.video_id),
                "message": _cap(e.message) or "",
                "payload": _cap(e.payload),
            }
            for e in events
        ],
    )


def _counts(c: RunCounts) -> dict[str, int]:
    return {
        "pages": c.pages,
        "items": c.items,
        "inserted": c.inserted,
        "updated": c.updated,
        "transitions": c.transitions,
        "requests": c.requests,
        "retries": c.retries,
        "errors": c.errors,
    }


def _cap(text: str | None) -> str | None:
    if text is None:
        return None
    text = clean_text(text)
    return text if len(text) <= MESSAGE_CAP else text[:MESSAGE_CAP] + "..."


def _short(text: str | None) -> str | None:
    return None if text is None else clean_text(text)[:255]
