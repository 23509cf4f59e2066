"""Pure decisions about one page: what to write, which transitions, where the watermark goes.

No I/O: a page's records and the mirror's snapshots of them in, a `PageWrite`'s rows out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .protocols import JobSnapshot, PageWrite, Transition
from .records import VideoRecord


@dataclass
class Watermark:
    """The low watermark: moves over jobs that do not hold it, stops at the first that does.

    `resume_at`: when not advancing yet, start advancing once this id (the current cursor)
    is passed, so a full scan can carry the cursor forward but never backwards.
    """

    cursor_id: str | None
    cursor_created_at: datetime | None
    advancing: bool = True
    resume_at: str | None = None
    moved: bool = False
    held: bool = False

    def see(self, video_id: str, created_at: datetime, holds: bool) -> None:
        """Account for the next job in `asc` order."""
        if not self.advancing:
            if video_id == self.resume_at and not self.held:
                self.advancing = True
            return
        if holds:
            self.advancing = False
            self.held = True
        else:
            self.cursor_id, self.cursor_created_at = video_id, created_at
            self.moved = True


@dataclass(frozen=True, slots=True)
class Statuses:
    """Which statuses are open and which terminal for a source; anything else is unknown."""

    open: frozenset[str]
    terminal: frozenset[str]

    def holds(self, rec: VideoRecord, snap: JobSnapshot | None, stale_before: datetime) -> bool:
        """Whether a job holds the watermark: not terminal, and not yet stale."""
        if rec.status in self.terminal:
            return False
        return snap is None or snap.first_seen_at > stale_before

    def known(self, status: str) -> bool:
        """True for a status configured as open or terminal."""
        return status in self.open or status in self.terminal


def diff(
    rec: VideoRecord, snap: JobSnapshot | None, write: PageWrite, touch: bool
) -> JobSnapshot | None:
    """Put what `rec` changes into `write`; return the job's snapshot after it (None: as is).

    `touch`: a full scan records that it saw the job even when nothing changed.
    """
    if snap is None:
        write.inserts.append(rec)
        write.transitions.append(Transition(rec.id, None, rec.status, rec.progress))
        return JobSnapshot(rec.status, rec.content_hash, write.now, False)
    if snap.content_hash != rec.content_hash:
        write.updates.append(rec)
        if snap.status != rec.status:
            write.transitions.append(Transition(rec.id, snap.status, rec.status, rec.progress))
        return JobSnapshot(rec.status, rec.content_hash, snap.first_seen_at, False)
    if touch or snap.missing:
        write.touches.append(rec.id)
        if snap.missing:
            return JobSnapshot(snap.status, snap.content_hash, snap.first_seen_at, False)
    return None


def merged(mirrored: Mapping[str, Any], received: Mapping[str, Any]) -> dict[str, Any] | None:
    """A partial answer laid over the mirrored object, or None when it changes no value.

    A key absent from the answer keeps its mirrored value (a by-id reply through a gateway
    may leave out `prompt`); a key the answer adds as null changes nothing; the id keeps the
    form it was listed in (a gateway wraps it differently by id).
    """
    changed = any(mirrored.get(key) != value for key, value in received.items() if key != "id")
    if not changed:
        return None
    return {**mirrored, **received, "id": mirrored.get("id", received.get("id"))}


def span(
    records: Sequence[VideoRecord], lo: datetime | None, hi: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest `created_at` of `records` and of the span so far."""
    for rec in records:
        at = rec.created_at
        if lo is None or at < lo:
            lo = at
        if hi is None or at > hi:
            hi = at
    return lo, hi
