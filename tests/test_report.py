"""`ingester report`: the numbers it reads from the views, the page, and the page in a browser.

The browser check runs Debian's chromium headless on the written file (no network, no
JavaScript) and reads its screenshot with a small stdlib PNG decoder. Set
INGESTER_UPDATE_SCREENSHOT=1 to refresh docs/report.png from the SQLite run.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from ingester import charts, report
from ingester.cli import cli
from ingester.models import video_jobs
from tests.test_views import (
    DAY,
    Mirror,
    backend,
    blank_db,
    empty,
    expected_failures,
    expected_timing,
    filled,
    passes_since,
    percentile_cont,
)

# fixtures shared with test_views: a mirror per backend filled by the simulator, an empty one
__all__ = ["blank_db", "empty", "filled"]

ROOT = Path(__file__).resolve().parent.parent
CHARTS = ("jobs-per-day", "render-times", "failure-codes", "sync-passes")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 1440)


def test_collect_reads_the_views(filled: tuple[Engine, Mirror]) -> None:
    engine, m = filled
    now = datetime.now(UTC)
    data = report.collect(engine, days=7, now=now)
    assert [d.day for d in data.daily] == [now.date() - timedelta(days=6 - i) for i in range(7)]
    assert sum(d.completed + d.failed + d.open + d.missing for d in data.daily) == len(m.specs)
    assert sum(d.open for d in data.daily) == 3 and sum(d.missing for d in data.daily) == 1
    renders: dict[tuple[str | None, str | None], list[float]] = {}
    for s in m.specs.values():
        t = expected_timing(m, s)
        if t["status"] == "completed" and t["render_s"] is not None:
            renders.setdefault((s.model, s.size), []).append(t["render_s"])
    assert [(r.model, r.size) for r in data.render] == sorted(renders)
    for r in data.render:
        values = renders[(r.model, r.size)]
        assert r.jobs == len(values)
        assert (r.p50, r.p90, r.p95) == pytest.approx(
            [percentile_cont(values, p) for p in (0.5, 0.9, 0.95)]
        )
    every = [v for vs in renders.values() for v in vs]
    assert data.render_p50 == pytest.approx(percentile_cont(every, 0.5))
    by_code: Counter[str] = Counter()
    for (_source, code), row in expected_failures(m).items():
        by_code[code] += row["failures"]
    assert {r["error_code"]: r["failures"] for r in data.failures} == dict(by_code)
    counts = [r["failures"] for r in data.failures]
    assert counts == sorted(counts, reverse=True)
    assert [(h["source"], h["open_jobs"]) for h in data.health] == [("archive", 0), ("main", 3)]
    window_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    in_window = [p for p in passes_since(m, "main", -DAY) if m.at(p[0]) >= window_start]
    assert sum(h.succeeded + h.failed for h in data.hours) == len(in_window)
    assert sum(h.failed for h in data.hours) == 1
    assert sum(h.errors for h in data.hours) == 2


def test_collect_for_one_source(filled: tuple[Engine, Mirror]) -> None:
    engine, _m = filled
    data = report.collect(engine, source="archive", days=7)
    assert sum(d.completed for d in data.daily) == 6 and sum(d.failed for d in data.daily) == 2
    assert data.render == [] and data.render_p50 is None  # first sighted finished: no render
    assert {r["source"] for r in data.failures} == {"archive"}
    assert sum(r["failures"] for r in data.failures) == 2
    assert [h["source"] for h in data.health] == ["archive"]
    assert sum(h.succeeded + h.failed + h.errors for h in data.hours) == 0
    page = report.render_html(data)
    assert "No completed job with an observed render time" in page
    assert 'id="render-times"' not in page


def test_page_is_self_contained(filled: tuple[Engine, Mirror]) -> None:
    engine, _m = filled
    page = report.render_html(report.collect(engine, days=30))
    assert "<script" not in page.lower()
    for pattern in (r"\bsrc=", r"\bhref=", r"url\(", r"@import", r"<link", r"<iframe"):
        assert not re.search(pattern, page, re.I), pattern
    # the one URL is the SVG namespace, an identifier that is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    for chart in CHARTS:
        assert page.count(f'id="{chart}"') == 1


def test_an_empty_mirror_says_so(empty: Engine) -> None:
    page = report.render_html(report.collect(empty, days=30))
    for text in (
        "No jobs were created in this period.",
        "No failures seen in this period.",
        "No source synced yet.",
        "No completed job with an observed render time",
    ):
        assert text in page, text  # fmt: skip
    assert 'id="sync-passes"' in page  # an empty 24 h axis still reads as "nothing ran"


def test_provider_strings_are_escaped(empty: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    evil = "<script>alert(1)</script>"
    with empty.begin() as conn:
        conn.execute(
            sa.insert(video_jobs),
            {
                "id": "video_evil", "source": "s1", "model": "<b>model</b>", "size": "1x1",
                "status": "failed", "created_at": now - timedelta(minutes=5),
                "completed_at": now, "error_code": "<img src=x>", "error_message": evil,
                "raw": {}, "content_hash": "0" * 32, "first_seen_at": now,
                "last_seen_at": now, "last_changed_at": now,
            },
        )  # fmt: skip
    page = report.render_html(report.collect(empty, days=1, now=now))
    assert "<script" not in page and "<img" not in page and "<b>model" not in page
    assert "&lt;img src=x&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_writes_the_report(filled: tuple[Engine, Mirror], tmp_path: Path) -> None:
    engine, _m = filled
    url = engine.url.render_as_string(hide_password=False)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        cli, ["--database-url", url, "report", "--days", "7", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out)
    assert all(f'id="{c}"' in out.read_text(encoding="utf-8") for c in CHARTS)
    assert not list(tmp_path.glob(".*.tmp"))
    one = CliRunner().invoke(
        cli, ["--database-url", url, "report", "--source", "main", "-o", str(out)]
    )
    assert one.exit_code == 0, one.output
    assert "source main · last 30 days" in out.read_text(encoding="utf-8")


def test_cli_report_errors_are_one_line(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(cli, ["--database-url", empty, "report", "-o", "x.html"])
    assert result.exit_code == 6  # not migrated
    assert "ingester migrate" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["--database-url", empty, "report", "--days", "0"])
    assert bad.exit_code == 2


# --- the page in a real browser ------------------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """Width, height, unfiltered rows and bytes per pixel of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
    ]  # fmt: skip
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(
    filled: tuple[Engine, Mirror], tmp_path: Path
) -> None:
    engine, _m = filled
    page = report.write(engine, tmp_path / "report.html", days=7)
    url = page.as_uri()
    dom = chromium("--dump-dom", url, tmp=tmp_path).stdout
    for chart in CHARTS:
        assert re.search(rf'<svg class="chart" id="{chart}"', dom), chart
    jobs_svg = dom[
        dom.index('id="jobs-per-day"') : dom.index("</svg>", dom.index('id="jobs-per-day"'))
    ]
    assert len(re.findall(r'<rect class="bar"', jobs_svg)) >= 10
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url, tmp=tmp_path)
    width, height, rows, bpp = read_png(shot)
    assert (width, height) == WINDOW
    pixels: Counter[bytes] = Counter()
    for line in rows[::2]:  # every other row is plenty and twice as fast
        pixels.update(line[i : i + 3] for i in range(0, len(line), bpp * 2))
    background = pixels.most_common(1)[0][1]
    assert background < 0.8 * sum(pixels.values()), "the page is nearly blank"
    assert len(pixels) > 200, "too few colours for charts and text"
    for name, color in (("completed", charts.GREEN), ("failed", charts.RED),
                        ("open", charts.BLUE)):  # fmt: skip
        rgb = bytes.fromhex(color[1:])
        assert pixels[rgb] > 300, f"no {name} bars painted"
    if os.environ.get("INGESTER_UPDATE_SCREENSHOT") == "1" and backend(engine) == "sqlite":
        shutil.copyfile(shot, ROOT / "docs" / "report.png")
