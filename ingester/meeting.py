"""Where the two chains of a full scan walking from both ends meet.

A full scan with a second client walks `asc` from the start and `desc` from the head at once
(`scan.Scanner`). Each chain has an `Edge`: the extreme `created_at` it has read (the
newest for `asc`, the oldest for `desc`) and the ids it read at exactly that instant. The
list is in `created_at` order, so `asc` has read every job created before its edge and `desc`
every job created after its own; once the `asc` edge is past the `desc` edge, every job has
been read by one chain or the other and the scan is complete. Jobs at an edge instant itself
(ties are in no known order) count as read only by id. Edges move only over verified pages
(`paging`), in the one thread that writes the pages of both chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .protocols import Order, PageWrite
from .records import MAX_ID_LEN, VideoRecord


@dataclass
class Edge:
    """How far one chain has read: its extreme `created_at` and the ids read at that instant."""

    order: Order
    at: datetime | None = None
    ids: set[str] = field(default_factory=set)

    def reach(self, jobs: Sequence[VideoRecord]) -> None:
        """Account for a page this chain has read (and is committing)."""
        for job in jobs:
            created = job.created_at
            if self.at is None or (created > self.at if self.order == "asc" else created < self.at):
                self.at, self.ids = created, {job.id}
            elif created == self.at:
                self.ids.add(job.id)

    def covers(self, job: VideoRecord) -> bool:
        """True when this chain has certainly read (and committed) `job` already."""
        if self.at is None:
            return False
        if job.created_at == self.at:
            return job.id in self.ids
        return job.created_at < self.at if self.order == "asc" else job.created_at > self.at

    def checkpoint(self, write: PageWrite, last_id: str | None) -> None:
        """Put this chain's resume point into the page's write.

        A cursor longer than a checkpoint column holds is not kept, nor the edge with it: a
        resumed scan then goes on from the last checkpoint it could keep.
        """
        if last_id is not None and len(last_id) > MAX_ID_LEN:
            return
        if self.order == "asc":
            write.scan_after_id, write.scan_asc_created_at = last_id, self.at
        else:
            write.scan_desc_after_id, write.scan_desc_created_at = last_id, self.at


def met(asc: Edge, desc: Edge) -> bool:
    """True once the two chains have read every job between them."""
    return asc.at is not None and desc.at is not None and asc.at > desc.at
