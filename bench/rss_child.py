"""Run the `ingester` command and report its peak RSS: `python -m bench.rss_child ARGS...`.

The peak is read from VmHWM in /proc/self/status at exit and written, in bytes, to the file
named by BENCH_RSS_FILE. Not `ru_maxrss`: a child started by a big parent (the benchmark
holds 100,000 decoded jobs for its write-only runs) inherits the parent's resident size
until its exec, and `ru_maxrss` counts it (a child running `pass` under a 500 MB parent
reports 500 MB); VmHWM counts only this process's own memory after its exec.
"""

from __future__ import annotations

import atexit
import os
import sys


def _report() -> None:
    path = os.environ.get("BENCH_RSS_FILE")
    if not path:
        return
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                with open(path, "w") as out:
                    out.write(str(kib * 1024))
                return


if __name__ == "__main__":
    atexit.register(_report)
    from ingester.cli import main

    sys.argv = ["ingester", *sys.argv[1:]]
    main()
