"""Prometheus metrics and the health check, served on an optional loopback listener."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .errors import ConfigError
from .runs import PassResult

log = logging.getLogger(__name__)


class Metrics:
    """The service's metrics, in a registry of its own, plus per-source health facts."""

    def __init__(self, max_age_s: float) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter("ingester_passes", "Passes by outcome.",
                              ["source", "kind", "outcome"], registry=r)  # fmt: skip
        self.jobs = Counter("ingester_jobs_upserted", "Job rows written.",
                            ["source", "op"], registry=r)  # fmt: skip
        self.transitions = Counter("ingester_transitions", "Status transitions recorded.",
                                   ["source"], registry=r)  # fmt: skip
        self.requests = Counter("ingester_http_requests", "HTTP responses by status "
                                "('error' when no response arrived).", ["source", "status"],
                                registry=r)  # fmt: skip
        self.retries = Counter("ingester_http_retries", "HTTP retries.", ["source"], registry=r)
        self.latency = Histogram("ingester_http_request_duration_seconds", "HTTP request "
                                 "latency.", ["source"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                          5, 10, 30))  # fmt: skip
        self.open_jobs = Gauge("ingester_open_jobs", "Jobs not terminal in the mirror.",
                               ["source"], registry=r)  # fmt: skip
        self.last_success = Gauge("ingester_last_success_timestamp_seconds", "Unix time of "
                                  "the last successful pass.", ["source"], registry=r)  # fmt: skip
        self.lease = Gauge("ingester_lease_held", "1 while this process holds the source's "
                           "lease.", ["source"], registry=r)  # fmt: skip
        self.head_only = Gauge("ingester_head_only", "1 while the source's list cannot be "
                               "paged (a gateway ignores after/order/limit); `reason` says why "
                               "in plain words.", ["source", "reason"], registry=r)  # fmt: skip
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._last_ok: dict[str, float | None] = {}
        self._modes: dict[str, str] = {}  # why each source is head-only ("" when paged)

    def add_source(self, name: str, last_success: float | None) -> None:
        """Start tracking a source (with its last success from the database, if any)."""
        with self._lock:
            self._last_ok[name] = last_success
        if last_success is not None:
            self.last_success.labels(name).set(last_success)
        self.lease.labels(name).set(0)
        self._set_mode(name, "")
        self.retries.labels(name)
        self.transitions.labels(name)

    def record_pass(self, source: str, result: PassResult) -> None:
        """Account for one finished pass."""
        c = result.counts
        self.passes.labels(source, result.kind, result.outcome).inc()
        self.jobs.labels(source, "inserted").inc(c.inserted)
        self.jobs.labels(source, "updated").inc(c.updated)
        self.transitions.labels(source).inc(c.transitions)
        self.retries.labels(source).inc(c.retries)
        self._set_mode(source, result.head_only or "")
        if result.outcome == "succeeded":
            now = time.time()
            self.last_success.labels(source).set(now)
            with self._lock:
                self._last_ok[source] = now

    def _set_mode(self, source: str, reason: str) -> None:
        with self._lock:
            before, self._modes[source] = self._modes.get(source), reason
        if before == reason:
            return
        if before is not None:
            self.head_only.remove(source, before)
        self.head_only.labels(source, reason).set(1 if reason else 0)

    def record_failure(self, source: str, kind: str) -> None:
        """A pass that failed before or while it could record itself."""
        self.passes.labels(source, kind, "failed").inc()

    def record_response(self, source: str, status: int | None, elapsed_s: float) -> None:
        """One HTTP attempt (status None when no response arrived)."""
        self.requests.labels(source, str(status) if status is not None else "error").inc()
        self.latency.labels(source).observe(elapsed_s)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, detail): healthy while every source succeeded within max_age_s."""
        now = time.time()
        with self._lock:
            ages = {s: None if t is None else now - t for s, t in self._last_ok.items()}
        ok = all(a is not None and a <= self.max_age_s for a in ages.values())
        return ok, {"healthy": ok, "max_age_s": self.max_age_s, "last_success_age_s": ages}


class MetricsServer:
    """`/metrics` (Prometheus text) and `/healthz` (200 or 503, JSON) on one address."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, _, port = address.rpartition(":")
        try:
            port_n = int(port)
        except ValueError:
            raise ConfigError(f"metrics address {address!r} is not HOST:PORT") from None
        handler = _make_handler(metrics)
        try:
            self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", port_n), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()
        log.info("metrics and health on http://%s:%d/", self.server.server_address[0], self.port)

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def _make_handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path == "/healthz":
                ok, detail = metrics.health()
                body = json.dumps(detail).encode()
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
