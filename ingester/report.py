"""`ingester report`: one static HTML page of charts drawn from the views of revision 0002.

The page needs no network and runs no script: every chart is inline SVG drawn here, and
tooltips are SVG `<title>` elements. Data comes from the views (see docs/queries.md), so the
report shows what SQL users see; render-time percentiles are computed here from the rows of
`video_job_timings`, the same way on every backend. Every provider string is escaped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .errors import ConfigError, StoreError
from .models import UTCDateTime, sync_errors, sync_runs

GREEN, RED, BLUE, GREY, AMBER, INK = (
    "#1f9d6b",
    "#e5484d",
    "#3e63dd",
    "#a1a1aa",
    "#f59e0b",
    "#1c2024",
)
STATUS_COLORS = (("completed", GREEN), ("failed", RED), ("open", BLUE), ("missing", GREY))


def _view(name: str, **cols: sa.types.TypeEngine[Any]) -> sa.TableClause:
    """A typed handle on a view (not in the metadata: Alembic must not see views)."""
    return sa.table(name, *(sa.column(c, t) for c, t in cols.items()))


_S, _I, _F, _T = sa.String(), sa.Integer(), sa.Float(), UTCDateTime()
DAILY = _view(
    "video_jobs_daily",
    day=sa.Date(),
    source=_S,
    completed=_I,
    failed=_I,
    still_open=_I,
    missing=_I,
    video_seconds=_F,
)
TIMINGS = _view(
    "video_job_timings", source=_S, model=_S, size=_S, status=_S, created_at=_T, render_s=_F
)
FAILURES = _view(
    "video_job_failures",
    source=_S,
    error_code=_S,
    failures=_I,
    first_seen_at=_T,
    last_seen_at=_T,
    example_message=_S,
)
HEALTH = _view(
    "sync_health",
    source=_S,
    last_success_at=_T,
    since_success_s=_F,
    passes_24h=_I,
    failed_passes_24h=_I,
    errors_24h=_I,
    cursor_age_s=_F,
    open_jobs=_I,
)


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


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows; `failures` and `health` are rows of their views."""

    generated_at: datetime
    source: str | None
    days: int
    daily: list[Day]
    render: list[RenderTimes]
    render_p50: float | None  # over every model and size
    failures: list[dict[str, Any]]
    health: list[dict[str, Any]]
    hours: list[Hour]


