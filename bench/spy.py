"""Summarize a py-spy profile by stage of a pass: `python -m bench.spy PROFILE.txt`.

PROFILE.txt is py-spy's raw output (`py-spy record --format raw -o PROFILE.txt ...`; add
`--gil` to count only the thread holding the GIL, which is what bounds a CPU-bound run in one
process). Each sample is put in the first stage whose marker is in its stack.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence

STAGES = (
    ("fetch: HTTP (requests, urllib3, http.client)", "VideosClient._attempt"),
    ("fetch: JSON decode", "VideosClient._decode"),
    ("fetch: other", "VideosClient"),
    ("parse (records.parse_items)", "parse_items"),
    ("read snapshots", ".snapshots"),
    ("write: commit", "do_commit"),
    ("write: insert rows (executemany / COPY)", "_Bulk._insert"),
    ("write: rows built, timestamps encoded, updates", "_Bulk.write"),
    ("write: other statements", "write_pages"),
    ("diff", "Syncer._diff"),
    ("apply: other", "Syncer._apply"),
    ("prefetch machinery", "prefetch.py"),
    ("waiting for the other chain's write", "Syncer._walk"),
    ("run bookkeeping (lease, runs, state)", "Syncer._run"),
    ("other (imports, setup, benchmark)", ""),
)


def summarize(lines: Sequence[str]) -> list[tuple[str, float]]:
    """(stage, share of samples) for the samples in py-spy raw lines, largest first."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        counts[next(name for name, marker in STAGES if marker in stack)] += int(n)
    return [(name, count / total) for name, count in counts.most_common()] if total else []


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of one py-spy raw profile."""
    parser = argparse.ArgumentParser(prog="python -m bench.spy", description=__doc__)
    parser.add_argument("profile")
    args = parser.parse_args(argv)
    with open(args.profile) as raw:
        for name, share in summarize(raw.readlines()):
            print(f"{share * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
