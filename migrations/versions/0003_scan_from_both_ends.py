"""Checkpoint of a full scan that walks from both ends: the `desc` chain and both edges.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 19:00:00.000000

A full scan may walk `asc` from the start and `desc` from the head at once, meeting in the
middle. `scan_after_id` stays the `asc` chain's checkpoint; `scan_desc_after_id` is the
`desc` chain's, and `scan_asc_created_at` / `scan_desc_created_at` are the `created_at` each
chain has reached, so a resumed scan knows where they meet. All NULL outside such a scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# UTC timestamps: timestamptz on PostgreSQL, microsecond DATETIME on MariaDB (as in 0001).
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    """Upgrade."""
    op.add_column("sync_state", sa.Column("scan_desc_after_id", sa.String(length=255)))
    op.add_column("sync_state", sa.Column("scan_asc_created_at", TS))
    op.add_column("sync_state", sa.Column("scan_desc_created_at", TS))


def downgrade() -> None:
    """Downgrade (plain DROP COLUMN: SQLite >= 3.35 has it, and a batch copy of the table
    would trip over the views of 0002 that read it)."""
    op.drop_column("sync_state", "scan_desc_created_at")
    op.drop_column("sync_state", "scan_asc_created_at")
    op.drop_column("sync_state", "scan_desc_after_id")
