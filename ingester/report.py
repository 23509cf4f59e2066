"""`ingester report`: one static HTML page of charts drawn from the views of revision 0002.

The page needs no network and runs no script: every chart is inline SVG drawn by `charts`.
Data comes from the views (see docs/queries.md), so the report shows what SQL users see;
render-time percentiles are computed here from the rows of `video_job_timings`, the same way
on every backend. Every provider string is escaped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import charts
from .database import translated
from .errors import ConfigError
from .models import UTCDateTime, sync_errors, sync_runs


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
class ReportData:
    """Everything the page shows; `failures` and `health` are rows of their views."""

    generated_at: datetime
    source: str | None
    days: int
    daily: list[charts.Day]
    render: list[charts.RenderTimes]
    render_p50: float | None  # over every model and size
    failures: list[dict[str, Any]]
    health: list[dict[str, Any]]
    hours: list[charts.Hour]


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
    with translated("cannot read the mirror"), engine.connect() as conn:
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


def _days(rows: Sequence[Any], first: date, last: date) -> list[charts.Day]:
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
        out.append(charts.Day(day, int(c), int(fl), int(o), int(m), float(secs)))
    return out


def _render(rows: Sequence[Any]) -> list[charts.RenderTimes]:
    groups: dict[tuple[str, str], list[float]] = {}
    for model, size, render_s in rows:
        groups.setdefault((model or "(no model)", size or "(no size)"), []).append(render_s)
    return [
        charts.RenderTimes(
            m, sz, len(v), percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.95)
        )
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


def _hours(runs: Sequence[Any], errors: Sequence[datetime], now: datetime) -> list[charts.Hour]:
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
    return [charts.Hour(s, *counts[s]) for s in starts]


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
        ("Median render", charts.duration(data.render_p50), "completed jobs, all models"),
    ]
    scope = f"source {data.source}" if data.source else "all sources"
    return PAGE.format(
        subtitle=escape(
            f"{scope} · last {data.days} days · generated {data.generated_at:%Y-%m-%d %H:%M} UTC"
        ),
        tiles="".join(
            f'<div class="tile"><div class="k">{k}</div><div class="v">{v}</div>'
            f'<div class="s">{escape(s)}</div></div>'
            for k, v, s in tiles
        ),
        legend=charts.legend(charts.STATUS_COLORS),
        daily=charts.jobs_chart(days),
        render=charts.render_chart(data.render),
        failures=charts.failures_chart(data.failures),
        health=charts.health_cards(data.health),
        passes=charts.passes_chart(data.hours),
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