def percentile(values: Sequence[float], p: float) -> float:
    """SQL's `percentile_cont`: linear interpolation between the two closest ranks."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] if lo + 1 >= len(v) else v[lo] + (v[lo + 1] - v[lo]) * (pos - lo)


def collect(
    engine: Engine, *, source: str | None = None, days: int = 30, now: datetime | None = None
) -> ReportData:
    """Read the views (and the last 24 h of runs and errors) for the page."""
    now = now or datetime.now(UTC)
    first_day = now.date() - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)

    def only(view: sa.TableClause | sa.Table, *where: Any) -> Any:
        return sa.and_(sa.true(), *where, *([view.c.source == source] if source else []))

    d, t, f, h = DAILY.c, TIMINGS.c, FAILURES.c, HEALTH.c
    try:
        with engine.connect() as conn:
            daily = conn.execute(sa.select(DAILY).where(only(DAILY, d.day >= first_day))).all()
            times = conn.execute(
                sa.select(t.model, t.size, t.render_s).where(
                    only(
                        TIMINGS,
                        t.status == "completed",
                        t.render_s.is_not(None),
                        t.created_at >= since,
                    )
                )
            ).all()
            failures = conn.execute(
                sa.select(FAILURES).where(only(FAILURES, f.last_seen_at >= since))
            ).mappings()
            failures_ = sorted(
                map(dict, failures), key=lambda r: (-r["failures"], str(r["error_code"]))
            )
            health = [
                dict(r)
                for r in conn.execute(
                    sa.select(HEALTH).where(only(HEALTH)).order_by(h.source)
                ).mappings()
            ]
            day_ago = now - timedelta(hours=24)
            r, e = sync_runs.c, sync_errors.c
            runs = conn.execute(
                sa.select(r.started_at, r.outcome).where(only(sync_runs, r.started_at >= day_ago))
            ).all()
            errors = conn.execute(
                sa.select(e.occurred_at).where(only(sync_errors, e.occurred_at >= day_ago))
            ).scalars()
            errors_ = list(errors)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise StoreError(f"cannot read the mirror: {' '.join(str(orig).split())[:300]}") from exc
    return ReportData(
        now,
        source,
        days,
        _days(daily, first_day, now.date()),
        _render(times),
        percentile([r.render_s for r in times], 0.5) if times else None,
        _by_code(failures_) if source is None else failures_,
        health,
        _hours(runs, errors_, now),
    )


def _days(rows: Sequence[Any], first: date, last: date) -> list[Day]:
    """Sum the per-model rows into one per day, with a zero day wherever nothing was created."""
    sums: dict[date, list[float]] = {}
    for r in rows:
        acc = sums.setdefault(r.day, [0, 0, 0, 0, 0.0])
        for i, v in enumerate((r.completed, r.failed, r.still_open, r.missing, r.video_seconds)):
            acc[i] += v or 0
    out = []
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        c, fl, o, m, secs = sums.get(day, [0, 0, 0, 0, 0.0])
        out.append(Day(day, int(c), int(fl), int(o), int(m), float(secs)))
    return out


def _render(rows: Sequence[Any]) -> list[RenderTimes]:
    groups: dict[tuple[str, str], list[float]] = {}
    for model, size, render_s in rows:
        groups.setdefault((model or "(no model)", size or "(no size)"), []).append(render_s)
    return [
        RenderTimes(m, sz, len(v), percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.95))
        for (m, sz), v in sorted(groups.items())
    ]


def _by_code(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of several sources merged per error code; the example is the latest one."""
    merged: dict[Any, dict[str, Any]] = {}
    for r in rows:
        m = merged.setdefault(r["error_code"], {**r, "failures": 0, "source": "all"})
        m["failures"] += r["failures"]
        m["first_seen_at"] = min(m["first_seen_at"], r["first_seen_at"])
        if r["last_seen_at"] > m["last_seen_at"]:
            m.update(last_seen_at=r["last_seen_at"], example_message=r["example_message"])
    return sorted(merged.values(), key=lambda r: (-r["failures"], str(r["error_code"])))


def _hours(runs: Sequence[Any], errors: Sequence[datetime], now: datetime) -> list[Hour]:
    top = now.replace(minute=0, second=0, microsecond=0)
    starts = [top - timedelta(hours=23 - i) for i in range(24)]
    counts = {s: [0, 0, 0] for s in starts}

    def slot(at: datetime) -> list[int] | None:
        return counts.get(at.replace(minute=0, second=0, microsecond=0))

    for started, outcome in runs:
        if (c := slot(started)) is not None and outcome in ("succeeded", "failed"):
            c[0 if outcome == "succeeded" else 1] += 1
    for at in errors:
        if (c := slot(at)) is not None:
            c[2] += 1
    return [Hour(s, *counts[s]) for s in starts]


# --- the page ------------------------------------------------------------------------------------


def write(
    engine: Engine,
    path: Path,
    *,
    source: str | None = None,
    days: int = 30,
    now: datetime | None = None,
) -> Path:
    """Collect, render and write the report (atomically); return its absolute path."""
    page = render_html(collect(engine, source=source, days=days, now=now))
    path = path.expanduser().absolute()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None
    return path


