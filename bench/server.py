"""The benchmark's provider: the simulator serving a fixed world, in its own process.

Run as `python -m bench.server --jobs N [--open K] [--latency-ms X]`: it builds the world,
prints one JSON line `{"base_url": ..., "jobs": ..., "open": ...}` and serves until its
stdin closes (the parent exits or closes the pipe) or SIGTERM. Its own process keeps the
server's CPU (and GIL) off the process being measured, as a remote provider would be.

The world: `jobs - open` terminal jobs (10% failed) spread over the last 30 days, then `open`
jobs queued for ~30 years, so they stay open and unchanged for the whole benchmark.
`--latency-ms` delays every answer by that much (`Fault.slow` on every request).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ingester.simulator import DAY_S, Fault, Simulator, World

API_KEY = "sk-bench-0123456789abcdef"
FOREVER_S = 1e9  # queued this long: open for the whole run


def build_world(jobs: int, open_jobs: int, seed: int = 1) -> World:
    """`jobs - open_jobs` finished jobs over the last 30 days, then `open_jobs` open ones."""
    world = World(seed=seed, cache_jobs=min(jobs, 200_000))
    now = time.time()
    done = jobs - open_jobs
    world.add_jobs(done, created_at=now - 30 * DAY_S, spacing_s=29 * DAY_S / max(done, 1),
                   queued_s=(0, 0), render_s=(0, 0), fail_rate=0.1)  # fmt: skip
    if open_jobs:
        world.add_jobs(open_jobs, created_at=now - open_jobs - 60, spacing_s=1.0,
                       queued_s=(FOREVER_S, FOREVER_S), render_s=(60, 60))  # fmt: skip
    return world


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a benchmark world until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--open", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    world = build_world(args.jobs, args.open, args.seed)
    sim = Simulator(world, api_key=API_KEY)
    if args.latency_ms > 0:
        sim.faults.push(
            Fault.slow(args.latency_ms / 1000.0), count=1 << 62, path_contains="/videos"
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    with sim:
        print(json.dumps({"base_url": sim.base_url, "jobs": len(world), "open": args.open}),
              flush=True)  # fmt: skip
        stop.wait()
    return 0


@dataclass(frozen=True)
class Served:
    """A running benchmark server: where it is and what it serves."""

    base_url: str
    jobs: int
    open: int
    latency_ms: float


@contextmanager
def serve(jobs: int, open_jobs: int = 0, latency_ms: float = 0.0) -> Iterator[Served]:
    """Start `bench.server` in a subprocess for the duration of the block."""
    cmd = [sys.executable, "-m", "bench.server", "--jobs", str(jobs), "--open", str(open_jobs),
           "--latency-ms", str(latency_ms)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        info = json.loads(line)
        yield Served(info["base_url"], info["jobs"], info["open"], latency_ms)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
