"""Views for SQL users: video_job_timings, video_jobs_daily, video_job_failures, sync_health.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 17:40:00.000000

The views are not in `ingester.models.metadata`; autogenerate never sees them (Alembic
reflects tables only), so `alembic check` stays clean. Each backend does timestamp arithmetic
its own way, so every view is written once and rendered per dialect from the fragments below.
Columns and their meaning: docs/queries.md. Durations are seconds (double, millisecond
precision); "now" is the database's clock in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dropped in reverse: nothing depends on another view yet, but keep the order meaningful.
VIEWS = ("video_job_timings", "video_jobs_daily", "video_job_failures", "sync_health")

# The statuses the views call terminal. Per-source extra statuses (SourceSettings) are not
# visible to SQL; an unknown status counts as open here, as it does in the sync.
TERMINAL = "('completed', 'failed')"
# `seconds` is text: only a plain decimal number of at most 12 characters is summed.
SECONDS_MAX_LEN = 12


class Dialect(NamedTuple):
    """How one backend spells the few non-portable pieces of the views.

    A NamedTuple, not a dataclass: Alembic loads revisions outside `sys.modules`.
    """

    diff_s: str  # seconds from {a} to {b}, double, rounded to the millisecond
    now: str  # the current UTC time, comparable with stored timestamps
    minus_24h: str  # now minus 24 hours, comparable with stored timestamps
    day: str  # the UTC calendar day of {x}
    ratio: str  # {a} / {b} as a double rounded to 4 places, NULL when {b} is 0
    seconds_num: str  # `seconds` as a double when it is a plain number, else NULL


SQLITE = Dialect(
    # Stored as text 'YYYY-MM-DD HH:MM:SS.ffffff'; julianday keeps ~50 µs, hence the rounding.
    diff_s="ROUND((julianday({b}) - julianday({a})) * 86400.0, 3)",
    now="strftime('%Y-%m-%d %H:%M:%f', 'now')",
    minus_24h="strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 day')",
    day="date({x})",
    ratio="ROUND(1.0 * {a} / NULLIF({b}, 0), 4)",
    seconds_num=(
        "CASE WHEN seconds GLOB '[0-9]*' AND seconds NOT GLOB '*[^0-9.]*'"
        " AND seconds NOT GLOB '*.*.*' AND seconds NOT GLOB '*.'"
        f" AND length(seconds) <= {SECONDS_MAX_LEN} THEN CAST(seconds AS REAL) END"
    ),
)
POSTGRESQL = Dialect(
    diff_s=(
        "CAST(ROUND(CAST(EXTRACT(EPOCH FROM ({b}) - ({a})) AS numeric), 3) AS double precision)"
    ),
    now="now()",
    minus_24h="now() - INTERVAL '24 hours'",
    day="CAST(({x}) AT TIME ZONE 'UTC' AS date)",
    ratio="CAST(ROUND(CAST({a} AS numeric) / NULLIF({b}, 0), 4) AS double precision)",
    seconds_num=(
        "CASE WHEN seconds ~ '^[0-9]+([.][0-9]+)?$'"
        f" AND length(seconds) <= {SECONDS_MAX_LEN} THEN CAST(seconds AS double precision) END"
    ),
)
MARIADB = Dialect(
    # DATETIME(6) holds naive UTC: compare with UTC_TIMESTAMP, never NOW() (session zone).
    diff_s="ROUND(TIMESTAMPDIFF(MICROSECOND, {a}, {b}) / 1e6, 3)",
    now="UTC_TIMESTAMP(6)",
    minus_24h="UTC_TIMESTAMP(6) - INTERVAL 24 HOUR",
    day="CAST({x} AS DATE)",
    ratio="CAST(ROUND({a} / NULLIF({b}, 0), 4) AS DOUBLE)",
    seconds_num=(
        "CASE WHEN seconds REGEXP '^[0-9]+([.][0-9]+)?$'"
        f" AND CHAR_LENGTH(seconds) <= {SECONDS_MAX_LEN} THEN CAST(seconds AS DOUBLE) END"
    ),
)
DIALECTS = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "mysql": MARIADB, "mariadb": MARIADB}


def diff(d: Dialect, a: str, b: str) -> str:
    """Seconds from timestamp expression `a` to `b`."""
    return d.diff_s.format(a=a, b=b)


def timings(d: Dialect) -> str:
    """Per job: queued, rendering and total seconds, and where the timestamps came from.

    A transition counts as the moment of a change only when the mirror saw the job before
    (`from_status` not NULL): a first sighting as completed says the job finished some time
    earlier, so the provider's `completed_at` is used then. Starting is only ever observed.
    """
    finished = "COALESCE(x.finished_observed, x.completed_at)"
    return f"""
CREATE VIEW video_job_timings AS
SELECT
    x.video_id, x.source, x.model, x.size, x.seconds, x.status,
    x.created_at,
    x.started_at,
    {finished} AS finished_at,
    {diff(d, "x.created_at", "x.started_at")} AS queued_s,
    {diff(d, "x.started_at", finished)} AS render_s,
    {diff(d, "x.created_at", finished)} AS total_s,
    CASE
        WHEN x.finished_observed IS NOT NULL THEN 'transitions'
        WHEN x.completed_at IS NOT NULL AND x.started_at IS NOT NULL THEN 'mixed'
        WHEN x.completed_at IS NOT NULL THEN 'job'
        WHEN x.started_at IS NOT NULL THEN 'transitions'
    END AS timing_source
