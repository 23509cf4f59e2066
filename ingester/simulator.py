"""A fake video provider on loopback: the `GET /videos` job list, faithful and faulty on purpose.

`World` is the truth (jobs, lifecycles computed lazily from an injected clock), `Simulator` a
real HTTP/1.1 server over it (pagination, error bodies, request log) and `Faults` makes it
misbehave (error statuses, resets, slow, truncated or hostile bodies, stalls). Standard
library only; used by `ingester demo`, the tests and bench.

Profiles (`Simulator(profile=...)`), after DESIGN.md section 1a:
- openai: Bearer auth, /v1. azure: `api-key` header, /openai/v1.
- litellm (LiteLLM proxy 1.110.2): Bearer, /v1; needs `custom-llm-provider: openai` (header or
  `custom_llm_provider` query parameter) else 400; ignores limit/order/after (always the 20
  newest, desc); ids wrapped by `litellm_wrap`; by-id answers lack `prompt` and add
  `"usage": null`; `x-litellm-call-id` instead of `x-request-id`.
- litellm-paged (newer LiteLLM): as litellm, but pages properly (a wrapped `after` is
  unwrapped), by-id answers are whole, and `visible` drops jobs the caller does not own from
  `data` while `has_more`/`first_id`/`last_id` stay those of the unfiltered page.
- window: Bearer, /v1; lists only the last 24 h; limit clamped to 1..100.

Semantics worth knowing:

- Failed jobs carry `completed_at` (when they failed), `expires_at` null (nothing to
  download), `progress` frozen where they failed (0..99) and `error` {code, message}.
- `set_status` freezes a job: from then on it is served exactly as set, no lifecycle.
- `delete` leaves a tombstone (O(1)); pages skip it, and the order is compacted when
  tombstones reach 1/16 of it. A deleted id is unknown: `after=` it gets the
  `unknown_after` behaviour (404 by default), GET gets 404.
- With `list_window_s`, the list holds only jobs created within the window; GET by id still
  works, and `after=` an out-of-window job is accepted (asc resumes at the window start).
- Ids are a keyed bijection of the insertion number (random-looking, decodable), so jobs
  are parallel arrays and 1M of them take ~40 MB. Terminal jobs are rendered from a
  per-batch bytes template (~2 us) and their bytes cached, up to `cache_jobs` of them.

Throughput, `python -m ingester.simulator --bench` (100k terminal jobs walked asc, limit=100,
1,000 pages; a shared 2-core VM, Python 3.11; wall-clock rates swing with the other load,
CPU per page does not):
- server alone: ~180 us CPU a page with cached bytes (one core: ~5,500 pages/s), ~370-490
  us uncached (`cache_jobs=0`: ~2,000-2,700 pages/s); measured in the server process while
  2 client processes walk.
- 1 thread, in-process, http.client keep-alive: 1,100 pages/s cold, 1,400-1,950 warm. The
  client is the bottleneck: of 500-700 us CPU a page, the server is ~180 (json.loads of a
  30 KB page alone is ~190).
- 1 thread, in-process, requests.Session: 460-670 pages/s (requests' own ~1 ms a call).
- World().add_jobs(1_000_000, status="completed"): 1.1-1.4 s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import itertools
import json
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Literal
from urllib.parse import parse_qsl, unquote

Clock = Callable[[], float]
Order = Literal["asc", "desc"]
FaultKind = Literal["status", "reset", "slow", "truncated", "body", "stall"]
UnknownAfter = Literal["404", "400", "restart"]
Profile = Literal["openai", "azure", "litellm", "litellm-paged", "window"]
PROFILES: tuple[Profile, ...] = ("openai", "azure", "litellm", "litellm-paged", "window")
_LIFECYCLE = ("queued", "in_progress", "completed", "failed")

DAY_S = 86_400
_REASONS = {s.value: s.phrase for s in HTTPStatus}
ERRORS = (
    ("moderation_blocked", "Your request was blocked by our moderation system."),
    ("internal_error", "The video could not be generated due to an internal error."),
    ("invalid_prompt", "The prompt could not be used to generate a video."),
)
_ERROR_JSON = [b"null"] + [json.dumps({"code": c, "message": m}).encode() for c, m in ERRORS]

# Ids are a keyed bijection of the insertion number: random-looking, never stored, and
# decodable, so `after=` finds its job in O(1) without a 1M-entry dict.
_M96 = (1 << 96) - 1
_A = 0x9E3779B97F4A7C15F39CC061
_B = 0xC2B2AE3D27D4EB4F165667B3
_A_INV = pow(_A, -1, 1 << 96)
_B_INV = pow(_B, -1, 1 << 96)


def _js(value: object) -> bytes:
    return json.dumps(value).encode()


class FakeClock:
    """A settable clock for `World`: call it for the time; `advance()` or `set()` it."""

    def __init__(self, t: float = 1_760_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        """Move the time forward by s seconds."""
        self.t += s

    def set(self, t: float) -> None:
        """Set the time."""
        self.t = t


class World:
    """The provider's truth: jobs in list (created_at) order, lifecycles from the clock."""

    def __init__(
        self,
        clock: Clock = time.time,
        seed: int = 0,
        list_window_s: float | None = None,
        cache_jobs: int = 100_000,
        status_names: dict[str, str] | None = None,
    ) -> None:
        """`status_names` renames lifecycle statuses as served, e.g. {"in_progress": "running"}."""
        self.clock = clock
        self.list_window_s = list_window_s
        names = status_names or {}
        # JSON-escaped without quotes: spliced into the template's "status":"%b"
        self._status_bytes = [json.dumps(names.get(s, s))[1:-1].encode() for s in _LIFECYCLE]
        self._cache: dict[int, bytes] = {}  # bytes of terminal jobs, up to cache_jobs of them
        self._cache_jobs = cache_jobs
        self._last_now = 0.0
        self._rng = random.Random(seed)
        self._key = random.Random(f"ids-{seed}").getrandbits(96)
        self._lock = threading.Lock()
        # Per job, indexed by insertion number ("seq"): parallel arrays, not dicts.
        self._created = array("d")
        self._queued_s = array("f")
        self._render_s = array("f")
        self._outcome = bytearray()  # 0 completed, k > 0: failed with ERRORS[k - 1]
        self._fail_progress = bytearray()
        self._batch = array("i")  # template index; -1 for add_raw objects
        self._alive = bytearray()
        self._templates: list[bytes] = []
        self._frozen: dict[int, bytes] = {}  # add_raw / set_status objects, served verbatim
        self._raw_ids: dict[str, int] = {}  # string ids of raw objects (reachable over HTTP)
        self._raw_keys: dict[str, int] = {}  # every raw key, incl. internal ones (API only)
        self._raw_id_json: dict[int, bytes] = {}
        self._order = array("q")  # seqs in asc order; may hold tombstones
        self._pos: array[int] | None = None  # seq -> index in _order; None while identity
        self._dead = 0  # tombstones in _order

    # --- building the world ------------------------------------------------------------------

    def add_jobs(
        self,
        n: int,
        *,
        created_at: float | None = None,
        spacing_s: float = 1.0,
        model: str | None = "sora-2",
        size: str | None = "1280x720",
        seconds: str | None = "8",
        queued_s: tuple[float, float] = (1.0, 5.0),
        render_s: tuple[float, float] = (20.0, 90.0),
        fail_rate: float = 0.1,
        status: Literal["completed", "failed"] | None = None,
        prompt: str | None = "A calico cat playing a grand piano on a small stage",
        remix_of: str | None = None,
    ) -> list[str]:
        """Append n jobs created from `created_at` (default now), `spacing_s` apart.

        Each is queued for a draw from `queued_s`, renders for one from `render_s`, then
        completes or fails (`fail_rate`). `status` makes them terminal at creation.
        """
        if n <= 0:
            return []
        with self._lock:
            t0 = self.clock() if created_at is None else created_at
            rng = self._rng
            seq0 = len(self._created)
            self._templates.append(_template(model, prompt, size, seconds, remix_of))
            self._created.extend(t0 + i * spacing_s for i in range(n))
            if status is None:
                self._queued_s.extend(_draws(rng, queued_s, n))
                self._render_s.extend(_draws(rng, render_s, n))
                fails = [rng.random() < fail_rate for _ in range(n)]
            else:
                self._queued_s.extend(array("f", [0.0]) * n)
                self._render_s.extend(array("f", [0.0]) * n)
                fails = [status == "failed"] * n
            if any(fails):
                self._outcome.extend(rng.randrange(len(ERRORS)) + 1 if f else 0 for f in fails)
                self._fail_progress.extend(rng.randrange(100) if f else 0 for f in fails)
            else:
                self._outcome.extend(bytes(n))
                self._fail_progress.extend(bytes(n))
            self._batch.extend(array("i", [len(self._templates) - 1]) * n)
            self._alive.extend(b"\x01" * n)
            self._place(range(seq0, seq0 + n), in_order=spacing_s >= 0)
            return [f"video_{self._encode(s):024x}" for s in range(seq0, seq0 + n)]

    def add_raw(self, obj: object, *, created_at: float) -> str:
        """Insert any object as-is into the list; returns its id, or an internal key if none."""
        with self._lock:
            seq = len(self._created)
            for arr in (self._created, self._queued_s, self._render_s):
                arr.append(created_at if arr is self._created else 0.0)
            self._outcome.append(0)
            self._fail_progress.append(0)
            self._batch.append(-1)
            self._alive.append(1)
            self._frozen[seq] = json.dumps(obj).encode()
            raw_id = obj.get("id") if isinstance(obj, dict) else None
            self._raw_id_json[seq] = _js(raw_id)
            key = raw_id if isinstance(raw_id, str) else f"raw#{seq}"
            if isinstance(raw_id, str):
                self._raw_ids[raw_id] = seq
            self._raw_keys[key] = seq
            self._place(range(seq, seq + 1), in_order=True)
            return key

    def delete(self, video_id: str) -> bool:
        """Delete a job (a tombstone, compacted lazily); False if there was none."""
        with self._lock:
            seq = self._find(video_id, internal=True)
            if seq is None:
                return False
            self._alive[seq] = 0
            self._dead += 1
            self._frozen.pop(seq, None)
            self._cache.pop(seq, None)
            return True

    def set_status(self, video_id: str, status: str, **fields: Any) -> None:
        """Force a job's status and any fields (anything goes); the job is frozen as set."""
        with self._lock:
            seq = self._find(video_id, internal=True)
            if seq is None:
                raise KeyError(video_id)
            obj = json.loads(self._render([seq], self._now())[0])
            if not isinstance(obj, dict):
                raise TypeError(f"{video_id} is not an object")
            obj["status"] = status
            obj.update(fields)
            self._frozen[seq] = json.dumps(obj).encode()
            self._cache.pop(seq, None)

    # --- reading the world -------------------------------------------------------------------

    def truth(self) -> list[Any]:
        """Every live job as the API would serve it now, in asc order (window ignored)."""
        with self._lock:
            now = self._now()
            alive = self._alive
            return [json.loads(b) for b in self._render([s for s in self._order if alive[s]], now)]

    def get(self, video_id: str) -> Any:
        """The job as `GET /videos/{id}` would serve it now, or None."""
        body = self.get_bytes(video_id)
        return None if body is None else json.loads(body)

    def get_bytes(self, video_id: str, *, internal: bool = True) -> bytes | None:
        """The serialized job, or None (`internal=False`: only ids the API can name)."""
        with self._lock:
            seq = self._find(video_id, internal=internal)
            return None if seq is None else self._render([seq], self._now())[0]

    def __len__(self) -> int:
        return len(self._order) - self._dead

    def list_page(
        self, *, limit: int, order: Order, after: str | None, window_s: float | None = None
    ) -> bytes | None:
        """One list response body; None if `after` names no live job.

        `window_s` overrides the world's `list_window_s` for this call (a windowed gateway).
        """
        with self._lock:
            now = self._now()
            if self._dead and self._dead * 16 >= len(self._order):
                self._compact()
            seqs, created, alive = self._order, self._created, self._alive
            lo = 0
            window = self.list_window_s if window_s is None else window_s
            if window is not None:
                lo = bisect_left(seqs, now - window, key=created.__getitem__)
            if after is None:
                start = lo if order == "asc" else len(seqs) - 1
            else:
                seq = self._find(after, internal=False)
                if seq is None:
                    return None
                p = seq if self._pos is None else self._pos[seq]
                start = max(p + 1, lo) if order == "asc" else p - 1
            walk = range(start, len(seqs)) if order == "asc" else range(start, lo - 1, -1)
            picked: list[int] = []
            has_more = False
            for i in walk:
                s = seqs[i]
                if alive[s]:
                    if len(picked) == limit:
                        has_more = True
                        break
                    picked.append(s)
            data = b",".join(self._render(picked, now))
            first = self._id_json(picked[0]) if picked else b"null"
            last = self._id_json(picked[-1]) if picked else b"null"
            more = b"true" if has_more else b"false"
            return b'{"object":"list","data":[%b],"first_id":%b,"last_id":%b,"has_more":%b}' % (
                data,
                first,
                last,
                more,
            )

    # --- internals (callers hold the lock) ---------------------------------------------------

    def _now(self) -> float:
        now = self.clock()
        if now < self._last_now:
            self._cache.clear()  # the clock went back: terminal jobs may be open again
        self._last_now = now
        return now

    def _encode(self, seq: int) -> int:
        x = (seq * _A + self._key) & _M96
        x ^= x >> 48
        x = (x * _B) & _M96
        return x ^ (x >> 48)

    def _decode(self, x: int) -> int:
        x ^= x >> 48
        x = (x * _B_INV) & _M96
        x ^= x >> 48
        return ((x - self._key) * _A_INV) & _M96

    def _find(self, video_id: str, *, internal: bool) -> int | None:
        """The live seq named by an id (raw ids first, then generated ids)."""
        seq = (self._raw_keys if internal else self._raw_ids).get(video_id)
        if seq is None and len(video_id) == 30 and video_id.startswith("video_"):
            try:
                x = int(video_id[6:], 16)
            except ValueError:
                return None
            if video_id[6:] != f"{x:024x}":
                return None
            seq = self._decode(x)
            if seq >= len(self._batch) or self._batch[seq] < 0:
                return None
        return seq if seq is not None and self._alive[seq] else None

    def _id_json(self, seq: int) -> bytes:
        if self._batch[seq] < 0:
            return self._raw_id_json[seq]
        return b'"video_%024x"' % self._encode(seq)

    def _render(self, seqs: Sequence[int], now: float) -> list[bytes]:
        """Serialized jobs as of `now` (one loop with hoisted lookups: this is the hot path)."""
        cache, frozen, templates, batch = self._cache, self._frozen, self._templates, self._batch
        created, queued, rendering = self._created, self._queued_s, self._render_s
        outcomes, fail_progress, key = self._outcome, self._fail_progress, self._key
        room = self._cache_jobs - len(cache)
        queued_b, running_b, completed_b, failed_b = self._status_bytes
        out: list[bytes] = []
        for seq in seqs:
            body = cache.get(seq) or frozen.get(seq)
            if body is None:
                c = created[seq]
                started = c + queued[seq]
                ended = started + rendering[seq]
                outcome = outcomes[seq]
                target = fail_progress[seq] if outcome else 100
                done = expires = error = b"null"
                if now < started:
                    status, progress = queued_b, 0
                elif now < ended:
                    status = running_b
                    progress = int(target * (now - started) / (ended - started))
                else:
                    status, progress = (failed_b if outcome else completed_b), target
                    done = b"%d" % int(ended)
                    if outcome:
                        error = _ERROR_JSON[outcome]
                    else:
                        expires = b"%d" % (int(ended) + DAY_S)
                x = (seq * _A + key) & _M96  # _encode, inlined
                x ^= x >> 48
                x = (x * _B) & _M96
                args = (x ^ (x >> 48), status, progress, int(c), done, expires, error)
                body = templates[batch[seq]] % args
                if done != b"null" and room > 0:
                    cache[seq] = body
                    room -= 1
            out.append(body)
        return out

    def _place(self, new: range, *, in_order: bool) -> None:
        """Put new seqs into the asc order: append if they come last, else merge."""
        order, created = self._order, self._created
        if in_order and (not order or created[order[-1]] <= created[new[0]]):
            if self._pos is not None:
                self._pos.extend(range(len(order), len(order) + len(new)))
            order.extend(new)
            return
        merged = sorted(itertools.chain(order, new), key=created.__getitem__)  # stable: ties
        self._order = array("q", merged)
        self._reindex()

    def _compact(self) -> None:
        alive = self._alive
        self._order = array("q", [s for s in self._order if alive[s]])
        self._dead = 0
        self._reindex()

    def _reindex(self) -> None:
        pos = array("q", [-1]) * len(self._created)
        for i, s in enumerate(self._order):
            pos[s] = i
        self._pos = pos


