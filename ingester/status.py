"""What `ingester status` shows: cursor, lease, recent runs, jobs by status, recent errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .database import translated
from .models import sync_errors, sync_runs, sync_state, video_jobs
from .protocols import HEAD_ONLY


def collect(
    engine: Engine, source: str | None, *, runs: int = 5, errors: int = 10
) -> dict[str, Any]:
    """A JSON-ready snapshot of the mirror, for one source or all of them."""
    j, r, e, s = video_jobs.c, sync_runs.c, sync_errors.c, sync_state.c
    only = (lambda col: col == source) if source else (lambda col: sa.true())
    with translated("cannot read the mirror"), engine.connect() as conn:
        states = conn.execute(sa.select(sync_state).where(only(s.source))).mappings().all()
        by_status = conn.execute(
            sa.select(j.source, j.status, sa.func.count())
            .where(only(j.source))
            .group_by(j.source, j.status)
            .order_by(j.source, j.status)
        ).all()
        missing = conn.execute(
            sa.select(sa.func.count()).where(only(j.source), j.missing_since.is_not(None))
        ).scalar_one()
        last_runs = (
            conn.execute(
                sa.select(sync_runs).where(only(r.source)).order_by(r.id.desc()).limit(runs)
            )
            .mappings()
            .all()
        )
        last_errors = (
            conn.execute(
                sa.select(
                    e.id,
                    e.run_id,
                    e.source,
                    e.occurred_at,
                    e.stage,
                    e.http_status,
                    e.request_id,
                    e.video_id,
                    e.message,
                )
                .where(only(e.source))
                .order_by(e.id.desc())
                .limit(errors)
            )
            .mappings()
            .all()
        )
    return {
        "sources": [_plain(dict(row)) for row in states],
        "jobs": {
            "total": sum(n for _, _, n in by_status),
            "missing": missing,
            "by_status": [{"source": src, "status": st, "count": n} for src, st, n in by_status],
        },
        "runs": [_plain(dict(row)) for row in last_runs],
        "errors": [_plain(dict(row)) for row in last_errors],
    }


def render(report: dict[str, Any]) -> str:
    """The snapshot as plain text for a terminal."""
    lines: list[str] = []
    for st in report["sources"]:
        lease = st["lease_owner"] or "free"
        lines.append(
            f"source {st['source']}: cursor {st['cursor_id'] or '(start)'}"
            f" (created {st['cursor_created_at'] or '-'}), last success"
            f" {st['last_success_at'] or 'never'}, last full scan"
            f" {st['last_full_scan_at'] or 'never'}, lease {lease}"
        )
        if st.get("list_mode") == HEAD_ONLY:
            lines.append(
                f"  mode: head-only since {st['list_mode_since']}: {st['list_mode_reason']};"
                " each pass reads the newest jobs and re-reads open ones by id, no full scan is"
                " claimed complete (run `ingester backfill` after a gateway upgrade to re-check)"
            )
        else:
            lines.append("  mode: paged (every page verified)")
        if st["scan_started_at"]:
            lines.append(
                f"  pending {st['scan_kind']} scan since {st['scan_started_at']},"
                f" checkpoint {st['scan_after_id'] or '(start)'}"
            )
    if not report["sources"]:
        lines.append("no source has been synced yet")
    jobs = report["jobs"]
    lines.append(f"jobs: {jobs['total']} mirrored, {jobs['missing']} missing from the provider")
    for row in jobs["by_status"]:
        lines.append(f"  {row['source']:<12} {row['status']:<14} {row['count']:>9}")
    lines.append("recent runs:")
    for run in report["runs"]:
        lines.append(
            f"  #{run['id']} {run['source']} {run['kind']:<9} {run['outcome']:<11}"
            f" {run['started_at']}  pages={run['pages']} items={run['items']}"
            f" inserted={run['inserted']} updated={run['updated']}"
            f" transitions={run['transitions']} requests={run['requests']}"
            f" retries={run['retries']} errors={run['errors']}"
            + (f"  error: {run['error']}" if run["error"] else "")
        )
    if not report["runs"]:
        lines.append("  none")
    lines.append("recent errors:")
    for err in report["errors"]:
        where = f" http {err['http_status']}" if err["http_status"] else ""
        rid = f" [{err['request_id']}]" if err["request_id"] else ""
        lines.append(
            f"  {err['occurred_at']} run {err['run_id']} {err['stage']}{where}{rid}:"
            f" {err['message']}"
        )
    if not report["errors"]:
        lines.append("  none")
    return "\n".join(lines)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