FROM (
    SELECT
        j.id AS video_id, j.source, j.model, j.size, j.seconds, j.status, j.created_at,
        (SELECT MIN(t.observed_at) FROM video_job_transitions t
          WHERE t.video_id = j.id AND t.to_status = 'in_progress') AS started_at,
        CASE WHEN j.status IN {TERMINAL} THEN
            (SELECT MIN(t.observed_at) FROM video_job_transitions t
              WHERE t.video_id = j.id AND t.from_status IS NOT NULL
                AND t.to_status IN {TERMINAL})
        END AS finished_observed,
        CASE WHEN j.status IN {TERMINAL} THEN j.completed_at END AS completed_at
    FROM video_jobs j
) x
"""


def daily(d: Dialect) -> str:
    """Per UTC day of creation, source and model: what became of the jobs created that day."""
    day = d.day.format(x="created_at")
    failed = "COUNT(CASE WHEN status = 'failed' THEN 1 END)"
    finished = f"COUNT(CASE WHEN status IN {TERMINAL} THEN 1 END)"
    return f"""
CREATE VIEW video_jobs_daily AS
SELECT
    {day} AS day,
    source,
    model,
    COUNT(*) AS created,
    COUNT(CASE WHEN status = 'completed' THEN 1 END) AS completed,
    {failed} AS failed,
    COUNT(CASE WHEN status NOT IN {TERMINAL} AND missing_since IS NULL THEN 1 END) AS still_open,
    COUNT(CASE WHEN status NOT IN {TERMINAL} AND missing_since IS NOT NULL THEN 1 END)
        AS missing,
    {d.ratio.format(a=failed, b=finished)} AS failure_rate,
    COALESCE(SUM(CASE WHEN status = 'completed' THEN {d.seconds_num} END), 0.0)
        AS video_seconds
FROM video_jobs
GROUP BY {day}, source, model
"""


def failures(d: Dialect) -> str:
    """Failed jobs by source and error code: how many, first and last seen, the latest example.

    A failure is seen when the mirror observed the change to failed; for a job first sighted
    already failed, at the provider's completed_at, else at its created_at. The same SQL on
    every backend.
    """
    del d
    return """
CREATE VIEW video_job_failures AS
SELECT
    f.source,
    f.error_code,
    COUNT(*) AS failures,
    MIN(f.failed_at) AS first_seen_at,
    MAX(f.failed_at) AS last_seen_at,
    MAX(CASE WHEN f.rn = 1 THEN f.error_message END) AS example_message,
    MAX(CASE WHEN f.rn = 1 THEN f.video_id END) AS example_video_id
FROM (
    SELECT
        x.video_id, x.source, x.error_code, x.error_message, x.failed_at,
        ROW_NUMBER() OVER (
            PARTITION BY x.source, x.error_code ORDER BY x.failed_at DESC, x.video_id DESC
        ) AS rn
    FROM (
        SELECT
            j.id AS video_id, j.source, j.error_code, j.error_message,
            COALESCE(
                (SELECT MIN(t.observed_at) FROM video_job_transitions t
                  WHERE t.video_id = j.id AND t.from_status IS NOT NULL
                    AND t.to_status = 'failed'),
                j.completed_at,
                j.created_at
            ) AS failed_at
        FROM video_jobs j
        WHERE j.status = 'failed'
    ) x
) f
GROUP BY f.source, f.error_code
"""


def health(d: Dialect) -> str:
    """Per source: last success, passes and errors in the last 24 h, cursor age, open jobs.

    Cursor age is now minus the cursor job's created_at: how far behind the low watermark
    is, i.e. how old the oldest job still holding it back (or the newest job) is.
    """
    return f"""
CREATE VIEW sync_health AS
SELECT
    s.source,
    s.last_success_at,
    {diff(d, "s.last_success_at", d.now)} AS since_success_s,
    (SELECT COUNT(*) FROM sync_runs r
      WHERE r.source = s.source AND r.started_at >= {d.minus_24h}) AS passes_24h,
    (SELECT COUNT(*) FROM sync_runs r
      WHERE r.source = s.source AND r.started_at >= {d.minus_24h}
        AND r.outcome = 'failed') AS failed_passes_24h,
    (SELECT COUNT(*) FROM sync_errors e
      WHERE e.source = s.source AND e.occurred_at >= {d.minus_24h}) AS errors_24h,
    s.cursor_id,
    s.cursor_created_at,
    {diff(d, "s.cursor_created_at", d.now)} AS cursor_age_s,
    (SELECT COUNT(*) FROM video_jobs j
      WHERE j.source = s.source AND j.status NOT IN {TERMINAL}
        AND j.missing_since IS NULL) AS open_jobs,
    s.last_full_scan_at
FROM sync_state s
"""


def upgrade() -> None:
    """Create the four views in this backend's SQL."""
    d = DIALECTS[op.get_context().dialect.name]  # works offline (`--sql`) too
    for build in (timings, daily, failures, health):
        op.execute(build(d))


def downgrade() -> None:
    """Drop the views."""
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
