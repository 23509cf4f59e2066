"""Initial tables: video_jobs, video_job_transitions, sync_runs, sync_errors, sync_state.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 17:47:32.437795
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# UTC timestamps: timestamptz on PostgreSQL, microsecond DATETIME on MariaDB.
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    """Upgrade."""

    op.create_table(
        "sync_errors",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("video_id", sa.String(length=255), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_errors")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(
        op.f("ix_sync_errors_occurred_at"), "sync_errors", ["occurred_at"], unique=False
    )
    op.create_index(op.f("ix_sync_errors_run_id"), "sync_errors", ["run_id"], unique=False)
    op.create_index(
        op.f("ix_sync_errors_source_stage"), "sync_errors", ["source", "stage"], unique=False
    )
    op.create_table(
        "sync_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("pages", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items", sa.Integer(), server_default="0", nullable=False),
        sa.Column("inserted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("transitions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("requests", sa.Integer(), server_default="0", nullable=False),
        sa.Column("retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("errors", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(op.f("ix_sync_runs_outcome"), "sync_runs", ["outcome"], unique=False)
    op.create_index(
        op.f("ix_sync_runs_source_started_at"), "sync_runs", ["source", "started_at"], unique=False
    )
    op.create_table(
        "sync_state",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("cursor_id", sa.String(length=255), nullable=True),
        sa.Column("cursor_created_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("scan_kind", sa.String(length=16), nullable=True),
        sa.Column("scan_run_id", sa.BigInteger(), nullable=True),
        sa.Column("scan_started_at", TS, nullable=True),
        sa.Column("scan_after_id", sa.String(length=255), nullable=True),
        sa.Column("scan_since", TS, nullable=True),
        sa.Column("scan_until", TS, nullable=True),
        sa.Column("last_full_scan_at", TS, nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column(
            "reported_statuses",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_sync_state")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "video_job_transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("video_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=255), nullable=True),
        sa.Column("to_status", sa.String(length=255), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_job_transitions")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(
        op.f("ix_video_job_transitions_observed_at"),
        "video_job_transitions",
        ["observed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_video_job_transitions_run_id"), "video_job_transitions", ["run_id"], unique=False
    )
    op.create_index(
        op.f("ix_video_job_transitions_video_id_id"),
        "video_job_transitions",
        ["video_id", "id"],
        unique=False,
    )
    op.create_table(
        "video_jobs",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=255), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("size", sa.String(length=255), nullable=True),
        sa.Column("seconds", sa.String(length=255), nullable=True),
        sa.Column("remixed_from_video_id", sa.String(length=255), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("raw", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("last_changed_at", TS, nullable=False),
        sa.Column("last_checked_at", TS, nullable=True),
        sa.Column("missing_since", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_jobs")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(op.f("ix_video_jobs_created_at"), "video_jobs", ["created_at"], unique=False)
    op.create_index(op.f("ix_video_jobs_model"), "video_jobs", ["model"], unique=False)
    op.create_index(
        op.f("ix_video_jobs_remixed_from_video_id"),
        "video_jobs",
        ["remixed_from_video_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_video_jobs_source_last_seen_at"),
        "video_jobs",
        ["source", "last_seen_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_video_jobs_source_status"), "video_jobs", ["source", "status"], unique=False
    )
    op.create_index(op.f("ix_video_jobs_status"), "video_jobs", ["status"], unique=False)


def downgrade() -> None:
    """Downgrade."""

    op.drop_index(op.f("ix_video_jobs_status"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_source_status"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_source_last_seen_at"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_remixed_from_video_id"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_model"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_created_at"), table_name="video_jobs")
    op.drop_table("video_jobs")
    op.drop_index(op.f("ix_video_job_transitions_video_id_id"), table_name="video_job_transitions")
    op.drop_index(op.f("ix_video_job_transitions_run_id"), table_name="video_job_transitions")
    op.drop_index(op.f("ix_video_job_transitions_observed_at"), table_name="video_job_transitions")
    op.drop_table("video_job_transitions")
    op.drop_table("sync_state")
    op.drop_index(op.f("ix_sync_runs_source_started_at"), table_name="sync_runs")
    op.drop_index(op.f("ix_sync_runs_outcome"), table_name="sync_runs")
    op.drop_table("sync_runs")
    op.drop_index(op.f("ix_sync_errors_source_stage"), table_name="sync_errors")
    op.drop_index(op.f("ix_sync_errors_run_id"), table_name="sync_errors")
    op.drop_index(op.f("ix_sync_errors_occurred_at"), table_name="sync_errors")
    op.drop_table("sync_errors")
