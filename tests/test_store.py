"""`SqlStore` details that the sync tests do not reach, on every backend."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import SourceSettings
from ingester.models import sync_errors, video_jobs
from ingester.store import TEXT_CAP, SqlStore
from ingester.sync import Syncer
from tests.fakes import Clock, ListSource, job


def test_a_long_bad_item_keeps_a_note_of_what_was_cut(engine: Engine) -> None:
    bad = job(1, created_at="yesterday", prompt="p" * 10_000)  # malformed: created_at
    source = SourceSettings(name="s1", base_url="https://example.test/v1", page_size=10)
    syncer = Syncer(source, ListSource([job(0), bad]), SqlStore(engine), owner="t", clock=Clock())
    assert syncer.sync().outcome == "succeeded"
    with engine.connect() as conn:
        payloads = conn.execute(
            sa.select(sync_errors.c.payload).where(sync_errors.c.stage == "validate")
        ).scalars()
        (payload,) = list(payloads)
    text = json.dumps(bad, ensure_ascii=False)
    note = f"... [{len(text) - TEXT_CAP} more characters]"
    assert payload == text[:TEXT_CAP] + note


def test_open_jobs_are_counted_over_the_status_index(engine: Engine) -> None:
    jobs = [job(i) for i in range(6)] + [job(6, "failed"), job(7, "queued"), job(8, "queued")]
    jobs += [job(9, "in_progress"), job(10, "rendering")]  # an unknown status counts as open
    source = SourceSettings(name="s1", base_url="https://example.test/v1", page_size=10)
    store = SqlStore(engine)
    Syncer(source, ListSource(jobs), store, owner="t", clock=Clock()).sync()
    with engine.begin() as conn:
        gone = video_jobs.c.id == "video_000008"
        conn.execute(sa.update(video_jobs).where(gone).values(missing_since=Clock()()))
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert store.count_open("s1", source.terminal_statuses) == 3
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert store.count_open("s2", source.terminal_statuses) == 0
    assert (
        store.count_open("s1", ("completed", "failed", "queued", "in_progress", "rendering")) == 0
    )
    if engine.dialect.name == "sqlite":
        # index ranges of the open statuses, not every job of the source (PostgreSQL's plan
        # on a table this small depends on its statistics: behaviour only there)
        count, params = next(s for s in statements if "count(" in s[0].lower())
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + count, params)
            plan = " ".join(row[-1] for row in rows)
        assert "ix_video_jobs_source_status (source=? AND status=?)" in plan, plan
