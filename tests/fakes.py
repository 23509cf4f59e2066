"""A behaving in-memory `PageSource`: the provider's list semantics without HTTP.

`sync` is tested against it (and a real SQL store), so the algorithm is checked without
`requests`; the HTTP path is tested against the simulator.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from ingester.errors import CursorRejectedError, NotServedError
from ingester.protocols import Order, Page


class Clock:
    """An injectable clock of aware UTC datetimes."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def job(
    n: int, status: str = "completed", created_at: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A video object numbered n (created one second apart by default)."""
    obj: dict[str, Any] = {
        "id": f"video_{n:06d}",
        "object": "video",
        "model": "sora-2",
        "status": status,
        "progress": 100 if status == "completed" else 0,
        "created_at": 1_760_000_000 + n if created_at is None else created_at,
        "completed_at": None,
        "expires_at": None,
        "prompt": f"prompt {n}",
        "size": "1280x720",
        "seconds": "8",
        "remixed_from_video_id": None,
        "error": None,
    }
    obj.update(extra)
    return obj


class ListSource:
    """Jobs in `asc` order, paged like the provider; `unknown_after` picks the 404/restart mode."""

    def __init__(
        self, jobs: list[dict[str, Any]] | None = None, *, unknown_after: str = "404"
    ) -> None:
        self.jobs: list[dict[str, Any]] = jobs or []
        self.unknown_after = unknown_after
        self.gone: int | None = None
        self.loop_at: str | None = None
        self.requests = 0
        self.retries = 0
        self.calls: list[tuple[str | None, str]] = []

    def find(self, video_id: str) -> dict[str, Any]:
        """The job with this id (to change it in place)."""
        return next(j for j in self.jobs if j.get("id") == video_id)

    def delete(self, video_id: str) -> None:
        """Remove a job from the provider."""
        self.jobs = [j for j in self.jobs if j.get("id") != video_id]

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        """One page, with the provider's `after` semantics."""
        self.requests += 1
        self.calls.append((after, order))
        if self.gone:
            raise NotServedError("gone", status=self.gone)
        seq = self.jobs if order == "asc" else self.jobs[::-1]
        start = 0
        if after is not None:
            ids = [j.get("id") for j in seq]
            if after in ids:
                start = ids.index(after) + 1
            elif self.unknown_after == "404":
                raise CursorRejectedError("No video found", status=404, request_id="req_x")
        if self.loop_at is not None and after == self.loop_at:
            start = max(0, start - limit)  # misbehave: serve the previous page again
        data = copy.deepcopy(seq[start : start + limit])
        return Page(
            data,
            start + limit < len(seq),
            data[0].get("id") if data else None,
            data[-1].get("id") if data else None,
            f"req_{self.requests}",
        )

    def get_video(self, video_id: str) -> Any | None:
        """`GET /videos/{id}`."""
        self.requests += 1
        for j in self.jobs:
            if j.get("id") == video_id:
                return copy.deepcopy(j)
        return None
