"""One measurement of the benchmark, alone, to profile it: `python -m bench.one KIND`.

KIND is `backfill` (as `ingester backfill`), `write` (write-only: the pages fetched first,
then replayed through `Syncer.backfill` without HTTP), `fetch` (fetch-only) or `sync` (a
steady-state pass on a full mirror). Wrap it in a profiler, e.g.

    py-spy record --gil --format raw -o prof.txt -- python -m bench.one backfill
    python -m bench.spy prof.txt

The server runs in its own process, as in the benchmark, so the profile is the client's.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import measure as m
from .server import serve

KINDS = ("backfill", "write", "fetch", "sync")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one kind of measurement `--reps` times and print each timing."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every request")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="ingester-bench-") as tmp,
        serve(args.jobs, latency_ms=args.latency_ms) as served,
    ):
        pages: dict[str | None, Any] = {}
        if args.kind == "write":
            m.fetch_only(served, keep=pages)
            gc.freeze()
        for _ in range(args.reps):
            with m.database(args.backend, Path(tmp)) as url:
                if args.kind == "backfill":
                    t = m.backfill(served, url)
                elif args.kind == "write":
                    t = m.write_only(served, pages, url)
                elif args.kind == "fetch":
                    t = m.fetch_only(served)
                else:
                    m.backfill(served, url)
                    m.sync_pass(served, url)
                    t = m.sync_pass(served, url)
            print(
                f"{args.kind} {args.backend} {args.jobs:,} jobs: {t.seconds:.2f} s wall, "
                f"{t.cpu_s:.2f} s CPU, {t.requests} requests, {t.written} rows written"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
