"""`SqlStore` details that the sync tests do not reach, on every backend."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.config import SourceSettings
from ingester.models import sync_errors
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