def _draws(rng: random.Random, bounds: tuple[float, float], n: int) -> array[float]:
    lo, hi = bounds
    if lo == hi:
        return array("f", [lo]) * n
    return array("f", [rng.uniform(lo, hi) for _ in range(n)])


def _template(
    model: str | None, prompt: str | None, size: str | None, seconds: str | None, remix: str | None
) -> bytes:
    """A bytes %-template of a video object: fixed fields baked in, the moving ones left open."""

    def lit(v: object) -> bytes:
        return _js(v).replace(b"%", b"%%")

    return (
        b'{"id":"video_%024x","object":"video","model":' + lit(model) + b',"status":"%b",'
        b'"progress":%d,"created_at":%d,"completed_at":%b,"expires_at":%b,"prompt":'
        + lit(prompt)
        + b',"size":'
        + lit(size)
        + b',"seconds":'
        + lit(seconds)
        + b',"remixed_from_video_id":'
        + lit(remix)
        + b',"error":%b}'
    )


# --- faults ----------------------------------------------------------------------------------


def _error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    return _js({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _status_error(status: int) -> bytes:
    """The provider's error body for a bare status."""
    if status == 429:
        return _error_body("Rate limit reached for requests.", "requests", "rate_limit_exceeded")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return _error_body(f"{_REASONS.get(status, 'Error')}.", kind)


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one request; build it with the class methods."""

    kind: FaultKind
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay_s: float = 0.0
    content_type: str = "application/json"

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        should_retry: bool | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fault:
        """An error status with an error JSON body; `retry_after` is seconds or an HTTP date."""
        h = dict(headers or {})
        if retry_after is not None:
            ra = retry_after
            h["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
        if retry_after_ms is not None:
            h["retry-after-ms"] = str(retry_after_ms)
        if should_retry is not None:
            h["x-should-retry"] = "true" if should_retry else "false"
        return cls("status", status=status, headers=h, body=body)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1, **kw: Any) -> Fault:
        """429 with a Retry-After header."""
        return cls.error(429, retry_after=retry_after, **kw)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Fault:
        """500 (or another 5xx)."""
        return cls.error(status, **kw)

    @classmethod
    def bad_gateway(cls, **kw: Any) -> Fault:
        """502."""
        return cls.error(502, **kw)

    @classmethod
    def unavailable(cls, **kw: Any) -> Fault:
        """503."""
        return cls.error(503, **kw)

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection without a response (an RST where the OS allows)."""
        return cls("reset")

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Answer normally after `delay_s` (cut short when the server stops)."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def truncated(cls) -> Fault:
        """Send the full Content-Length, half the body, then close."""
        return cls("truncated")

    @classmethod
    def raw(cls, body: bytes, status: int = 200, content_type: str = "application/json") -> Fault:
        """Serve these bytes as the body (non-JSON, enormous, hostile)."""
        return cls("body", status=status, body=body, content_type=content_type)

    @classmethod
    def stall(cls) -> Fault:
        """Read the request and never answer (until the server stops)."""
        return cls("stall")


_DEFAULT_FAULTS: dict[str, Fault] = {
    "status": Fault.server_error(),
    "reset": Fault.reset(),
    "slow": Fault.slow(0.05),
    "truncated": Fault.truncated(),
    "body": Fault.raw(b"<html><body>502 Bad Gateway</body></html>", 502, "text/html"),
    "stall": Fault.stall(),
}


@dataclass
class _Scripted:
    fault: Fault
    remaining: int
    path_contains: str | None


class Faults:
    """Scripted faults (FIFO, for the next matching requests) and a seeded random fault rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Scripted] = []
        self._rate = 0.0
        self._kinds: list[Fault] = []
        self._rng = random.Random(0)
        self._random_path: str | None = None
        self.injected = 0

    def push(self, fault: Fault, count: int = 1, path_contains: str | None = None) -> None:
        """Apply `fault` to the next `count` requests whose target (path?query) contains this."""
        with self._lock:
            self._queue.append(_Scripted(fault, count, path_contains))

    def random(
        self,
        rate: float,
        kinds: Sequence[Fault | FaultKind] = ("status", "reset", "truncated"),
        seed: int = 1,
        path_contains: str | None = None,
    ) -> None:
        """Fail a `rate` share of requests (not taken by a scripted fault); 0 turns it off."""
        with self._lock:
            self._rate = rate
            self._kinds = [_DEFAULT_FAULTS[k] if isinstance(k, str) else k for k in kinds]
            self._rng = random.Random(seed)
            self._random_path = path_contains

    def clear(self) -> None:
        """Drop scripted faults and turn the random rate off."""
        with self._lock:
            self._queue.clear()
            self._rate = 0.0

    @property
    def pending(self) -> int:
        """Scripted faults not yet applied."""
        with self._lock:
            return sum(s.remaining for s in self._queue)

    def take(self, target: str) -> Fault | None:
        """The fault for a request to `target`, if any (consumed)."""
        with self._lock:
            for i, s in enumerate(self._queue):
                if s.path_contains is None or s.path_contains in target:
                    s.remaining -= 1
                    if s.remaining <= 0:
                        del self._queue[i]
                    self.injected += 1
                    return s.fault
            hit = self._rate > 0 and (self._random_path or "") in target
            if hit and self._rng.random() < self._rate:
                self.injected += 1
                return self._rng.choice(self._kinds)
            return None


# --- LiteLLM ids ----------------------------------------------------------------------------


def litellm_wrap(raw_id: str, model_id: str) -> str:
    """The id LiteLLM shows for an upstream video id (standard base64: holds + / =)."""
    text = f"litellm:custom_llm_provider:openai;model_id:{model_id};video_id:{raw_id}"
    return "video_" + base64.b64encode(text.encode()).decode()


def litellm_unwrap(wrapped: str) -> str | None:
    """The upstream id inside a LiteLLM-wrapped id, or None if it is not one."""
    if not wrapped.startswith("video_"):
        return None
    try:
        text = base64.b64decode(wrapped[6:], validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    head, sep, raw = text.partition(";video_id:")
    return raw if sep and raw and head.startswith("litellm:") else None


def litellm_model_id(job: dict[str, Any]) -> str:
    """The model_id LiteLLM puts into the wrapped id of a listed job (a guess: its model)."""
    model = job.get("model")
    return model if isinstance(model, str) else ""


def _item_id(item: object) -> Any:
    return item.get("id") if isinstance(item, dict) else None


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it (no secret header values)."""

    t: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, str]
    status: int | None  # None: no response was sent (reset, stall, stopped)
    request_id: str | None  # x-request-id sent (x-litellm-call-id under the litellm profiles)
    auth: str  # ok | missing | wrong | off
    headers: dict[str, str]  # non-secret headers of interest
    fault: str | None


_LOGGED_HEADERS = ("openai-organization", "openai-project", "user-agent", "x-stainless-retry-count")
_MAX_LINE = 65_536


class Simulator:
    """A threaded HTTP/1.1 server on loopback serving a `World` like the provider."""

    def __init__(
        self,
        world: World,
        *,
        profile: Profile = "openai",
        api_key: str | None = "sk-sim-test",
        host: str = "127.0.0.1",
        port: int = 0,
        default_limit: int = 20,
        default_order: Order = "desc",
        clamp_limit: bool = False,
        unknown_after: UnknownAfter = "404",
        gone: int | None = None,
        rate_limit: int | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        """`visible(raw_id)` False drops the job from litellm list pages (not owned by the key)."""
        self.world = world
        self.profile = profile
        self.api_key = api_key
        self.default_limit = default_limit
        self.default_order: Order = default_order
        self.clamp_limit = clamp_limit or profile == "window"
        self.window_s: float | None = DAY_S if profile == "window" else None
        self.visible = visible
        self._litellm = profile in ("litellm", "litellm-paged")
        self._rid_header = "x-litellm-call-id" if self._litellm else "x-request-id"
        self.unknown_after: UnknownAfter = unknown_after
        self.gone = gone
        self.rate_limit = rate_limit  # requests per 60 s window; headers + 429 when set
        self.faults = Faults()
        self._address = (host, port)
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = f"{random.getrandbits(32):08x}"
        self._window = (0.0, 0)  # rate-limit window start (monotonic), requests in it

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread."""
        self._stopping.clear()
        self._server = _Server(self._address, self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, ending idle keep-alive connections, stalls and delays at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (still known after `stop()`)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def prefix(self) -> str:
        """The path prefix of the API: /openai/v1 (azure) or /v1 (every other profile)."""
        return "/openai/v1" if self.profile == "azure" else "/v1"

    @property
    def base_url(self) -> str:
        """The API base URL (what a client sets as base_url)."""
        return f"http://{self._address[0]}:{self.port}{self.prefix}"

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log."""
        with self._log_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        """Requests seen since the last `reset_log()`."""
        with self._log_lock:
            return len(self._log)

    def reset_log(self) -> None:
        """Empty the request log."""
        with self._log_lock:
            self._log.clear()

    # --- one request ---------------------------------------------------------------------------

    def _serve_one(self, rfile: BinaryIO, sock: socket.socket) -> bool:
        """Read and answer one request; False when the connection must close."""
        try:
            line = rfile.readline(_MAX_LINE)
            if not line or self._stopping.is_set():
                return False
            parts = line.split()
            headers: dict[str, str] = {}
            for _ in range(100):
                h = rfile.readline(_MAX_LINE)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                sock.sendall(self._head(400, self._new_rid(), "text/plain", 0, {}, keep=False))
                return False
            length = int(headers.get("content-length", "0"))
            if length:
                rfile.read(max(0, length))  # a GET has no body; drain one anyway
            connection = headers.get("connection", "").lower()
            keep = connection != "close" and (parts[2] == b"HTTP/1.1" or connection == "keep-alive")
            return self._respond(sock, parts[0].decode(), parts[1].decode("latin-1"), headers, keep)
        except (OSError, ValueError):
            return False

    def _respond(
        self, sock: socket.socket, method: str, target: str, headers: dict[str, str], keep: bool
    ) -> bool:
        path, _, qs = target.partition("?")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        fault = self.faults.take(target)
        kind = None if fault is None else fault.kind
        auth = self._auth(headers)
        seen = {k: headers[k] for k in _LOGGED_HEADERS if k in headers}

        def log(status: int | None, rid: str | None) -> None:
            rec = RequestRecord(
                time.monotonic(), method, path, query, status, rid, auth, seen, kind
            )
            with self._log_lock:
                self._log.append(rec)

        if fault is not None and kind in ("reset", "stall"):
            log(None, None)
            if kind == "stall":
                self._stopping.wait()
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # the real close (an RST) happens once the handler drops its file
            return False
        if fault is not None and kind == "slow" and self._stopping.wait(fault.delay_s):
            log(None, None)
            return False
        rid = self._new_rid()
        ctype = "application/json"
        if fault is not None and kind in ("status", "body"):
            status, extra = fault.status, fault.headers
            body = fault.body if fault.body is not None else _status_error(status)
            ctype = fault.content_type
        else:
            status, extra, body = self._route(method, path, query, auth, headers)
        log(status, rid)
        head = self._head(status, rid, ctype, len(body), extra, keep=keep)
        if kind == "truncated":
            sock.sendall(head + body[: len(body) // 2])
            return False
        sock.sendall(head + body)
        return keep

    def _new_rid(self) -> str:
        if self._litellm:
            return str(uuid.uuid4())
        return f"req_{self._id_prefix}{next(self._ids):012x}"

    def _auth(self, headers: dict[str, str]) -> str:
        """ok | missing | wrong | off (no key configured)."""
        if self.api_key is None:
            return "off"
        azure = self.profile == "azure"
        given = headers.get("api-key" if azure else "authorization")
        if given is None:
            return "missing"
        if not azure:
            scheme, _, token = given.partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        ok = hmac.compare_digest(given.encode(), self.api_key.encode())
        return "ok" if ok else "wrong"

    def _route(
        self, method: str, path: str, query: dict[str, str], auth: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if self.gone is not None:
            return (
                self.gone,
                {},
                _error_body("The Videos API has been shut down.", "invalid_request_error", "gone"),
            )
        if auth in ("missing", "wrong"):
            return (
                401,
                {},
                _error_body(
                    "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                ),
            )
        extra, retry_s = self._rate_check()
        if retry_s is not None:
            return 429, {**extra, "Retry-After": str(retry_s)}, _status_error(429)
        provider = headers.get("custom-llm-provider", query.get("custom_llm_provider"))
        if self._litellm and provider != "openai":
            msg = "LLM Provider NOT provided"
            return 400, extra, _error_body(msg, "invalid_request_error", "400")
        base = self.prefix + "/videos"
        rest = path[len(base) :] if path.startswith(base) else None
        if rest in ("", "/") and method == "GET":
            return self._list(query, extra)
        if rest and rest.startswith("/") and "/" not in rest[1:] and method in ("GET", "DELETE"):
            vid = unquote(rest[1:])
            raw = litellm_unwrap(vid) if self._litellm else None
            if method == "DELETE":
                if self.world.get_bytes(raw or vid, internal=False) and self.world.delete(
                    raw or vid
                ):
                    return 200, extra, _js({"id": vid, "object": "video.deleted", "deleted": True})
            else:
                body = self.world.get_bytes(raw or vid, internal=False)
                if body is not None:
                    return 200, extra, self._litellm_job(body, vid, raw) if self._litellm else body
            msg = f"Video with id '{vid}' not found."
            return 404, extra, _error_body(msg, "invalid_request_error", "not_found", "video_id")
        msg = f"Invalid URL ({method} {path})"
        return 404, extra, _error_body(msg, "invalid_request_error")

    def _list(
        self, query: dict[str, str], extra: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if self.profile == "litellm":
            query = {}  # it forwards none of limit, order, after
        elif self._litellm and "after" in query:
            query = {**query, "after": litellm_unwrap(query["after"]) or query["after"]}
        raw_limit = query.get("limit")
        try:
            limit = self.default_limit if raw_limit is None else int(raw_limit)
        except ValueError:
            return 400, extra, _invalid("limit", "Invalid 'limit': expected an integer.")
        if self.clamp_limit:
            limit = min(100, max(1, limit))
        elif not 1 <= limit <= 100:
            return 400, extra, _invalid("limit", "Invalid 'limit': must be between 1 and 100.")
        raw_order = query.get("order", self.default_order)
        if raw_order not in ("asc", "desc"):
            return 400, extra, _invalid("order", "Invalid 'order': expected 'asc' or 'desc'.")
        order: Order = "asc" if raw_order == "asc" else "desc"
        after = query.get("after")
        window_s = self.window_s
        body = self.world.list_page(limit=limit, order=order, after=after, window_s=window_s)
        if body is None and self.unknown_after == "restart":
            body = self.world.list_page(limit=limit, order=order, after=None, window_s=window_s)
        if body is None:
            status = 404 if self.unknown_after == "404" else 400
            code = "not_found" if status == 404 else "invalid_value"
            msg = f"Video with id '{after}' not found."
            return status, extra, _error_body(msg, "invalid_request_error", code, "after")
        return 200, extra, self._litellm_page(body) if self._litellm else body

    def _litellm_page(self, body: bytes) -> bytes:
        """A list page as LiteLLM passes it on: ids wrapped, jobs of other owners dropped."""
        page = json.loads(body)
        data = page["data"]
        visible = self.visible
        keep = [
            visible is None or not isinstance(i := _item_id(j), str) or visible(i) for j in data
        ]
        for job in data:
            if isinstance(_item_id(job), str):
                job["id"] = litellm_wrap(job["id"], litellm_model_id(job))
        if data:  # the cursors stay those of the unfiltered page
            page["first_id"], page["last_id"] = _item_id(data[0]), _item_id(data[-1])
        page["data"] = [job for job, k in zip(data, keep, strict=True) if k]
        return _js(page)

    def _litellm_job(self, body: bytes, asked: str, raw: str | None) -> bytes:
        """A by-id answer as LiteLLM passes it on: the id as asked (a raw one wrapped)."""
        job = json.loads(body)
        if not isinstance(job, dict):
            return body
        paged = self.profile == "litellm-paged"
        if raw is None:
            asked = litellm_wrap(asked, litellm_model_id(job) if paged else "")
        job["id"] = asked
        if not paged:
            job.pop("prompt", None)
            job["usage"] = None
        return _js(job)

    def _rate_check(self) -> tuple[dict[str, str], int | None]:
        """Rate-limit headers for this request, and Retry-After seconds if it is over."""
        if self.rate_limit is None:
            return {}, None
        now = time.monotonic()
        with self._log_lock:
            start, used = self._window
            if now - start >= 60.0:
                start, used = now, 0
            self._window = (start, used + 1)
        reset_s = max(0.0, start + 60.0 - now)
        headers = {
            "x-ratelimit-limit-requests": str(self.rate_limit),
            "x-ratelimit-remaining-requests": str(max(0, self.rate_limit - used - 1)),
            "x-ratelimit-reset-requests": f"{int(reset_s // 60)}m{int(reset_s % 60)}s",
        }
        return headers, (int(reset_s) + 1 if used >= self.rate_limit else None)

    def _head(
        self,
        status: int,
        rid: str | None,
        ctype: str,
        length: int,
        extra: dict[str, str],
        *,
        keep: bool,
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {length}",
        ]
        if rid is not None:
            lines.append(f"{self._rid_header}: {rid}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        if not keep:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _invalid(param: str, message: str) -> bytes:
    return _error_body(message, "invalid_request_error", "invalid_value", param)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        sim = self.server.sim
        while sim._serve_one(self.rfile, self.connection):  # type: ignore[arg-type]
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read."""
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --- standalone ------------------------------------------------------------------------------


def _demo_world(jobs: int, seed: int) -> World:
    """Mostly finished jobs over the last 3 days, the newest tenth still moving."""
    world = World(seed=seed)
    now = time.time()
    old = jobs - jobs // 10
    world.add_jobs(old, created_at=now - 3 * DAY_S, spacing_s=3 * DAY_S / max(old, 1),
                   queued_s=(0, 0), render_s=(0, 0))  # fmt: skip
    world.add_jobs(jobs // 10, created_at=now - 30, spacing_s=1.0, render_s=(30, 120))
    return world


def _getter(base_url: str, key: str, *, use_requests: bool) -> Callable[[str], bytes]:
    """GET `{base_url}/videos?{query}` over one keep-alive connection, returning the body."""
    from urllib.parse import urlsplit

    headers = {"Authorization": f"Bearer {key}"}
    if use_requests:
        import requests

        session = requests.Session()
        return lambda q: session.get(f"{base_url}/videos?{q}", headers=headers, timeout=10).content
    import http.client

    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)

    def get(q: str) -> bytes:
        conn.request("GET", f"{url.path}/videos?{q}", headers=headers)
        return conn.getresponse().read()

    return get


def _walk(base_url: str, key: str, use_requests: bool = False) -> int:
    """Page the whole list asc with limit=100, decoding each page; pages seen."""
    get = _getter(base_url, key, use_requests=use_requests)
    after, pages = "", 0
    while True:
        page = json.loads(get(f"limit=100&order=asc{after}"))
        pages += 1
        if not page["has_more"]:
            return pages
        after = f"&after={page['last_id']}"


def _bench(jobs: int = 100_000) -> int:
    """Print throughput of walking `jobs` terminal jobs asc, 100 a page, several ways."""
    import multiprocessing

    t = time.perf_counter()
    World().add_jobs(1_000_000, created_at=time.time() - 30 * DAY_S, status="completed")
    print(f"add_jobs(1_000_000, status='completed'): {time.perf_counter() - t:.2f} s")

    def timed(label: str, walk: Callable[[], int], pages: int = 1) -> None:
        t, cpu = time.perf_counter(), time.process_time()
        pages *= walk()
        rate = pages / (time.perf_counter() - t)
        cpu_us = (time.process_time() - cpu) / pages * 1e6
        print(f"{label}: {pages} pages, {rate:,.0f} pages/s, {cpu_us:.0f} us CPU here a page")

    def two_processes(sim: Simulator) -> int:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_walk, args=(sim.base_url, "k")) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return -(-jobs // 100)  # pages each walk takes

    for cache_jobs in (jobs, 0):
        world = World(seed=1, cache_jobs=cache_jobs)
        world.add_jobs(jobs, created_at=time.time() - DAY_S, spacing_s=0.5, queued_s=(0, 0),
                       render_s=(0, 0))  # fmt: skip
        with Simulator(world, api_key="k") as sim:
            print(f"-- cache_jobs={cache_jobs}")
            timed("http.client, in-process", lambda: _walk(sim.base_url, "k"))
            timed("http.client, in-process, again", lambda: _walk(sim.base_url, "k"))
            timed("requests.Session, in-process", lambda: _walk(sim.base_url, "k", True))
            timed("http.client, 2 client processes (CPU = server only)",
                  lambda: two_processes(sim), pages=2)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a demo world on loopback until SIGTERM/SIGINT (or run `--bench`)."""
    parser = argparse.ArgumentParser(
        prog="python -m ingester.simulator", description="A fake Videos API on loopback."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--profile", choices=PROFILES, default="openai")
    parser.add_argument("--api-key", help="the key clients must send (default: no auth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--new-every", type=float, default=10.0,
                        help="add a job every this many seconds (0: never)")  # fmt: skip
    parser.add_argument("--bench", action="store_true", help="measure throughput and exit")
    args = parser.parse_args(argv)
    if args.bench:
        return _bench()
    world = _demo_world(args.jobs, args.seed)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim = Simulator(world, profile=args.profile, api_key=args.api_key, host=args.host,
                    port=args.port)  # fmt: skip
    with sim:
        print(f"serving {sim.base_url} ({len(world)} jobs)", flush=True)
        while not stop.wait(args.new_every or 1.0):
            if args.new_every:
                world.add_jobs(1)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
