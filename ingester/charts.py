"""The drawing of `ingester report`: inline SVG charts and HTML cards from plain data.

Nothing here reads a database or a file; `report` collects the data and assembles the page.
Tooltips are SVG `<title>` elements, and every provider string is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from typing import Any

GREEN, RED, BLUE, GREY, AMBER = ("#1f9d6b", "#e5484d", "#3e63dd", "#a1a1aa", "#f59e0b")
STATUS_COLORS = (("completed", GREEN), ("failed", RED), ("open", BLUE), ("missing", GREY))


@dataclass(frozen=True)
class Day:
    """Jobs created on one UTC day, by what became of them."""

    day: date
    completed: int = 0
    failed: int = 0
    open: int = 0
    missing: int = 0
    video_seconds: float = 0.0


@dataclass(frozen=True)
class RenderTimes:
    """Render-time percentiles (seconds) of the completed jobs of one model and size."""

    model: str
    size: str
    jobs: int
    p50: float
    p90: float
    p95: float


@dataclass(frozen=True)
class Hour:
    """Passes and errors of one hour of the last 24."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    errors: int = 0


def duration(seconds: float | None) -> str:
    """Seconds for people: 45s, 3m 20s, 2h 05m, 3d 4h."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _ticks(top: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if step < 1 and top >= 1:
        step = 1
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _svg(chart_id: str, width: int, height: int, body: str) -> str:
    return (
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{chart_id.replace("-", " ")}" xmlns="http://www.w3.org/2000/svg">'
        f"{body}</svg>"
    )


def _columns(
    chart_id: str,
    labels: list[str],
    series: list[tuple[str, str, list[int]]],
    tooltip: Callable[[int], str],
    *,
    height: int = 250,
    width: int = 1100,
    dots: list[int] | None = None,
) -> str:
    """Stacked columns with a y axis, the total above each, a tooltip per column; `dots` marks
    columns with an amber dot (e.g. errors)."""
    left, right, top, bottom = 40, 6, 16, 24
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    ticks = _ticks(max(totals, default=0))
    scale = ph / ticks[-1]
    parts = [
        f'<line x1="{left}" x2="{width - right}" y1="{top + ph - v * scale:.1f}" '
        f'y2="{top + ph - v * scale:.1f}" class="grid"/><text x="{left - 8}" '
        f'y="{top + ph - v * scale + 4:.1f}" class="ax" text-anchor="end">{v:g}</text>'
        for v in ticks
    ]
    band = pw / max(len(labels), 1)
    every = max(1, math.ceil(len(labels) / 14))
    for i, label in enumerate(labels):
        x, y, cx = left + i * band + band * 0.15, float(top + ph), left + (i + 0.5) * band
        rects = []
        for name, color, values in series:
            if values[i]:
                h = values[i] * scale
                y -= h
                rects.append(
                    f'<rect class="bar" data-series="{name}" x="{x:.1f}" y="{y:.1f}" '
                    f'width="{band * 0.7:.1f}" height="{h:.1f}" rx="2" fill="{color}"/>'
                )
        if totals[i] and band >= 24:
            rects.append(
                f'<text x="{cx:.1f}" y="{y - 4:.1f}" class="tot" '
                f'text-anchor="middle">{totals[i]}</text>'
            )
        if dots and dots[i]:
            rects.append(
                f'<circle class="dot" cx="{cx:.1f}" cy="{top + ph + 1:.1f}" r="4.5" '
                f'fill="{AMBER}" stroke="#fff" stroke-width="1.5"/>'
            )
        parts.append(f"<g><title>{escape(tooltip(i))}</title>{''.join(rects)}</g>")
        if i % every == 0:
            parts.append(
                f'<text x="{cx:.1f}" y="{height - 6}" class="ax" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _svg(chart_id, width, height, "".join(parts))


def legend(items: Sequence[tuple[str, str]]) -> str:
    """Colour swatches with the names of the series they stand for."""
    return "".join(f'<span><i style="background:{c}"></i>{n}</span>' for n, c in items)


def jobs_chart(days: list[Day]) -> str:
    """Jobs per creation day, stacked by what became of them."""
    if not any(d.completed + d.failed + d.open + d.missing for d in days):
        return _empty("No jobs were created in this period.")
    series = [(name, color, [getattr(d, name) for d in days]) for name, color in STATUS_COLORS]

    def tip(i: int) -> str:
        d = days[i]
        return (
            f"{d.day:%a %d %b}: {d.completed} completed, {d.failed} failed, {d.open} open, "
            f"{d.missing} missing"
        )

    return _columns("jobs-per-day", [f"{d.day:%d %b}" for d in days], series, tip)


def passes_chart(hours: list[Hour]) -> str:
    """Passes per hour over the last 24 h (succeeded/failed); an amber dot where errors were."""
    return _columns(
        "sync-passes",
        [f"{h.start:%H}h" for h in hours],
        [
            ("succeeded", GREEN, [h.succeeded for h in hours]),
            ("failed", RED, [h.failed for h in hours]),
        ],
        lambda i: (
            f"{hours[i].start:%H:00} UTC: {hours[i].succeeded} passes succeeded, "
            f"{hours[i].failed} failed, {hours[i].errors} errors recorded"
        ),
        height=180,
        dots=[h.errors for h in hours],
    )


Segment = tuple[float, float, str, str]  # from, to, colour, class


@dataclass(frozen=True)
class HRow:
    """One row of a horizontal chart: what is on the left, along the axis, on the right."""

    label: str
    sub: str
    segments: list[Segment]
    value: str
    value_sub: str
    tip: str


def _hrows(
    chart_id: str,
    rows: list[HRow],
    top: float,
    fmt: Callable[[float], str],
    *,
    label_w: int = 140,
    sub_under_bar: bool = False,
) -> str:
    """Horizontal rows of segments along a shared axis, labelled left and right."""
    width, row_h, axis_h, right = 540, 48, 22, 96
    height = len(rows) * row_h + axis_h
    ticks = _ticks(top)
    scale = (width - label_w - right) / ticks[-1]
    parts = [
        f'<line x1="{label_w + v * scale:.1f}" x2="{label_w + v * scale:.1f}" y1="0" '
        f'y2="{height - axis_h}" class="grid"/><text x="{label_w + v * scale:.1f}" '
        f'y="{height - 6}" class="ax" text-anchor="middle">{escape(fmt(v))}</text>'
        for v in ticks
    ]
    sub_x, sub_len = (label_w, 46) if sub_under_bar else (0, 22)
    vx = width - right + 10
    for i, r in enumerate(rows):
        y = i * row_h
        shapes = "".join(
            f'<rect class="{cls}" x="{label_w + a * scale:.1f}" y="{y + 8}" '
            f'width="{max((b - a) * scale, 2.5):.1f}" height="18" rx="3" fill="{color}"/>'
            for a, b, color, cls in r.segments
        )
        parts.append(
            f"<g><title>{escape(r.tip)}</title>"
            f'<text x="0" y="{y + 22}" class="lbl">{escape(_cut(r.label, 20))}</text>'
            f'<text x="{sub_x}" y="{y + 41}" class="sub">{escape(_cut(r.sub, sub_len))}</text>'
            f'{shapes}<text x="{vx}" y="{y + 22}" class="val">{escape(r.value)}</text>'
            f'<text x="{vx}" y="{y + 41}" class="sub">{escape(r.value_sub)}</text></g>'
        )
    return _svg(chart_id, width, height, "".join(parts))


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def render_chart(rows: list[RenderTimes]) -> str:
    """Per model and size: a bar to p50, a darker one from p50 to p95, a mark at p90."""
    if not rows:
        return _empty("No completed job with an observed render time in this period.")
    mark = max(r.p95 for r in rows) * 0.004
    items = [
        HRow(
            r.model,
            f"{r.size} · {r.jobs:,} jobs",
            [
                (0.0, r.p50, "#c7d2fe", "range"),
                (r.p50, r.p95, "#818cf8", "range"),
                (r.p90 - mark, r.p90 + mark, "#312e81", "p90"),
            ],
            f"p50 {duration(r.p50)}",
            f"p95 {duration(r.p95)}",
            f"{r.model} {r.size}: p50 {duration(r.p50)}, p90 {duration(r.p90)}, "
            f"p95 {duration(r.p95)} over {r.jobs} completed jobs",
        )
        for r in rows
    ]
    return _hrows("render-times", items, max(r.p95 for r in rows), duration)


def failures_chart(rows: list[dict[str, Any]]) -> str:
    """Failed jobs per error code, most frequent first, the latest message under each bar."""
    if not rows:
        return _empty("No failures seen in this period.")
    items = [
        HRow(
            str(r["error_code"] or "(no code)"),
            str(r["example_message"] or ""),
            [(0.0, float(r["failures"]), RED, "bar")],
            f"{r['failures']:,}",
            f"last {r['last_seen_at']:%d %b}",
            f"{r['error_code']}: {r['failures']} failures, first seen "
            f"{r['first_seen_at']:%Y-%m-%d %H:%M}, last {r['last_seen_at']:%Y-%m-%d %H:%M} UTC. "
            f"Latest: {r['example_message']}",
        )
        for r in rows[:12]
    ]
    top = max(r["failures"] for r in rows)
    return _hrows("failure-codes", items, top, lambda v: f"{v:g}", label_w=150, sub_under_bar=True)


def health_card(h: dict[str, Any]) -> str:
    """One source: a verdict and the numbers of `sync_health`."""
    since = h["since_success_s"]
    if since is None or since > 900:
        verdict = "stale"
    elif h["failed_passes_24h"] or h["errors_24h"]:
        verdict = "degraded"
    else:
        verdict = "ok"
    facts = [
        ("last success", f"{duration(since)} ago" if since is not None else "never"),
        (
            "passes 24 h",
            f"{h['passes_24h']}"
            + (f" ({h['failed_passes_24h']} failed)" if h["failed_passes_24h"] else ""),
        ),
        ("errors 24 h", str(h["errors_24h"])),
        ("cursor age", duration(h["cursor_age_s"])),
        ("open jobs", str(h["open_jobs"])),
    ]
    dl = "".join(f"<div><dt>{k}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    return (
        f'<div class="src"><div class="name">{escape(str(h["source"]))}'
        f'<b class="pill {verdict}">{verdict}</b></div><dl>{dl}</dl></div>'
    )


def health_cards(rows: list[dict[str, Any]]) -> str:
    """One card per row of `sync_health`, or a note that no source has synced yet."""
    return "".join(health_card(h) for h in rows) or _empty("No source synced yet.")
