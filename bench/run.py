"""The benchmark: every figure and ratio measured in one run, medians of repetitions.

`python -m bench` (about 15-25 minutes here) or `python -m bench --quick` (seconds; what the
smoke test runs). The machine is shared and noisy, so what matters are the ratios of numbers
taken minutes apart in the same run, not the absolute times. Prints markdown tables and
writes them, with every repetition, to bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import measure as m
from . import peers
from .server import serve

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one benchmark run."""

    backfill_jobs: int = 100_000
    steady_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    open_total: int = 100_000
    open_jobs: int = 1_000
    rss_sizes: tuple[int, int] = (100_000, 1_000_000)
    latency_jobs: int = 20_000
    latency_ms: float = 100.0
    reps: int = 3  # backfills (fetch-only, write-only, backfill) and latency runs
    passes: int = 5  # steady-state and open-window passes


FULL = Plan()
QUICK = Plan(
    backfill_jobs=2_000, steady_sizes=(500, 2_000), open_total=2_000, open_jobs=150,
    rss_sizes=(1_000, 4_000), latency_jobs=1_000, latency_ms=5.0, reps=1, passes=2,
)  # fmt: skip


@dataclass
class Section:
    """One table of the report."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The section as a markdown table."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"


class Report:
    """Sections for the table, and every raw figure for the JSON file."""

    def __init__(self, plan: Plan, backends: Sequence[str]) -> None:
        self.plan = plan
        self.backends = list(backends)
        self.sections: dict[str, Section] = {}
        self.raw: dict[str, Any] = {}

    def section(self, key: str, title: str, header: list[str]) -> Section:
        """The section called `key`, created on first use."""
        if key not in self.sections:
            self.sections[key] = Section(title, header)
        return self.sections[key]

    def render(self) -> str:
        """The whole report, sections in a fixed order."""
        order = ["backfill", "steady", "open", "rss", "latency", "peers"]
        parts = [self.sections[k].render() for k in order if k in self.sections]
        return "\n".join(parts)


# --- formatting ----------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.0f} MB"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the five measurements ----------------------------------------------------------------------


def bench_backfill(report: Report, work: Path) -> None:
    """1. Backfill next to its floor: fetch-only and write-only, same pages, same run."""
    plan = report.plan
    sec = report.section(
        "backfill",
        f"1. Backfill of {plan.backfill_jobs:,} jobs (median of {plan.reps})",
        ["backend", "fetch-only", "write-only", "backfill", "jobs/s", "/ max(f, w)",
         "/ (f + w)", "target", "CPU: f, w, backfill"],
    )  # fmt: skip
    targets = {"sqlite": 1.5, "postgresql": 2.0}
    with serve(plan.backfill_jobs) as served:
        pages: dict[str | None, Any] = {}
        m.fetch_only(served, keep=pages)  # warm-up; the write-only runs replay these pages
        gc.freeze()  # 100k kept dicts: out of the collector's way, as they are in no real run
        try:
            for backend in report.backends:
                runs: dict[str, list[m.Timed]] = {"fetch": [], "write": [], "backfill": []}
                for rep in range(plan.reps):
                    _log(f"backfill {backend} {rep + 1}/{plan.reps}")
                    runs["fetch"].append(m.fetch_only(served))
                    with m.database(backend, work) as url:
                        runs["write"].append(m.write_only(served, pages, url))
                    with m.database(backend, work) as url:
                        runs["backfill"].append(m.backfill(served, url))
                f, w, b = (_median([t.seconds for t in runs[k]]) for k in runs)
                cpu = ", ".join(_s(_median([t.cpu_s for t in runs[k]])) for k in runs)
                items = runs["backfill"][0].items
                sec.rows.append([
                    backend, _s(f), _s(w), _s(b), _n(items / b), _x(b / max(f, w)),
                    _x(b / (f + w)), f"/ max ≤ {targets.get(backend, 2.0)}", cpu,
                ])  # fmt: skip
                report.raw.setdefault("backfill", {})[backend] = {
                    k: [asdict(t) for t in v] for k, v in runs.items()
                }
        finally:
            gc.unfreeze()
            pages.clear()
    sec.notes.append(
        "fetch-only: the same pages through the same client, no database. write-only: the "
        "same pages (fetched beforehand) through the same `Syncer.backfill` and `SqlStore`, "
        "no HTTP. backfill: `wiring.build_syncer` + `Syncer.backfill`, as `ingester backfill`."
    )


def bench_sizes(report: Report, work: Path) -> None:
    """2 and 4. Steady-state passes on mirrors of each size; peak RSS of `ingester backfill`."""
    plan = report.plan
    steady = report.section(
        "steady",
        f"2. Steady state: nothing new, nothing open (median of {plan.passes} passes)",
        ["backend", "mirror", "requests", "rows written", "time per pass"],
    )
    rss = report.section(
        "rss",
        "4. Peak RSS of `ingester backfill` (a subprocess; its VmHWM; SQLite)",
        ["jobs", "peak RSS", "wall", "jobs/s"],
    )
    times: dict[str, dict[int, float]] = {}
    peaks: dict[int, int] = {}
    for size in sorted(set(plan.steady_sizes) | set(plan.rss_sizes)):
        with serve(size) as served:
            for backend in report.backends:
                measure_rss = backend == "sqlite" and size in plan.rss_sizes
                if size not in plan.steady_sizes and not measure_rss:
                    continue
                with m.database(backend, work) as url:
                    if measure_rss:
                        _log(f"ingester backfill of {size:,} jobs in a subprocess ({backend})")
                        peak, wall = m.backfill_rss(served, url, work)
                        peaks[size] = peak
                        rss.rows.append([_n(size), _mb(peak), _s(wall), _n(size / wall)])
                    else:
                        _log(f"filling a {backend} mirror of {size:,} jobs")
                        m.backfill(served, url)
                    if size in plan.steady_sizes:
                        _log(f"steady-state passes on {size:,} jobs ({backend})")
                        m.sync_pass(served, url)  # the first pass may still move the cursor
                        passes = [m.sync_pass(served, url) for _ in range(plan.passes)]
                        t = _median([p.seconds for p in passes])
                        times.setdefault(backend, {})[size] = t
                        steady.rows.append([
                            backend, _n(size), _ranged([p.requests for p in passes]),
                            _ranged([p.written for p in passes]), _s(t),
                        ])  # fmt: skip
                        report.raw.setdefault("steady", {}).setdefault(backend, {})[size] = [
                            asdict(p) for p in passes
                        ]
    small, large = min(plan.steady_sizes), max(plan.steady_sizes)
    for backend, by_size in times.items():
        steady.notes.append(
            f"{backend}: time per pass at {large:,} / at {small:,} = "
            f"{_x(by_size[large] / by_size[small])} (target ≤ 1.5; 1 request, 0 rows)."
        )
    lo, hi = plan.rss_sizes
    if lo in peaks and hi in peaks:
        rss.notes.append(
            f"peak RSS at {hi:,} / at {lo:,} = {_x(peaks[hi] / peaks[lo])} (target ≤ 1.2)."
        )
    report.raw["rss"] = peaks


def _ranged(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bench_open_window(report: Report, work: Path) -> None:
    """3. A pass over a mirror whose newest jobs are open: ceil(open / 100) requests."""
    plan = report.plan
    expected = math.ceil(plan.open_jobs / 100)
    sec = report.section(
        "open",
        f"3. Open window: {plan.open_total:,} jobs, the newest {plan.open_jobs:,} open "
        f"(median of {plan.passes} passes)",
        ["backend", "requests", "expected", "rows written", "time per pass"],
    )
    with serve(plan.open_total, plan.open_jobs) as served:
        for backend in report.backends:
            _log(f"open-window passes ({backend})")
            with m.database(backend, work) as url:
                m.backfill(served, url)
                m.sync_pass(served, url)
                passes = [m.sync_pass(served, url) for _ in range(plan.passes)]
            sec.rows.append([
                backend, _ranged([p.requests for p in passes]), str(expected),
                _ranged([p.written for p in passes]), _s(_median([p.seconds for p in passes])),
            ])  # fmt: skip
            report.raw.setdefault("open", {})[backend] = [asdict(p) for p in passes]


def bench_latency(report: Report, work: Path) -> None:
    """5. Backfill with injected latency on every request, against pages x latency."""
    plan = report.plan
    pages = math.ceil(plan.latency_jobs / 100)
    floor = pages * plan.latency_ms / 1000
    sec = report.section(
        "latency",
        f"5. Backfill of {plan.latency_jobs:,} jobs with {plan.latency_ms:g} ms latency per "
        f"request (median of {plan.reps})",
        ["backend", "pages", "pages x latency", "backfill", "requests", "/ (pages x latency)",
         "target", "client CPU", "/ (pages x one request)"],
    )  # fmt: skip
    with serve(plan.latency_jobs, latency_ms=plan.latency_ms) as served:
        one = m.request_time(served)
        report.raw["one_request_s"] = one
        sec.notes.append(
            f"One request alone takes {one * 1000:.1f} ms here ({plan.latency_ms:g} ms injected "
            "+ what the same request costs without latency + timer wake-ups): one chain "
            "walking every page cannot beat pages x that; two chains, half of it."
        )
        for backend in report.backends:
            runs = []
            for rep in range(plan.reps):
                _log(f"latency-bound backfill {backend} {rep + 1}/{plan.reps}")
                with m.database(backend, work) as url:
                    runs.append(m.backfill(served, url))
            b = _median([t.seconds for t in runs])
            sec.rows.append([
                backend, _n(pages), _s(floor), _s(b), _ranged([t.requests for t in runs]),
                _x(b / floor), "≤ 0.55", _s(_median([t.cpu_s for t in runs])),
                _x(b / (pages * one)),
            ])  # fmt: skip
            report.raw.setdefault("latency", {})[backend] = [asdict(t) for t in runs]


def bench_peers(report: Report, work: Path) -> None:
    """6. Backfill against its peers, dlt and the fetch floor, alternating in the same run."""
    plan = report.plan
    sec = report.section(
        "peers",
        f"6. Backfill of {plan.backfill_jobs:,} jobs against its peers (median of {plan.reps}, "
        "alternating; min-max in brackets)",
        ["backend", "fetch floor", "ingester", "dlt", "dlt / ingester", "ingester / floor",
         "target", "CPU: floor, ingester, dlt"],
    )  # fmt: skip
    targets = {"sqlite": 2.5, "postgresql": 2.0}
    has_dlt = peers.dlt_installed()
    with serve(plan.backfill_jobs) as served:
        peers.fetch_floor(served)  # warm-up
        for backend in report.backends:
            runs: dict[str, list[m.Timed]] = {"floor": [], "ingester": [], "dlt": []}
            steps: list[dict[str, float]] = []
            for rep in range(plan.reps):
                _log(f"peers {backend} {rep + 1}/{plan.reps}")
                kinds = ["floor", "ingester", "dlt"][:: 1 if rep % 2 == 0 else -1]
                for kind in kinds:
                    if kind == "floor":
                        runs[kind].append(peers.fetch_floor(served))
                    elif kind == "ingester":
                        with m.database(backend, work) as url:
                            runs[kind].append(m.backfill(served, url))
                    elif has_dlt:
                        # A directory of its own: dlt adds files beside a SQLite database.
                        with (
                            tempfile.TemporaryDirectory(dir=work) as tmp,
                            m.database(backend, Path(tmp), migrated=False) as url,
                        ):
                            timed, dlt_steps = peers.dlt_backfill(served, backend, url, Path(tmp))
                        runs[kind].append(timed)
                        steps.append(dlt_steps)
            floor, ingester, dlt = (runs[k] for k in ("floor", "ingester", "dlt"))
            sec.rows.append([
                backend, _times(floor), _times(ingester),
                _times(dlt) if dlt else "not installed",
                _ratio(dlt, ingester) if dlt else "-", _ratio(ingester, floor),
                f"dlt / ingester ≥ {targets.get(backend, 2.0)}",
                ", ".join(_s(_median([t.cpu_s for t in v])) if v else "-" for v in runs.values()),
            ])  # fmt: skip
            if steps:
                each = ", ".join(
                    f"{name} {_s(_median([s[name] for s in steps]))}" for name in steps[0]
                )
                sec.notes.append(
                    f"dlt on {backend} (its `{peers.DLT_DESTINATIONS[backend]}` destination), "
                    f"steps (median): {each}."
                )
            report.raw.setdefault("peers", {})[backend] = {
                "runs": {k: [asdict(t) for t in v] for k, v in runs.items()},
                "dlt_steps": steps,
            }
    sec.notes.append(
        "fetch floor: a plain `requests.Session` loop over the same pages, JSON decoded, "
        "nothing else. ingester: `wiring.build_syncer` + `Syncer.backfill`, as `ingester "
        "backfill`, in this process. dlt: 1.31, `rest_api` source with the JSON-cursor "
        "paginator (`last_id` sent as `after`, stop on `has_more` false), merge on `id`, in a "
        "subprocess of its own, timing `pipeline.run` (CPU includes its worker processes). "
        "Ratios: of the medians, and (min-max) over the repetitions, each taken against the run"
        " beside it." + ("" if has_dlt else " dlt is not installed: `pip install -e '.[bench]'`.")
    )


def _times(runs: Sequence[m.Timed]) -> str:
    """The median, and (min-max) when there are several."""
    values = [t.seconds for t in runs]
    median = _median(values)
    if len(values) == 1:
        return _s(median)
    unit, scale = ("s", 1) if median >= 0.1 else ("ms", 1000)
    return f"{_s(median)} ({min(values) * scale:.2f}-{max(values) * scale:.2f} {unit})"


def _ratio(num: Sequence[m.Timed], den: Sequence[m.Timed]) -> str:
    """The ratio of the medians, and (min-max) of each repetition's against its neighbour's."""
    ratio = _x(_median([t.seconds for t in num]) / _median([t.seconds for t in den]))
    if len(num) == 1:
        return ratio
    each = [a.seconds / b.seconds for a, b in zip(num, den, strict=True)]
    return f"{ratio} ({min(each):.2f}-{max(each):.2f})"


STEPS: dict[str, Callable[[Report, Path], None]] = {
    "backfill": bench_backfill,
    "peers": bench_peers,
    "sizes": bench_sizes,
    "open": bench_open_window,
    "latency": bench_latency,
}


# --- the command ---------------------------------------------------------------------------------


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ingester-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, save them to bench/results/."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repetition, SQLite only: a smoke run")  # fmt: skip
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated, of {','.join(BACKENDS)} (default: both; "
                        "--quick: sqlite)")  # fmt: skip
    parser.add_argument("--only", default=None,
                        help=f"comma-separated steps, of {','.join(STEPS)}")  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each backfill")
    parser.add_argument("--postgres-url", default=os.environ.get("INGESTER_BENCH_POSTGRES_URL"),
                        help="server URL; the benchmark creates and drops its own database "
                        "[env: INGESTER_BENCH_POSTGRES_URL; default: the local server's "
                        "socket]")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to save the results")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**asdict(plan), "reps": args.reps})
    backends = (args.backends or ("sqlite" if args.quick else ",".join(BACKENDS))).split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    steps = (args.only or ",".join(STEPS)).split(",")
    if set(steps) - set(STEPS):
        parser.error(f"unknown step(s): {', '.join(sorted(set(steps) - set(STEPS)))}")
    if args.postgres_url:
        m.POSTGRES_URL = args.postgres_url
    report = Report(plan, backends)
    started = time.time()
    with _workdir() as work:
        for step in steps:
            STEPS[step](report, work)
    text = _header(plan, backends, time.time() - started) + "\n" + report.render()
    print(text)
    _save(args.out, text, report, plan)
    return 0


def _header(plan: Plan, backends: Sequence[str], elapsed_s: float) -> str:
    cpu = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"ingester benchmark, {time.strftime('%Y-%m-%d %H:%M')}; {platform.python_version()}, "
        f"{cpu} CPUs, load {load}; backends: {', '.join(backends)}; "
        f"{'quick' if plan == QUICK else 'full'} plan; {elapsed_s / 60:.1f} min\n"
    )


def _save(out: Path, text: str, report: Report, plan: Plan) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.md").write_text(text)
    doc = {"plan": asdict(plan), "backends": report.backends, "raw": report.raw}
    (out / f"{stamp}.json").write_text(json.dumps(doc, indent=1, default=str))
    print(f"saved {out / stamp}.md and .json", file=sys.stderr)
