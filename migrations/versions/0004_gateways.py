"""Gateways: the span a full scan listed, and how a source's list can be read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:00:00.000000

- `scan_oldest_at` / `scan_newest_at`: the oldest and newest job a pending full scan has
  listed; a complete scan marks missing only jobs created between them, so a provider that
  lists a window or forgets old jobs never gets those marked.
- `scan_filtered`: a page held fewer jobs than its cursor covered (a gateway hiding jobs the
  key does not own), so the scan marks nothing.
- `cursor_after`: the provider's cursor to ask from when that is past the cursor job (pages
  that held none of the key's jobs); NULL: after the cursor job as it was listed.
- `list_mode`: NULL while the list pages as asked, `head-only` once a page proved the provider
  ignores `after`, `order` or `limit` (a gateway), with the reason in plain words and since
  when.
- The index on (`source`, `last_seen_at`) goes: a full scan touched it for every job it saw,
  and nothing needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# UTC timestamps: timestamptz on PostgreSQL, microsecond DATETIME on MariaDB (as in 0001).
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
COLUMNS = (
    ("cursor_after", sa.Text()),
    ("scan_oldest_at", TS),
    ("scan_newest_at", TS),
    ("scan_filtered", sa.Boolean()),
    ("list_mode", sa.String(length=16)),
    ("list_mode_reason", sa.Text()),
    ("list_mode_since", TS),
)


def upgrade() -> None:
    """Upgrade."""
    for name, kind in COLUMNS:
        op.add_column("sync_state", sa.Column(name, kind))
    # Every job a full scan sees has its `last_seen_at` touched, and this index with it; the
    # two queries that read `last_seen_at` (the end of a scan) walk `created_at` instead.
    op.drop_index("ix_video_jobs_source_last_seen_at", table_name="video_jobs")


def downgrade() -> None:
    """Downgrade (plain DROP COLUMN, as in 0003)."""
    op.create_index("ix_video_jobs_source_last_seen_at", "video_jobs", ["source", "last_seen_at"])
    for name, _kind in reversed(COLUMNS):
        op.drop_column("sync_state", name)
