"""The SQL side of the mirror: page upserts, transitions, cursor, runs, errors and the lease.

`SqlStore` implements `protocols.Store` on SQLAlchemy Core. Every method is one
transaction; driver errors are translated to `StoreError` here, at the boundary, with the
statement and its parameters left out (they may hold user data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .bulk import Bulk
from .database import translated
from .errors import LeaseBusyError
from .models import sync_errors, sync_runs, sync_state, video_jobs
from .protocols import (
    ErrorEvent,
    JobSnapshot,
    PageWrite,
    RunCounts,
    ScanStart,
    SourceState,
)
from .records import clean_text

log = logging.getLogger(__name__)

WINDOW_GRACE = timedelta(minutes=5)
TEXT_CAP = 2000  # characters of an error's message or payload that are kept

_jobs = video_jobs.c
_state = sync_state.c
# where each chain of a full scan has got to (PageWrite fields, sync_state columns)
_CHECKPOINTS = (
    "scan_after_id",
    "scan_asc_created_at",
    "scan_desc_after_id",
    "scan_desc_created_at",
    "scan_oldest_at",
    "scan_newest_at",
    "scan_filtered",
)

# the sync_state columns SourceState holds as they are
_STATE_FIELDS = {f.name for f in dataclasses.fields(SourceState)} - {
    "cursor_missing",
    "cursor_after",
    "reported_statuses",
}
_NO_SCAN: dict[str, Any] = dict.fromkeys(
    ("scan_kind", "scan_run_id", "scan_started_at", "scan_since", "scan_until", *_CHECKPOINTS)
)


class SqlStore:
    """The mirror in a SQL database (SQLite, PostgreSQL or MariaDB)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._bulk = Bulk(engine.dialect)
        dbapi = engine.dialect.dbapi
        self._driver_error: type[Exception] = getattr(dbapi, "Error", SQLAlchemyError)

    def __repr__(self) -> str:
        return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        # (the driver's own errors too: COPY goes to the driver directly)
        error = f"database error while {what}"
        with translated(error, self._driver_error), self.engine.begin() as conn:
            yield conn

    # --- lease -------------------------------------------------------------------------------

    def acquire_lease(self, source: str, owner: str, ttl_s: float, now: datetime) -> bool:
        """Take the lease if free, ours, expired or held by a process of this host that is
        gone; then close runs a dead holder left open. LeaseBusyError names a live holder."""
        self._ensure_state(source, now)
        with self._tx("taking the lease") as conn:
            held = conn.execute(
                sa.select(_state.lease_owner, _state.lease_expires_at).where(
                    _state.source == source
                )
            ).one()
            free = [
                _state.lease_owner.is_(None),
                _state.lease_owner == owner,
                _state.lease_expires_at < now,
            ]
            gone = held.lease_owner is not None and _process_gone(held.lease_owner)
            if gone:  # killed (SIGKILL, OOM): no need to wait for its lease to expire
                free.append(_state.lease_owner == held.lease_owner)
            taken = conn.execute(
                sa.update(sync_state)
                .where(_state.source == source, sa.or_(*free))
                .values(
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=ttl_s),
                    updated_at=now,
                )
            ).rowcount
            if taken != 1:
                expires = held.lease_expires_at
                until = (
                    ""
                    if expires is None
                    else f"; its lease expires at {expires:%Y-%m-%d %H:%M:%S} UTC"
                )
                raise LeaseBusyError(
                    f"source {source} is being synced by another process "
                    f"({held.lease_owner}{until})"
                )
            if gone:
                log.warning(
                    "took over the lease of %s from %s: it no longer runs", source, held.lease_owner
                )
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
        with contextlib.suppress(IntegrityError), self._tx("creating the sync state") as conn:
            conn.execute(sa.insert(sync_state).values(source=source, updated_at=now))

    # --- state -------------------------------------------------------------------------------

    def load_state(self, source: str) -> SourceState:
        """The source's cursor, scan checkpoint and reported statuses."""
        with self._tx("reading the sync state") as conn:
            row = conn.execute(sa.select(sync_state).where(_state.source == source)).first()
            if row is None:
                return SourceState()
            missing, listed = False, row.cursor_id
            if row.cursor_id is not None:
                job = conn.execute(
                    sa.select(_jobs.missing_since, _jobs.raw).where(_jobs.id == row.cursor_id)
                ).first()
                if job is not None:
                    missing = job.missing_since is not None
                    given = job.raw.get("id") if isinstance(job.raw, dict) else None
                    listed = given if isinstance(given, str) else row.cursor_id
        columns = {k: v for k, v in row._mapping.items() if k in _STATE_FIELDS}
        return SourceState(
            **columns,
            cursor_missing=missing,
            cursor_after=row.cursor_after or listed,
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
        with self._tx("reading jobs") as conn:
            return self._bulk.snapshots(conn, ids)

    def write_pages(self, batches: Sequence[PageWrite], lease_ttl_s: float) -> None:
        """Commit consecutive pages of one run in one transaction, in order.

        The cursor and checkpoints end where the last page that moves them puts them.
        """
        last = batches[-1]
        state_values: dict[str, Any] = {
            "lease_expires_at": last.now + timedelta(seconds=lease_ttl_s),
            "updated_at": last.now,
        }
        for batch in batches:
            if batch.cursor is not None:
                state_values["cursor_id"], state_values["cursor_created_at"] = batch.cursor
                state_values["cursor_after"] = batch.cursor_after
            for key in _CHECKPOINTS:
                value = getattr(batch, key)
                if value is not None:
                    state_values[key] = value
            if batch.reported_statuses is not None:
                state_values["reported_statuses"] = sorted(batch.reported_statuses)
        with self._tx("writing a page") as conn:
            held = conn.execute(
                sa.update(sync_state)
                .where(_state.source == last.source, _state.lease_owner == last.owner)
                .values(**state_values)
            ).rowcount
            if held != 1:
                raise LeaseBusyError(
                    f"lost the lease of source {last.source}; the page was not written"
                )
            for batch in batches:
                self._bulk.write(conn, batch)
                _update_ids(conn, batch.checked, last_checked_at=batch.now)
                _update_ids(conn, batch.gone, missing_since=batch.now, only_present=True)
                if batch.errors:
                    _insert_errors(conn, batch.source, batch.run_id, batch.errors, batch.now)
            conn.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.id == last.run_id)
                .values(**_counts(last.counts))
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
                scan_since=scan.since,
                scan_until=scan.until,
                **dict.fromkeys(_CHECKPOINTS),
            )
        with self._tx("starting a scan") as conn:
            conn.execute(sa.update(sync_state).where(_state.source == source).values(**values))
        if resume:
            log.info("resuming the %s scan of %s after %s", scan.kind, source, state.scan_after_id)
        return self.load_state(source)

    def finish_scan(self, source: str, now: datetime, windowed: bool) -> int:
        """Close the pending scan: mark the jobs of its span it did not see; return how many."""
        state = self.load_state(source)
        started = state.scan_started_at
        if started is None:
            return 0
        lo, hi = state.scan_oldest_at, state.scan_newest_at
        with self._tx("finishing a scan") as conn:
            marked = 0
            if lo is None or hi is None:
                log.warning("the scan of %s listed no job; missing_since left untouched", source)
            elif state.scan_filtered:
                log.warning("the list of %s is filtered; missing_since left untouched", source)
            else:
                older = conn.execute(
                    sa.select(_jobs.id).where(_jobs.source == source, _jobs.created_at < lo)
                ).first()
                if windowed or older is not None:
                    # Out of the provider's window is out of sight, not gone, and the window
                    # slid while the scan ran: only jobs newer than the oldest one listed plus
                    # that slide are certain to have been listed if they were there.
                    lo = lo + (now - started) + WINDOW_GRACE
                where = [
                    _jobs.source == source,
                    _jobs.last_seen_at < started,
                    _jobs.missing_since.is_(None),
                    _jobs.created_at >= lo,
                    _jobs.created_at <= hi,
                ]
                if state.scan_since is not None:
                    where.append(_jobs.created_at >= state.scan_since)
                if state.scan_until is not None:
                    where.append(_jobs.created_at < state.scan_until)
                marked = conn.execute(
                    sa.update(video_jobs).where(*where).values(missing_since=now)
                ).rowcount
            done = {**_NO_SCAN, "updated_at": now}
            if state.scan_since is None and state.scan_until is None:
                done["last_full_scan_at"] = now
            conn.execute(sa.update(sync_state).where(_state.source == source).values(**done))
        return int(marked)

    def abandon_scan(self, source: str) -> None:
        """Drop the pending scan's checkpoint: it cannot be completed."""
        with self._tx("dropping a scan") as conn:
            conn.execute(sa.update(sync_state).where(_state.source == source).values(**_NO_SCAN))

    def set_list_mode(
        self, source: str, mode: str | None, reason: str | None, now: datetime
    ) -> None:
        """Remember how the source's list can be read (None: paged, or "head-only")."""
        with self._tx("setting the list mode") as conn:
            conn.execute(
                sa.update(sync_state)
                .where(_state.source == source)
                .values(list_mode=mode, list_mode_reason=_cap(reason), list_mode_since=now)
            )

    def open_jobs(
        self,
        source: str,
        terminal: tuple[str, ...],
        first_seen_before: datetime,
        checked_before: datetime,
        limit: int,
    ) -> list[str]:
        """Open jobs first seen before, and not re-read since, the times given."""
        with self._tx("reading stale jobs") as conn:
            where = _open(conn, source, terminal)
            if where is None:
                return []  # nothing is open: the usual idle pass, answered from the index alone
            where += [
                _jobs.missing_since.is_(None),
                _jobs.first_seen_at <= first_seen_before,
                sa.or_(_jobs.last_checked_at.is_(None), _jobs.last_checked_at <= checked_before),
            ]
            query = sa.select(_jobs.id).where(*where).order_by(_jobs.created_at, _jobs.id)
            return list(conn.execute(query.limit(limit)).scalars())

    def raw_objects(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The mirrored `raw` of each of `ids` that is in the mirror."""
        with self._tx("reading jobs") as conn:
            rows = conn.execute(sa.select(_jobs.id, _jobs.raw).where(_jobs.id.in_(ids))).all()
        return {vid: raw for vid, raw in rows if isinstance(raw, dict)}

    def count_open(self, source: str, terminal: tuple[str, ...]) -> int:
        """How many jobs of `source` are open and not missing (read over the status index)."""
        with self._tx("counting open jobs") as conn:
            where = _open(conn, source, terminal)
            if where is None:
                return 0
            query = sa.select(sa.func.count()).where(*where, _jobs.missing_since.is_(None))
            return int(conn.execute(query).scalar_one())

    def settle_cursor(
        self, source: str, terminal: tuple[str, ...], first_seen_before: datetime
    ) -> tuple[str, datetime] | None:
        """Move the cursor forward over what a complete scan saw; return the cursor.

        Any job of the last second before the oldest holding job will do: every job listed
        before it is older than that job, so none holds the cursor (ties within a second are
        in no known order, hence the second). Jobs the scan did not see are gone or out of
        sight: they neither hold the cursor nor can be it.
        """
        with self._tx("settling the cursor") as conn:
            state = conn.execute(
                sa.select(_state.scan_started_at, _state.cursor_id, _state.cursor_created_at).where(
                    _state.source == source
                )
            ).first()
            if state is None or state.scan_started_at is None:
                return None
            seen = [_jobs.source == source, _jobs.last_seen_at >= state.scan_started_at]
            where = _open(conn, source, terminal)
            holding_at = None
            if where is not None:
                where += [*seen, _jobs.first_seen_at > first_seen_before]
                holding_at = conn.execute(
                    sa.select(sa.func.min(_jobs.created_at)).where(*where)
                ).scalar()
            query = sa.select(_jobs.id, _jobs.created_at).where(*seen)
            if holding_at is not None:
                second = holding_at.replace(microsecond=0)
                query = query.where(_jobs.created_at < second)
            row = conn.execute(query.order_by(_jobs.created_at.desc()).limit(1)).first()
            current = (state.cursor_id, state.cursor_created_at)
            if row is None or (current[1] is not None and row.created_at <= current[1]):
                return current if current[0] is not None else None
            conn.execute(
                sa.update(sync_state)
                .where(_state.source == source)
                .values(cursor_id=row.id, cursor_created_at=row.created_at, cursor_after=None)
            )
            return row.id, row.created_at


def _open(
    conn: Connection, source: str, terminal: tuple[str, ...]
) -> list[sa.ColumnElement[bool]] | None:
    """The conditions that select the open jobs of `source`; None when none is open."""
    where = [_jobs.source == source, _jobs.status.not_in(terminal)]
    statuses = _distinct_statuses(conn, source)
    if statuses is not None:
        open_statuses = [s for s in statuses if s not in terminal]
        if not open_statuses:
            return None
        where.append(_jobs.status.in_(open_statuses))  # index ranges, not a full scan
    return where


def _process_gone(owner: str) -> bool:
    """True if a lease owner (host:pid:random, see `cli.owner_id`) is a process of this host
    that no longer runs. A pid in use again reads as alive: the lease then has to expire."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive under another user, or not a pid at all
        return False
    return False


def _distinct_statuses(conn: Connection, source: str, cap: int = 64) -> list[str] | None:
    """The statuses present for `source`, one index probe each; None if there are over `cap`.

    `status NOT IN (terminal)` cannot use an index, so with a million finished jobs it would
    read them all on every pass. The statuses present are few: walking them with `min()`
    over the (source, status) index costs a few probes, whatever the size of the mirror.
    """
    found: list[str] = []
    last: str | None = None
    while len(found) <= cap:
        query = sa.select(sa.func.min(_jobs.status)).where(_jobs.source == source)
        if last is not None:
            query = query.where(_jobs.status > last)
        last = conn.execute(query).scalar()
        if last is None:
            return found
        found.append(last)
    return None


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
    """`text` made storable and cut to TEXT_CAP characters, saying how many were cut."""
    if text is None:
        return None
    text = clean_text(text)
    if len(text) <= TEXT_CAP:
        return text
    return f"{text[:TEXT_CAP]}... [{len(text) - TEXT_CAP} more characters]"


def _short(text: str | None) -> str | None:
    return None if text is None else clean_text(text)[:255]
