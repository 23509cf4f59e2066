"""The two small protocols `sync` talks to, and the values that cross them.

`PageSource` is implemented by `api.VideosClient` (HTTP), `Store` by `store.SqlStore` (SQL);
`sync` imports neither `requests` nor `sqlalchemy`, so it is tested against plain fakes too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from .records import VideoRecord

Order = Literal["asc", "desc"]
HEAD_ONLY = "head-only"  # `sync_state.list_mode` of a source whose list cannot be paged
Stage = Literal["http", "decode", "validate", "store"]


@dataclass(frozen=True, slots=True)
class Page:
    """One decoded list response; `items` are not yet validated: what `records.parse_items`
    takes (`msgspec.Raw` of each item's received bytes from `VideosClient`, or decoded values)."""

    items: list[Any]
    has_more: bool
    first_id: str | None
    last_id: str | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something that went wrong, to be kept in `sync_errors`; never carries a secret."""

    stage: Stage
    message: str
    http_status: int | None = None
    request_id: str | None = None
    payload: str | None = None
    video_id: str | None = None


ErrorSink = Callable[[ErrorEvent], None]


class ErrorBuffer:
    """Collects error events from the client until the pass stores them with its next page."""

    def __init__(self) -> None:
        self._events: list[ErrorEvent] = []

    def __call__(self, event: ErrorEvent) -> None:
        self._events.append(event)

    def drain(self) -> list[ErrorEvent]:
        """Return and forget the events collected so far."""
        events, self._events = self._events, []
        return events


class PageSource(Protocol):
    """Where video jobs come from: the provider's list and retrieve endpoints."""

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        """One page of `GET /videos`."""
        ...

    def get_video(self, video_id: str) -> Any | None:
        """The raw object of `GET /videos/{id}`, or None when the provider answers 404."""
        ...

    @property
    def requests(self) -> int:
        """HTTP attempts sent so far (retries included)."""
        ...

    @property
    def retries(self) -> int:
        """Retries spent so far."""
        ...


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the store remembers of one source between passes."""

    cursor_id: str | None = None
    cursor_created_at: datetime | None = None
    cursor_missing: bool = False
    cursor_after: str | None = None  # what to send as `after`: the cursor job as listed, or
    # the provider's cursor of a page past it that held no job of this key
    scan_kind: str | None = None
    scan_run_id: int | None = None
    scan_started_at: datetime | None = None
    scan_after_id: str | None = None
    scan_since: datetime | None = None
    scan_until: datetime | None = None
    reported_statuses: frozenset[str] = frozenset()
    # a full scan walking from both ends: the desc chain's checkpoint, and how far each got
    scan_desc_after_id: str | None = None
    scan_asc_created_at: datetime | None = None
    scan_desc_created_at: datetime | None = None
    # the oldest and newest job a scan has listed: only jobs between them can be marked missing
    scan_oldest_at: datetime | None = None
    scan_newest_at: datetime | None = None
    scan_filtered: bool | None = None
    list_mode: str | None = None  # None: paged; "head-only": the list cannot be paged
    list_mode_reason: str | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """The stored facts about one job that the pass needs to decide what to write."""

    status: str
    content_hash: str
    first_seen_at: datetime
    missing: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """One observed status change (`from_status` None on first sighting)."""

    video_id: str
    from_status: str | None
    to_status: str
    progress: int | None


@dataclass
class RunCounts:
    """The running totals of one pass, kept in its `sync_runs` row."""

    pages: int = 0
    items: int = 0
    inserted: int = 0
    updated: int = 0
    transitions: int = 0
    requests: int = 0
    retries: int = 0
    errors: int = 0


@dataclass
class PageWrite:
    """Everything one page changes, committed by the store in one transaction."""

    source: str
    run_id: int
    owner: str
    now: datetime
    counts: RunCounts
    inserts: list[VideoRecord] = field(default_factory=list)
    updates: list[VideoRecord] = field(default_factory=list)
    touches: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    cursor: tuple[str | None, datetime | None] | None = None
    cursor_after: str | None = None  # with `cursor`: the provider's cursor past it, if any
    scan_after_id: str | None = None
    reported_statuses: frozenset[str] | None = None
    scan_asc_created_at: datetime | None = None
    scan_desc_after_id: str | None = None
    scan_desc_created_at: datetime | None = None
    scan_oldest_at: datetime | None = None
    scan_newest_at: datetime | None = None
    scan_filtered: bool | None = None


@dataclass(frozen=True, slots=True)
class ScanStart:
    """A full scan to begin (or resume, when the store already holds a matching one)."""

    kind: str
    run_id: int
    started_at: datetime
    since: datetime | None
    until: datetime | None


class Store(Protocol):
    """Where the mirror lives; every method is one transaction."""

    def acquire_lease(self, source: str, owner: str, ttl_s: float, now: datetime) -> bool:
        """Take or renew the source's lease; close runs a dead holder left `running`.

        True once taken; LeaseBusyError, naming the holder and its expiry, while another
        live process holds it.
        """
        ...

    def release_lease(self, source: str, owner: str) -> None:
        """Give the lease back if we hold it."""
        ...

    def load_state(self, source: str) -> SourceState:
        """The source's cursor, scan checkpoint and reported statuses."""
        ...

    def start_run(self, source: str, kind: str, owner: str, now: datetime) -> int:
        """Open a `sync_runs` row (outcome running) and return its id."""
        ...

    def finish_run(
        self, run_id: int, outcome: str, counts: RunCounts, error: str | None, now: datetime
    ) -> None:
        """Close the run with its outcome and final counts."""
        ...

    def snapshots(self, ids: list[str]) -> dict[str, JobSnapshot]:
        """The stored snapshot of each of `ids` that is in the mirror."""
        ...

    def write_pages(self, batches: Sequence[PageWrite], lease_ttl_s: float) -> None:
        """Commit consecutive pages of one run in one transaction, in order."""
        ...

    def record_errors(self, source: str, run_id: int | None, events: list[ErrorEvent]) -> None:
        """Keep errors that arose outside a page (a failed request, a failed commit)."""
        ...

    def begin_scan(self, source: str, scan: ScanStart) -> SourceState:
        """Start a full scan checkpoint unless one of the same kind and bounds is pending."""
        ...

    def finish_scan(self, source: str, now: datetime, windowed: bool) -> int:
        """Close the pending scan: mark jobs it did not see missing; return how many.

        Only jobs created within the span the scan listed are marked. `windowed`: the
        provider lists only a recent window, so the span's old end also slid while the scan
        ran (the store also assumes so when it holds jobs older than the span).
        """
        ...

    def abandon_scan(self, source: str) -> None:
        """Drop the pending scan's checkpoint: it cannot be completed."""
        ...

    def set_list_mode(
        self, source: str, mode: str | None, reason: str | None, now: datetime
    ) -> None:
        """Remember how the source's list can be read (None: paged, or "head-only")."""
        ...

    def open_jobs(
        self,
        source: str,
        terminal: tuple[str, ...],
        first_seen_before: datetime,
        checked_before: datetime,
        limit: int,
    ) -> list[str]:
        """Open jobs first seen before, and not re-read since, the times given."""
        ...

    def raw_objects(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The mirrored `raw` of each of `ids` that is in the mirror."""
        ...

    def settle_cursor(
        self, source: str, terminal: tuple[str, ...], first_seen_before: datetime
    ) -> tuple[str, datetime] | None:
        """Move the cursor forward over what a complete scan saw; return the cursor.

        Called once a full scan has read the whole list, before `finish_scan`: the cursor
        becomes the newest job the scan saw that was created before the second of the oldest
        job holding it (not terminal, first seen after `first_seen_before`), if that is ahead.
        """
        ...
