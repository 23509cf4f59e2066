"""`python -m bench --quick` runs end to end (so the benchmark cannot rot), and what it counts
is right. Timings are the benchmark's business, not the test suite's: none is asserted here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_quick_benchmark_runs_and_counts_right(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for title in ("1. Backfill", "2. Steady state", "3. Open window", "4. Peak RSS", "5. Backfill"):
        assert title in done.stdout
    (table,) = tmp_path.glob("*.md")
    assert table.read_text() in done.stdout
    (saved,) = tmp_path.glob("*.json")
    doc = json.loads(saved.read_text())
    plan, raw = doc["plan"], doc["raw"]

    backfill = raw["backfill"]["sqlite"]
    for kind in ("fetch", "write", "backfill"):
        assert all(run["items"] >= plan["backfill_jobs"] for run in backfill[kind]), kind
    for kind in ("write", "backfill"):  # every job inserted with its first sighting
        assert all(run["written"] == 2 * plan["backfill_jobs"] for run in backfill[kind])

    steady = raw["steady"]["sqlite"]
    assert sorted(map(int, steady)) == sorted(plan["steady_sizes"])
    for passes in steady.values():  # nothing new, nothing open: one request, nothing written
        assert [(p["requests"], p["written"]) for p in passes] == [(1, 0)] * plan["passes"]

    expected = math.ceil(plan["open_jobs"] / 100)
    assert [(p["requests"], p["written"]) for p in raw["open"]["sqlite"]] == [(expected, 0)] * plan[
        "passes"
    ]

    assert sorted(map(int, raw["rss"])) == sorted(plan["rss_sizes"])
    assert all(peak > 10 * 2**20 for peak in raw["rss"].values())

    latency = raw["latency"]["sqlite"]
    assert all(run["written"] == 2 * plan["latency_jobs"] for run in latency)
