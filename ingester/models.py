"""The tables of the mirror (the data contract SQL users depend on; see README "Tables").

Created only by the Alembic revisions under `migrations/`; this module is their
`target_metadata`, and a test checks the two never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
# Every table on MariaDB: 4-byte UTF-8 and a binary collation, so ids differing only in
# case stay distinct (mysql_charset / mysql_collate below).


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (UTC) on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Auto-increment keys: BIGINT where it matters, INTEGER on SQLite (its rowid alias).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID_LEN = 255  # provider ids, statuses, models, sizes: indexed, so bounded

video_jobs = sa.Table(
    "video_jobs",
    metadata,
    sa.Column("id", sa.String(ID_LEN), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("model", sa.String(ID_LEN)),
    sa.Column("status", sa.String(ID_LEN), nullable=False),
    sa.Column("progress", sa.Integer),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime()),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("prompt", sa.Text),
    sa.Column("size", sa.String(ID_LEN)),
    sa.Column("seconds", sa.String(ID_LEN)),
    sa.Column("remixed_from_video_id", sa.String(ID_LEN)),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("raw", JSONType, nullable=False),
    sa.Column("content_hash", sa.String(32), nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_changed_at", UTCDateTime(), nullable=False),
    sa.Column("last_checked_at", UTCDateTime()),
    sa.Column("missing_since", UTCDateTime()),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
    sa.Index(None, "model"),
    sa.Index(None, "source", "status"),
    sa.Index(None, "remixed_from_video_id"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

video_job_transitions = sa.Table(
    "video_job_transitions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("video_id", sa.String(ID_LEN), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("from_status", sa.String(ID_LEN)),
    sa.Column("to_status", sa.String(ID_LEN), nullable=False),
    sa.Column("progress", sa.Integer),
    sa.Column("observed_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.BigInteger),
    sa.Index(None, "video_id", "id"),
    sa.Index(None, "observed_at"),
    sa.Index(None, "run_id"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items", sa.Integer, nullable=False, server_default="0"),
    sa.Column("inserted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated", sa.Integer, nullable=False, server_default="0"),
    sa.Column("transitions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Index(None, "source", "started_at"),
    sa.Index(None, "outcome"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

sync_errors = sa.Table(
    "sync_errors",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger),
    sa.Column("source", sa.String(64)),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("http_status", sa.Integer),
    sa.Column("request_id", sa.String(ID_LEN)),
    sa.Column("video_id", sa.String(ID_LEN)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Index(None, "run_id"),
    sa.Index(None, "occurred_at"),
    sa.Index(None, "source", "stage"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("cursor_id", sa.String(ID_LEN)),
    sa.Column("cursor_created_at", UTCDateTime()),
    # where to ask from when that is past the cursor job (0004): after pages that listed no
    # job of this key (a filtering gateway); NULL: after the cursor job, as it was listed
    sa.Column("cursor_after", sa.Text),  # a provider's cursor: opaque, of any length
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("scan_kind", sa.String(16)),
    sa.Column("scan_run_id", sa.BigInteger),
    sa.Column("scan_started_at", UTCDateTime()),
    sa.Column("scan_after_id", sa.String(ID_LEN)),
    sa.Column("scan_since", UTCDateTime()),
    sa.Column("scan_until", UTCDateTime()),
    # a scan walking from both ends (0003): the desc chain's checkpoint, and how far each got
    sa.Column("scan_desc_after_id", sa.String(ID_LEN)),
    sa.Column("scan_asc_created_at", UTCDateTime()),
    sa.Column("scan_desc_created_at", UTCDateTime()),
    # the span a scan has listed (0004): only jobs created within it can be marked missing
    sa.Column("scan_oldest_at", UTCDateTime()),
    sa.Column("scan_newest_at", UTCDateTime()),
    sa.Column("scan_filtered", sa.Boolean),  # a page held fewer jobs than its cursor covered
    # how the list can be read (0004): NULL paged, "head-only" when it cannot be paged
    sa.Column("list_mode", sa.String(16)),
    sa.Column("list_mode_reason", sa.Text),
    sa.Column("list_mode_since", UTCDateTime()),
    sa.Column("last_full_scan_at", UTCDateTime()),
    sa.Column("last_success_at", UTCDateTime()),
    sa.Column("reported_statuses", JSONType),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
