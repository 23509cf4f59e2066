"""Per-item cost of decoding and parsing list pages: `python -m bench.parse_cost [--against REV]`.

Renders N simulated jobs as list bodies (the simulator's World, 100 a page), then times
`records.decode_list` + `records.parse_items` over all of them. `--against REV` also times the
`ingester/records.py` of that git revision (with the stdlib `json.loads` envelope it had),
alternating the two, to compare before and after in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingester import records
from ingester.simulator import World

Parse = Callable[[bytes], int]


def bodies(n: int, page: int = 100) -> list[bytes]:
    """n jobs of a finished world as list bodies, asc order."""
    world = World(clock=lambda: 1_770_000_000.0, seed=1)
    world.add_jobs(n, created_at=1_760_000_000, spacing_s=60)
    out, after = [], None
    while True:
        body = world.list_page(limit=page, order="asc", after=after)
        assert body is not None
        out.append(body)
        doc = json.loads(body)
        if not doc["has_more"]:
            return out
        after = doc["last_id"]


def current(body: bytes) -> int:
    """Records made from one body by this tree's code."""
    return len(records.parse_items(records.decode_list(body).items).records)


def baseline(rev: str) -> Parse:
    """The same, by `ingester/records.py` at `rev` and `json.loads` (its envelope decode)."""
    text = subprocess.run(
        ["git", "show", f"{rev}:ingester/records.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "records_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("records_baseline", path)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)

    def parse(body: bytes) -> int:
        return len(module.parse_items(json.loads(body)["data"]).records)

    return parse


def main(argv: Sequence[str] | None = None) -> None:
    """Print µs per item for each variant, per repetition and the median."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--against", metavar="REV", help="git revision to compare with")
    args = ap.parse_args(argv)
    pages = bodies(args.jobs)
    variants: dict[str, Parse] = {"this tree": current}
    if args.against:
        variants = {f"{args.against}": baseline(args.against), **variants}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, parse in variants.items():
            start = time.perf_counter()
            made = sum(parse(body) for body in pages)
            times[name].append((time.perf_counter() - start) / made * 1e6)
            assert made == args.jobs, (name, made)
    for name, us in times.items():
        runs = ", ".join(f"{t:.2f}" for t in us)
        print(f"{name}: {statistics.median(us):.2f} µs/item (runs: {runs})", file=sys.stdout)


if __name__ == "__main__":
    main()
