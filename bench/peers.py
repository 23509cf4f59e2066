"""The benchmark's peers: the fetch floor, and dlt 1.31 doing the same backfill.

- `fetch_floor`: a plain `requests.Session` loop over the pages `ingester backfill` reads
  (`limit=100&order=asc`, then `after=<last_id>`), each page's JSON decoded, nothing else.
- `dlt_backfill`: dlt's `rest_api` source over the same pages (the JSON-cursor paginator:
  cursor `last_id` sent as `after`; it stops when `has_more` is false, since dlt's
  `JSONResponseCursorPaginator` only stops by itself on a missing or null cursor, which would
  cost one more request), merged on `id` into a fresh database, in a subprocess of its own:
  `python -m bench.peers --base-url URL --destination NAME --url DB_URL --dir DIR`. The child
  times `pipeline.run` alone (not its imports) and prints one JSON line.

dlt is imported only in that child and comes with the optional `bench` extra
(`pip install -e '.[bench]'`); without it the benchmark shows the peer as not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy.engine import make_url

from .measure import ROOT, Timed
from .server import API_KEY, Served

PAGE = {"limit": "100", "order": "asc"}


def fetch_floor(served: Served) -> Timed:
    """Walk the list `asc` with a plain `requests.Session`, decoding each page, nothing else."""
    params = dict(PAGE)
    pages = items = 0
    started, cpu = time.perf_counter(), time.process_time()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        while True:
            resp = session.get(f"{served.base_url}/videos", params=params, timeout=30)
            resp.raise_for_status()
            body = resp.json()
            pages += 1
            items += len(body["data"])
            if not body["has_more"]:
                break
            params["after"] = body["last_id"]
    return Timed(time.perf_counter() - started, pages, items, pages,
                 cpu_s=time.process_time() - cpu)  # fmt: skip


def dlt_installed() -> bool:
    """Whether dlt can be imported (the `bench` extra)."""
    return importlib.util.find_spec("dlt") is not None


# On PostgreSQL dlt's own destination: what a dlt user would pick, loading multi-row INSERT
# files through psycopg2. SQLite has no destination of its own in dlt: `sqlalchemy`.
DLT_DESTINATIONS = {"sqlite": "sqlalchemy", "postgresql": "postgres"}


def dlt_backfill(
    served: Served, backend: str, url: str, workdir: Path
) -> tuple[Timed, dict[str, float]]:
    """dlt's backfill into the empty database `url`, in a subprocess; and its steps' seconds."""
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}  # no network here
    with tempfile.TemporaryDirectory(prefix="dlt-", dir=workdir) as pipelines:
        cmd = [sys.executable, "-m", "bench.peers", "--base-url", served.base_url, "--url", url,
               "--destination", DLT_DESTINATIONS[backend], "--dir", pipelines]  # fmt: skip
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the dlt run exited {done.returncode}: {done.stderr.strip()[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["items"] != served.jobs:
        raise RuntimeError(f"dlt loaded {out['items']} jobs of {served.jobs}")
    timed = Timed(out["seconds"], items=out["items"], written=out["items"], cpu_s=out["cpu_s"])
    return timed, out["steps"]


def _cpu_s() -> float:
    # dlt may hand normalize or load to worker processes: count the waited-for children too.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _run_dlt(base_url: str, destination: str, url: str, pipelines_dir: Path) -> dict[str, Any]:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {
            "base_url": base_url,
            "auth": {"type": "bearer", "token": API_KEY},
            "paginator": {"type": "cursor", "cursor_path": "last_id", "cursor_param": "after",
                          "has_more_path": "has_more"},
        },
        "resources": [{
            "name": "videos",
            "primary_key": "id",
            "write_disposition": "merge",
            "endpoint": {"path": "videos", "params": PAGE, "data_selector": "data"},
        }],
    })  # fmt: skip
    if destination == "postgres":
        # dlt's postgres destination drives psycopg2 itself and needs a host: a socket
        # directory given as `?host=` is the host to libpq, percent-encoded in the URL dlt makes.
        u = make_url(url)
        host = u.host or u.query.get("host") or "localhost"
        host = host if isinstance(host, str) else host[0]
        dest = dlt.destinations.postgres(credentials={
            "database": u.database, "username": u.username, "password": u.password or "",
            "host": quote(host, safe=""), "port": u.port or 5432,
        })  # fmt: skip
    else:
        dest = dlt.destinations.sqlalchemy(credentials=url)
    pipeline = dlt.pipeline(pipeline_name="bench", destination=dest, dataset_name="mirror",
                            pipelines_dir=str(pipelines_dir))  # fmt: skip
    started, cpu = time.perf_counter(), _cpu_s()
    pipeline.run(source)
    seconds, cpu_s = time.perf_counter() - started, _cpu_s() - cpu
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("videos")
        ((items,),) = client.execute_sql(f"SELECT count(*) FROM {table}")
    steps = {
        s.step: (s.finished_at - s.started_at).total_seconds()
        for s in pipeline.last_trace.steps
        if s.step != "run" and s.started_at and s.finished_at
    }
    return {"seconds": seconds, "cpu_s": cpu_s, "items": int(items), "steps": steps}


def main(argv: Sequence[str] | None = None) -> int:
    """The dlt child: one backfill, one JSON line of figures on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--destination", choices=("sqlalchemy", "postgres"), required=True)
    parser.add_argument("--url", required=True, help="the database, empty")
    parser.add_argument("--dir", type=Path, required=True, help="for dlt's pipeline files, empty")
    args = parser.parse_args(argv)
    print(json.dumps(_run_dlt(args.base_url, args.destination, args.url, args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
