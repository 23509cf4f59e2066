"""The bulk page write: a page's snapshots read and its rows written, statements rendered once.

Every job of a backfill passes through here, so rows go to the driver as tuples built in one
comprehension, timestamps encoded the way `models.UTCDateTime` stores them on the backend,
without SQLAlchemy's per-value type processing (which cost more than the database itself).
`raw` is stored as the record's JSON text.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Dialect

from .models import video_job_transitions, video_jobs
from .protocols import JobSnapshot, PageWrite
from .records import VideoRecord

MULTI_ROWS = 1024  # rows of one multi-row INSERT on SQLite, at most


_JOB_FIELDS = (
    "source", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error_code", "error_message", "raw",
    "content_hash", "last_seen_at", "last_changed_at", "missing_since",
)  # fmt: skip
_TRANSITION_FIELDS = (
    "video_id", "source", "from_status", "to_status", "progress", "observed_at", "run_id",
)  # fmt: skip


class Bulk:
    """The page's reads and writes for one dialect: statements rendered once, values in bulk."""

    def __init__(self, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self.mark = mark = "?" if dialect.paramstyle == "qmark" else "%s"  # pyformat takes %s
        self.any_array = dialect.name == "postgresql"  # `= ANY(array)`: one parameter
        jobs, job_id = quote(video_jobs.name), quote("id")

        def insert(table: str, names: Sequence[str]) -> str:
            columns = ", ".join(quote(n) for n in names)
            return (
                f"INSERT INTO {quote(table)} ({columns}) VALUES ({', '.join([mark] * len(names))})"
            )

        self.insert_jobs = insert(video_jobs.name, ("id", *_JOB_FIELDS, "first_seen_at"))
        assignments = ", ".join(f"{quote(n)} = {mark}" for n in _JOB_FIELDS)
        self.update_jobs = f"UPDATE {jobs} SET {assignments} WHERE {job_id} = {mark}"
        self.insert_transitions = insert(video_job_transitions.name, _TRANSITION_FIELDS)
        # psycopg 3 on PostgreSQL: COPY, several times cheaper per row than its executemany
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        # SQLite: multi-row INSERTs (see `_insert_rows`); PyMySQL's executemany makes them itself
        self.multi_row = dialect.name == "sqlite"
        self._max_vars = 0  # host parameters per statement that this SQLite library allows
        self._statements: dict[tuple[str, int], str] = {}

        def copy(table: str, names: Sequence[str]) -> str:
            return f"COPY {quote(table)} ({', '.join(quote(n) for n in names)}) FROM STDIN"

        self.copy_jobs = copy(video_jobs.name, ("id", *_JOB_FIELDS, "first_seen_at"))
        self.copy_transitions = copy(video_job_transitions.name, _TRANSITION_FIELDS)
        self.select_snapshots = (
            f"SELECT {job_id}, {quote('status')}, {quote('content_hash')}, "
            f"{quote('first_seen_at')}, {quote('missing_since')} FROM {jobs} WHERE {job_id} "
        )
        self.touch_jobs = (
            f"UPDATE {jobs} SET {quote('last_seen_at')} = {mark}, "
            f"{quote('missing_since')} = NULL WHERE {job_id} "
        )
        self.ts = timestamp_encoder(dialect.name)
        self.read_ts = timestamp_decoder(dialect.name)

    def among(self, ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """`= ANY(%s)` with one array parameter on PostgreSQL, else `IN (?, ?, ...)`."""
        if self.any_array:
            return f"= ANY({self.mark})", (list(ids),)
        return f"IN ({', '.join([self.mark] * len(ids))})", tuple(ids)

    def snapshots(self, conn: Connection, ids: Sequence[str]) -> dict[str, JobSnapshot]:
        """The snapshot of each of `ids` that is in the mirror."""
        if not ids:
            return {}
        where, params = self.among(ids)
        rows = conn.exec_driver_sql(self.select_snapshots + where, params).all()
        read_ts = self.read_ts
        return {
            vid: JobSnapshot(status, digest, read_ts(first_seen), missing is not None)
            for vid, status, digest, first_seen, missing in rows
        }

    def write(self, conn: Connection, batch: PageWrite) -> None:
        """Insert, update and touch the page's jobs and insert its transitions."""
        ts, source = self.ts, batch.source
        stamp = ts(batch.now)
        tail = (stamp, stamp, None)  # last_seen_at, last_changed_at, missing_since
        if batch.inserts:
            rows = [(r.id, source, *_job_values(r, ts), *tail, stamp) for r in batch.inserts]
            self._insert(conn, self.insert_jobs, self.copy_jobs, rows)
        if batch.updates:
            rows = [(source, *_job_values(r, ts), *tail, r.id) for r in batch.updates]
            conn.exec_driver_sql(self.update_jobs, rows)
        if batch.touches:
            where, params = self.among(batch.touches)
            conn.exec_driver_sql(self.touch_jobs + where, (stamp, *params))
        if batch.transitions:
            run_id = batch.run_id
            rows = [
                (t.video_id, source, t.from_status, t.to_status, t.progress, stamp, run_id)
                for t in batch.transitions
            ]
            self._insert(conn, self.insert_transitions, self.copy_transitions, rows)

    def _insert(
        self, conn: Connection, insert: str, copy: str, rows: list[tuple[Any, ...]]
    ) -> None:
        if self.multi_row:
            self._insert_rows(conn, insert, rows)
            return
        if not self.copy:
            conn.exec_driver_sql(insert, rows)
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(copy) as stream:
            for row in rows:
                stream.write_row(row)

    def _insert_rows(self, conn: Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
        """`rows` in a few multi-row INSERTs, of a power of two rows each, at most MULTI_ROWS.

        `executemany` takes and releases the GIL around every row's step; while any other
        thread runs Python (the pass diffing the next pages) each row then waits for the GIL
        (up to `sys.getswitchinterval()`), and a commit of 1,600 rows that takes 30 ms alone
        took seconds. A multi-row INSERT is one step: SQLite works through all its rows with
        the GIL free. Sizes are powers of two so that a handful of statements, each prepared
        once and kept in the driver's statement cache, serve every group.
        """
        if not self._max_vars:
            driver = conn.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            self._max_vars = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        width = len(rows[0])
        size = 1 << min(MULTI_ROWS, self._max_vars // width).bit_length() - 1
        at = 0
        while at < len(rows):
            while at + size > len(rows):
                size >>= 1
            chunk = rows[at : at + size]
            at += size
            key = (insert, size)
            statement = self._statements.get(key)
            if statement is None:
                head, _, one = insert.partition(" VALUES ")
                statement = self._statements[key] = f"{head} VALUES {', '.join([one] * size)}"
            conn.exec_driver_sql(statement, tuple(itertools.chain.from_iterable(chunk)))


def _job_values(r: VideoRecord, ts: Callable[[datetime | None], Any]) -> tuple[Any, ...]:
    """A record's values for `_JOB_FIELDS` from `model` to `content_hash`."""
    return (
        r.model, r.status, r.progress, ts(r.created_at), ts(r.completed_at), ts(r.expires_at),
        r.prompt, r.size, r.seconds, r.remixed_from_video_id, r.error_code, r.error_message,
        r.raw_json, r.content_hash,
    )  # fmt: skip


_US = "microseconds"


def timestamp_decoder(dialect_name: str) -> Callable[[Any], datetime]:
    """The aware UTC datetime of a non-null `UTCDateTime` value as the driver returns it."""
    if dialect_name == "postgresql":
        return lambda v: v.astimezone(UTC)
    if dialect_name == "sqlite":
        return lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC)
    return lambda v: v.replace(tzinfo=UTC)


def timestamp_encoder(dialect_name: str) -> Callable[[datetime | None], Any]:
    """What `models.UTCDateTime` hands the driver for a value, on this backend."""

    def utc(value: datetime) -> datetime:
        if value.tzinfo is UTC:
            return value  # every record's timestamp: no conversion
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def sqlite(value: datetime | None) -> str | None:
        # SQLAlchemy's SQLite DATETIME text: microseconds always, no offset
        return None if value is None else utc(value).isoformat(" ", "microseconds")[:26]

    if dialect_name == "postgresql":
        return lambda v: None if v is None else utc(v)
    if dialect_name == "sqlite":
        return sqlite
    return lambda v: None if v is None else utc(v).replace(tzinfo=None)
