"""Alembic migrations of ingester (shipped in the wheel as `ingester.migrations`)."""
