"""Helpers of the reliability tests: subprocesses, throwaway database servers, mirror checks.

- `Proc`: an `ingester` subprocess (optionally with a systemd notify socket) logging to a file.
- `ThrowawayPostgres` / `ThrowawayMariaDB`: a database server of our own on a temp dir and a
  free port, that a test may stop and start (as root, the server runs as its system user).
- `check_mirror` / `check_audit`: the mirror equals the simulator's truth field by field;
  the transition log has no duplicate and every chain is consistent.
- `figures`: one JSON line per test with what was tried and what held, appended to
  $INGESTER_RELIABILITY_LOG when set (the README's "Reliability" figures come from there).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingester.models import video_job_transitions, video_jobs

INGESTER = str(Path(sys.executable).with_name("ingester"))


def _pg_bin() -> Path:
    """The newest installed PostgreSQL server binaries (Debian's layout)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    versions = [p for p in found if p.parent.name.isdigit()]
    return max(
        versions, key=lambda p: int(p.parent.name), default=Path("/usr/lib/postgresql/15/bin")
    )


PG_BIN = _pg_bin()


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` every 50 ms until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any INGESTER_/OPENAI_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTER_", "OPENAI_"))}
    env.update(values)
    return env


def figures(test: str, **values: Any) -> None:
    """Record what a test tried and what held (printed; appended to the reliability log)."""
    line = json.dumps({"test": test, **values}, default=str, sort_keys=True)
    print(line)
    path = os.environ.get("INGESTER_RELIABILITY_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# --- subprocesses ------------------------------------------------------------------------------


class Proc:
    """An `ingester` subprocess; stdout and stderr go to one log file."""

    def __init__(
        self, args: Iterable[str], env: dict[str, str], log_path: Path, *, notify: bool = False
    ) -> None:
        self.log_path = log_path
        self.notify: socket.socket | None = None
        self.messages: list[str] = []
        env = dict(env)
        if notify:
            sock_path = log_path.with_suffix(".notify")
            sock_path.unlink(missing_ok=True)
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(str(sock_path))
            self.notify.setblocking(False)
            env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="3000000")
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [INGESTER, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def notified(self) -> list[str]:
        """Every sd_notify message received so far."""
        while self.notify is not None:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (BlockingIOError, TimeoutError):
                break
        return self.messages

    def kill(self) -> int:
        """SIGKILL and reap; the exit status (negative: killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Kill if still running; close the notify socket."""
        if self.proc.poll() is None:
            self.kill()
        if self.notify is not None:
            self.notify.close()
            self.notify = None


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `ingester ARGS` to completion, capturing its output."""
    return subprocess.run(
        [INGESTER, *args], env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


# --- throwaway database servers ----------------------------------------------------------------


def _as_user(user: str, cmd: list[str]) -> list[str]:
    """`cmd` run as `user` when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", user, "--", *cmd] if os.geteuid() == 0 else cmd


def _private_dir(prefix: str, owner: str) -> Path:
    """A fresh temp dir owned by `owner` when we are root (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, owner, owner)
    return path


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own (initdb on a temp dir, a free port, trust auth)."""

    def __init__(self) -> None:
        self.dir = _private_dir("ingester-pg-", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@/postgres?host={self.dir}&port={self.port}"
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                   "postgres", "--no-sync", "-E", "UTF8"])  # fmt: skip

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(_as_user("postgres", cmd), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {out.stdout[-500:]} {out.stderr[-500:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                   "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start"])  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: connections are cut, transactions rolled back)."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def close(self) -> None:
        """Stop if running and remove the cluster."""
        subprocess.run(
            _as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                  "immediate", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


class ThrowawayMariaDB:
    """A MariaDB server of our own (its own datadir, socket and port; root, no password)."""

    def __init__(self) -> None:
        self.dir = _private_dir("ingester-maria-", "mysql")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/mysql"
        self.proc: subprocess.Popen[bytes] | None = None
        out = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=mysql",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {out.stdout[-500:]}{out.stderr[-500:]}")

    def start(self) -> None:
        """Start mariadbd and wait until it accepts connections."""
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", "--user=mysql",
             f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'mysqld.pid'}",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.dir / "server.log").read_text()
                raise RuntimeError(f"mariadbd exited: {log[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                return False
            return True

        wait_for(up, 60, "mariadbd to listen")

    def stop(self) -> None:
        """Stop the server (SIGTERM: a clean shutdown) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.proc = None

    def close(self) -> None:
        """Stop if running and remove the datadir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- invariants --------------------------------------------------------------------------------


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def check_mirror(
    engine: Engine, truth: list[dict[str, Any]], *, source: str | None = None, note: str = ""
) -> None:
    """Every job of `truth` is mirrored with every field equal, and nothing else is."""
    with engine.connect() as conn:
        mirror = {r.id: r for r in conn.execute(sa.select(video_jobs))}
    for job in truth:
        row = mirror.get(job["id"])
        where = f"{job['id']} {note}"
        assert row is not None, f"{where}: not mirrored"
        assert row.raw == job, f"{where}: raw differs"
        assert row.status == job["status"], f"{where}: status"
        assert row.progress == job["progress"], f"{where}: progress"
        assert (row.model, row.size, row.seconds, row.prompt) == (
            job["model"], job["size"], job["seconds"], job["prompt"]
        ), f"{where}: model/size/seconds/prompt"  # fmt: skip
        assert row.remixed_from_video_id == job["remixed_from_video_id"], where
        assert row.created_at == _ts(job["created_at"]), f"{where}: created_at"
        assert row.completed_at == _ts(job["completed_at"]), f"{where}: completed_at"
        assert row.expires_at == _ts(job["expires_at"]), f"{where}: expires_at"
        assert row.error_code == (job["error"] or {}).get("code"), f"{where}: error_code"
        assert row.error_message == (job["error"] or {}).get("message"), f"{where}: error_msg"
        assert row.missing_since is None, f"{where}: marked missing"
        if source is not None:
            assert row.source == source, where
    extra = set(mirror) - {j["id"] for j in truth}
    assert not extra, f"{note}: jobs the provider never listed: {sorted(extra)[:5]}"


def check_audit(engine: Engine, note: str = "", *, repeats_ok: bool = False) -> int:
    """No duplicate transition; every chain starts with a first sighting, links up and ends at
    the row's status; every row has a chain. Returns the number of transitions.

    `repeats_ok`: the provider changed a job back and forth, so one change was observed twice.
    """
    t = video_job_transitions.c
    with engine.connect() as conn:
        dup = conn.execute(
            sa.select(t.video_id, t.from_status, t.to_status, sa.func.count())
            .group_by(t.video_id, t.from_status, t.to_status)
            .having(sa.func.count() > 1)
        ).all()
        status = dict(conn.execute(sa.select(video_jobs.c.id, video_jobs.c.status)).all())
        rows = conn.execute(
            sa.select(t.video_id, t.from_status, t.to_status).order_by(t.video_id, t.id)
        ).all()
    assert repeats_ok or not dup, f"{note}: duplicated transitions {dup[:5]}"
    chains = {vid: list(group) for vid, group in itertools.groupby(rows, key=lambda r: r[0])}
    for vid, chain in chains.items():
        assert chain[0].from_status is None, f"{note}: {vid} starts without a first sighting"
        for prev, nxt in itertools.pairwise(chain):
            assert nxt.from_status == prev.to_status, f"{note}: {vid} chain broken"
        assert vid in status, f"{note}: transitions of {vid}, which is not mirrored"
        assert chain[-1].to_status == status[vid], f"{note}: {vid} chain ends elsewhere"
    assert set(status) == set(chains), f"{note}: rows without a first sighting"
    return len(rows)