def render_html(data: ReportData) -> str:
    """The whole page: header, headline numbers, four charts."""
    days = data.daily
    created = sum(d.completed + d.failed + d.open + d.missing for d in days)
    done, failed = sum(d.completed for d in days), sum(d.failed for d in days)
    minutes = sum(d.video_seconds for d in days) / 60
    tiles = [
        ("Jobs created", f"{created:,}", f"in the last {data.days} days"),
        ("Completed", f"{done:,}", f"{minutes:,.0f} minutes of video"),
        (
            "Failed",
            f"{failed:,}",
            f"{100 * failed / (done + failed):.1f}% of finished jobs" if done + failed else "—",
        ),
        ("Open now", f"{sum(h['open_jobs'] or 0 for h in data.health):,}", "queued or rendering"),
        ("Median render", duration(data.render_p50), "completed jobs, all models"),
    ]
    scope = f"source {data.source}" if data.source else "all sources"
    legend = "".join(f'<span><i style="background:{c}"></i>{n}</span>' for n, c in STATUS_COLORS)
    return PAGE.format(
        subtitle=escape(
            f"{scope} · last {data.days} days · generated {data.generated_at:%Y-%m-%d %H:%M} UTC"
        ),
        tiles="".join(
            f'<div class="tile"><div class="k">{k}</div><div class="v">{v}</div>'
            f'<div class="s">{escape(s)}</div></div>'
            for k, v, s in tiles
        ),
        legend=legend,
        daily=jobs_chart(days),
        render=render_chart(data.render),
        failures=failures_chart(data.failures),
        health="".join(health_card(h) for h in data.health) or _empty("No source synced yet."),
        passes=passes_chart(data.hours),
    )


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


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Video jobs report</title>
<style>
body{{margin:0;background:#f4f5f7;color:#1c2024;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}}
main{{max-width:1180px;margin:0 auto;padding:28px 28px 36px}}
h1{{font-size:24px;margin:0;letter-spacing:-.3px}} h2{{font-size:15px;margin:0 0 2px}}
.muted{{color:#60646c}} p.note{{color:#80838d;margin:0 0 10px;font-size:12.5px}}
.tiles{{display:grid;grid-template-columns:repeat(5,1fr);gap:14px;margin:20px 0 16px}}
.tile,.card{{background:#fff;border-radius:12px;box-shadow:0 1px 3px #0000000d,0 0 0 1px #e6e6e9}}
.tile{{padding:14px 16px}} .tile .k{{color:#60646c;font-size:12.5px}}
.tile .v{{font-size:27px;font-weight:650;letter-spacing:-.6px}}
.tile .s{{color:#80838d;font-size:12px}}
.card{{padding:18px 20px;margin-bottom:16px}}
.row{{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:16px}}
.row .card{{margin-bottom:0}}
svg.chart{{width:100%;height:auto;display:block;font-size:11.5px}}
.grid{{stroke:#ececef}} .ax,.sub{{fill:#80838d}} .lbl,.val{{fill:#1c2024;font-weight:600}}
.tot{{fill:#60646c;font-size:10.5px}}
.legend{{display:flex;gap:16px;font-size:12.5px;color:#60646c;margin:4px 0 6px}}
.legend i{{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:6px}}
.sources{{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px;
margin:10px 0 12px}}
.src{{border:1px solid #e6e6e9;border-radius:10px;padding:10px 14px}}
.src .name{{font-weight:650;display:flex;justify-content:space-between;align-items:center}}
.src dl{{display:grid;grid-template-columns:repeat(5,auto);gap:2px 16px;margin:6px 0 0}}
.src dt{{color:#80838d;font-size:11.5px;white-space:nowrap}}
.src dd{{margin:0;font-weight:600;white-space:nowrap}}
.pill{{font-size:11.5px;padding:2px 10px;border-radius:99px;font-weight:600}}
.pill.ok{{background:#e6f6ee;color:#18794e}} .pill.degraded{{background:#fff4d5;color:#a35200}}
.pill.stale{{background:#feebec;color:#ce2c31}}
.empty{{color:#80838d;padding:28px 0;text-align:center}}
</style></head>
<body><main>
<h1>Video jobs</h1><div class="muted">{subtitle}</div>
<div class="tiles">{tiles}</div>
<section class="card"><h2>Jobs per day, by status</h2>
<p class="note">By the UTC day each job was created; open and missing jobs never finished.</p>
<div class="legend">{legend}</div>{daily}</section>
<div class="row">
<section class="card"><h2>Render time by model and size</h2>
<p class="note">Completed jobs: light bar to the median (p50), dark bar to p95, mark at p90.</p>
{render}</section>
<section class="card"><h2>Failures by error code</h2>
<p class="note">Codes seen in this period, counted over all time, with the latest message.</p>
{failures}</section>
</div>
<section class="card"><h2>Sync health</h2>
<p class="note">Stale: no successful pass for 15 minutes. Degraded: a failed pass or an error in
the last 24 h. Chart: passes per hour over the last 24 h; amber dots mark hours with errors.</p>
<div class="sources">{health}</div>{passes}</section>
</main></body></html>
"""
