"""VideosClient against a scripted HTTP server on loopback: requests, retries, errors, secrets."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import requests

from ingester.api import (
    BACKOFF_MAX_S,
    VideosClient,
    backoff_s,
    parse_duration,
    server_wait_s,
)
from ingester.budget import RequestBudget
from ingester.config import Secret, SourceSettings
from ingester.errors import (
    ApiError,
    AuthError,
    CursorRejectedError,
    DecodeError,
    Interrupted,
    NotServedError,
    TransientApiError,
)
from ingester.protocols import ErrorEvent

KEY = "sk-test-SECRET-0123456789abcdef"


@dataclass
class Step:
    """One scripted answer; `action` misbehaves: reset, truncate, stall, chunked."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    target: str = ""  # the request line's target as sent (absolute through a proxy)


def decoded(items: list[Any]) -> list[Any]:
    """Items as the client hands them over (each item's received bytes), decoded."""
    return [msgspec.json.decode(item) for item in items]


def page(*ids: str, has_more: bool = False) -> Step:
    """A 200 list page holding jobs with these ids."""
    data = [{"id": i, "object": "video", "status": "completed"} for i in ids]
    body = {"object": "list", "data": data, "has_more": has_more,
            "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}  # fmt: skip
    return Step(200, body, {"x-request-id": "req_page"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        script = self.server.script
        parts = urlsplit(self.path)
        script.seen.append(
            Seen(parts.path, parse_qs(parts.query), dict(self.headers.items()), self.path)
        )
        with script.lock:
            step = script.steps.popleft() if script.steps else None
        if step is None:
            step = Step(599, b"script exhausted", {"x-should-retry": "false"})
        if step.action == "reset":
            linger = struct.pack("ii", 1, 0)  # close with RST: "connection reset by peer"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()
            self.close_connection = True
            return
        if step.action == "stall":
            time.sleep(0.5)
        body = step.body if isinstance(step.body, bytes) else json.dumps(step.body).encode()
        self.send_response(step.status)
        for name, value in step.headers.items():
            self.send_header(name, value)
        if step.action == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 4096):
                chunk = body[start : start + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        extra = 100 if step.action == "truncate" else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)
        if step.action == "truncate":
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    script: Script

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the misbehaving steps break their own connections on purpose


class Script:
    """A threaded HTTP server on 127.0.0.1 answering with queued steps, recording requests."""

    def __init__(self) -> None:
        self.steps: deque[Step] = deque()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.script = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def add(self, *steps: Step) -> Script:
        """Queue answers, in order."""
        self.steps.extend(steps)
        return self

    def stop(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Script]:
    script = Script()
    yield script
    script.stop()


class Harness:
    """A client on the script with recorded sleeps and error events."""

    def __init__(self, server: Script, **settings: Any) -> None:
        values: dict[str, Any] = {"base_url": server.url, "api_key": Secret(KEY),
                                  "timeout_s": 2.0, "connect_timeout_s": 2.0}  # fmt: skip
        max_body = settings.pop("max_body_bytes", 10_000)
        values.update(settings)
        self.source = SourceSettings(**values)
        self.sleeps: list[float] = []
        self.events: list[ErrorEvent] = []
        self.responses: list[int | None] = []
        self.client = VideosClient(
            self.source,
            on_error=self.events.append,
            sleep=self.sleeps.append,
            on_response=lambda status, _elapsed: self.responses.append(status),
            max_body_bytes=max_body,
        )

    def list(self, after: str | None = None) -> Any:
        """One list call, `asc`, 100 per page."""
        return self.client.list_page(after=after, order="asc", limit=100)


@pytest.fixture
def harness(server: Script) -> Iterator[Harness]:
    h = Harness(server)
    yield h
    h.client.close()


def assert_no_secret(*things: Any) -> None:
    """The key appears in no str/repr/field of these errors or events."""
    for thing in things:
        texts = [str(thing), repr(thing), *(str(v) for v in vars(thing).values())] if isinstance(
            thing, Exception
        ) else [repr(thing)]  # fmt: skip
        for text in texts:
            assert KEY not in text
            assert "SECRET-0123" not in text


# --- requests -------------------------------------------------------------------------------


def test_limit_and_order_always_sent_after_only_when_given(
    server: Script, harness: Harness
) -> None:
    server.add(page("a", "b", has_more=True), page("c"))
    first = harness.client.list_page(after=None, order="desc", limit=7)
    second = harness.client.list_page(after="b", order="asc", limit=100)
    assert server.seen[0].path == "/v1/videos"
    assert server.seen[0].query == {"limit": ["7"], "order": ["desc"]}
    assert server.seen[1].query == {"limit": ["100"], "order": ["asc"], "after": ["b"]}
    assert [i["id"] for i in decoded(first.items)] == ["a", "b"] and first.has_more
    assert (first.first_id, first.last_id, first.request_id) == ("a", "b", "req_page")
    assert decoded(second.items) == [{"id": "c", "object": "video", "status": "completed"}]
    assert not second.has_more
    assert harness.client.requests == 2 and harness.client.retries == 0
    assert harness.client.last_request_id == "req_page"


def test_openai_auth_headers_with_org_project_and_user_agent(server: Script) -> None:
    h = Harness(server, organization="org-1", project="proj-1", extra_headers=(("X-Env", "t"),))
    server.add(page())
    h.list()
    headers = {k.lower(): v for k, v in server.seen[0].headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"
    assert headers["x-env"] == "t"
    assert "api-key" not in headers
    assert headers["user-agent"].startswith("ingester/")


def test_azure_sends_api_key_header_not_bearer(server: Script) -> None:
    h = Harness(server, provider="azure")
    server.add(page())
    h.list()
    headers = {k.lower(): v for k, v in server.seen[0].headers.items()}
    assert headers["api-key"] == KEY
    assert "authorization" not in headers


def test_an_after_id_of_any_characters_reaches_the_server_intact(
    server: Script, harness: Harness
) -> None:
    odd = "video_a b&c=d/é?#%"
    server.add(page("x"))
    harness.list(after=odd)
    assert server.seen[0].query == {"limit": ["100"], "order": ["asc"], "after": [odd]}


def test_a_base_url_is_sent_as_requests_writes_it(server: Script) -> None:
    h = Harness(server, base_url=server.url + "/é x")
    server.add(page("a"))
    h.list(after="b")
    assert server.seen[0].path == "/v1/%C3%A9%20x/videos"
    assert server.seen[0].query == {"limit": ["100"], "order": ["asc"], "after": ["b"]}


def test_the_proxy_of_the_environment_is_used(
    server: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (read when the client is made): the provider's address here
    has nothing listening, only the proxy (the script server) can answer."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))
    h = Harness(server, base_url="http://127.0.0.1:9/v1")
    server.add(page("a"))
    assert [i["id"] for i in decoded(h.list().items)] == ["a"]
    assert server.seen[0].target.startswith("http://127.0.0.1:9/v1/videos?")
    assert {k.lower(): v for k, v in server.seen[0].headers.items()}["authorization"] == (
        f"Bearer {KEY}"
    )


def test_cookies_the_provider_sets_are_sent_back(server: Script, harness: Harness) -> None:
    first = page("a", has_more=True)
    first.headers["Set-Cookie"] = "__cf_bm=abc123; Path=/; HttpOnly"
    server.add(first, page("b"))
    harness.list()
    harness.list(after="a")
    cookies = [{k.lower(): v for k, v in s.headers.items()}.get("cookie") for s in server.seen]
    assert cookies == [None, "__cf_bm=abc123"]


def test_get_video_quotes_the_id_and_returns_none_on_404(server: Script, harness: Harness) -> None:
    server.add(Step(200, {"id": "a/b c", "status": "queued"}), Step(404, {"error": {}}))
    assert harness.client.get_video("a/b c") == {"id": "a/b c", "status": "queued"}
    assert harness.client.get_video("gone") is None
    assert server.seen[0].path == "/v1/videos/a%2Fb%20c"
    assert server.seen[1].path == "/v1/videos/gone"
    assert len(server.seen) == 2 and harness.events == []


def test_get_video_non_object_is_decode_error(server: Script, harness: Harness) -> None:
    server.add(Step(200, [1, 2]))
    with pytest.raises(DecodeError):
        harness.client.get_video("v1")
    assert harness.events[0].stage == "decode" and harness.events[0].video_id == "v1"


# --- server-requested waits and back-off ------------------------------------------------


def test_retry_after_seconds_is_honoured(server: Script, harness: Harness) -> None:
    server.add(Step(429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}), page("a"))
    assert decoded(harness.list().items)[0]["id"] == "a"
    assert harness.sleeps == [3.0]
    assert harness.client.retries == 1 and harness.client.requests == 2


def test_retry_after_http_date_is_honoured(server: Script, harness: Harness) -> None:
    not_before = int(time.time()) + 5
    server.add(Step(503, b"", {"Retry-After": formatdate(not_before, usegmt=True)}), page())
    harness.list()
    assert len(harness.sleeps) == 1
    assert harness.sleeps[0] >= not_before - time.time()  # never sent before the date
    assert harness.sleeps[0] <= 5.0


def test_retry_after_ms_wins_and_is_honoured(server: Script, harness: Harness) -> None:
    server.add(Step(429, b"", {"retry-after-ms": "1500", "Retry-After": "30"}), page())
    harness.list()
    assert harness.sleeps == [1.5]


def test_backoff_doubles_to_the_cap_with_bounded_jitter(server: Script) -> None:
    h = Harness(server, max_retries=6)
    server.add(*[Step(500) for _ in range(7)])
    with pytest.raises(TransientApiError) as info:
        h.list()
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert len(h.sleeps) == 6
    for slept, base in zip(h.sleeps, bases, strict=True):
        assert 0.75 * base <= slept <= base
    assert any(slept < base for slept, base in zip(h.sleeps, bases, strict=True))  # jittered
    assert info.value.retries == 6 and h.client.retries == 6 and len(server.seen) == 7
    assert backoff_s(30, rng=lambda: 0.0) == BACKOFF_MAX_S


def test_wait_longer_than_allowed_gives_up_without_sleeping(server: Script) -> None:
    h = Harness(server, max_retry_wait_s=120.0)
    server.add(Step(429, b"", {"Retry-After": "300", "x-request-id": "req_long"}), page())
    with pytest.raises(TransientApiError) as info:
        h.list()
    assert "longer than" in str(info.value) and "300" in str(info.value)
    assert info.value.status == 429 and info.value.request_id == "req_long"
    assert h.sleeps == [] and len(server.seen) == 1


def test_header_parsers() -> None:
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1s") == 1.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("0.25") == 0.25
    assert parse_duration("soon") is None and parse_duration(None) is None
    assert server_wait_s({"retry-after": "garbage"}) is None
    assert server_wait_s({}) is None
    naive = formatdate(1_000_030.0)  # "-0000": a date with no zone is UTC
    assert naive.endswith("-0000")
    assert server_wait_s({"retry-after": naive}, now=lambda: 1_000_000.0) == 30.0
    gmt = formatdate(1_000_030.0, usegmt=True)
    assert server_wait_s({"retry-after": gmt}, now=lambda: 1_000_000.0) == 30.0


# --- what is retried and what is not --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ApiError), (401, AuthError), (403, AuthError), (404, NotServedError),
     (410, NotServedError), (422, ApiError)],
)  # fmt: skip
def test_client_errors_are_not_retried(
    server: Script, harness: Harness, status: int, error: type[ApiError]
) -> None:
    server.add(Step(status, {"error": {"message": "nope"}}, {"x-request-id": "req_4xx"}))
    with pytest.raises(error) as info:
        harness.list()
    assert type(info.value) is error
    assert len(server.seen) == 1 and harness.sleeps == []
    assert info.value.status == status and info.value.request_id == "req_4xx"
    assert info.value.retries == 0
    assert [(e.stage, e.http_status, e.request_id) for e in harness.events] == [
        ("http", status, "req_4xx")
    ]


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_transient_statuses_are_retried_then_raise(
    server: Script, harness: Harness, status: int
) -> None:
    server.add(*[Step(status, {"error": {"message": "busy"}}) for _ in range(3)])
    with pytest.raises(TransientApiError) as info:
        harness.list()
    assert len(server.seen) == 3 and len(harness.sleeps) == 2
    assert info.value.status == status and info.value.retries == 2
    assert "busy" in str(info.value) and "gave up after 2 retries" in str(info.value)
    assert harness.client.retries == 2 and harness.client.requests == 3


@pytest.mark.parametrize(
    ("action", "cause"),
    [("reset", requests.ConnectionError), ("truncate", requests.exceptions.ChunkedEncodingError)],
)
def test_broken_connections_are_retried_then_raise(
    server: Script, harness: Harness, action: str, cause: type[Exception]
) -> None:
    server.add(*[Step(200, page("a").body, action=action) for _ in range(3)])
    with pytest.raises(TransientApiError) as info:
        harness.list()
    assert len(server.seen) == 3 and info.value.retries == 2 and len(harness.events) == 3
    assert isinstance(info.value.__cause__, cause)


def test_a_stop_during_back_off_propagates(server: Script) -> None:
    def stop_aware_sleep(_seconds: float) -> None:
        raise Interrupted("stop requested")

    source = SourceSettings(base_url=server.url, api_key=Secret(KEY))
    with VideosClient(source, sleep=stop_aware_sleep) as client:
        server.add(Step(503), page())
        with pytest.raises(Interrupted):
            client.list_page(after=None, order="asc", limit=100)
    assert len(server.seen) == 1


def test_read_timeout_is_retried_then_raises(server: Script) -> None:
    h = Harness(server, timeout_s=0.1, max_retries=1)
    server.add(Step(action="stall"), Step(action="stall"))
    with pytest.raises(TransientApiError) as info:
        h.list()
    assert len(server.seen) == 2 and info.value.retries == 1
    assert "Timeout" in str(info.value) or "timed out" in str(info.value)
    assert h.responses == [None, None]


def test_transient_faults_then_success(server: Script, harness: Harness) -> None:
    h = Harness(server, max_retries=3)
    server.add(Step(502), Step(action="reset"), Step(200, page("a").body, action="truncate"))
    server.add(page("a"))
    assert h.list().last_id == "a"
    assert h.client.retries == 3 and h.client.requests == 4 and len(h.events) == 3
    assert h.responses == [502, None, 200, 200]


def test_x_should_retry_false_stops_a_500(server: Script, harness: Harness) -> None:
    server.add(Step(500, b"", {"x-should-retry": "false"}), page())
    with pytest.raises(ApiError) as info:
        harness.list()
    assert not isinstance(info.value, TransientApiError)
    assert info.value.status == 500 and len(server.seen) == 1 and harness.sleeps == []


def test_x_should_retry_true_retries_a_400(server: Script, harness: Harness) -> None:
    server.add(Step(400, b"", {"x-should-retry": "true"}), page("a"))
    assert decoded(harness.list().items)[0]["id"] == "a"
    assert len(server.seen) == 2 and harness.client.retries == 1


def test_redirect_is_not_followed(server: Script, harness: Harness) -> None:
    server.add(Step(302, b"", {"Location": "http://127.0.0.2/steal"}))
    with pytest.raises(ApiError, match="redirect"):
        harness.list()
    assert len(server.seen) == 1


def test_on_error_gets_one_event_per_failed_attempt(server: Script, harness: Harness) -> None:
    server.add(
        Step(500, {"error": {"message": "boom"}}, {"x-request-id": "req_1"}),
        Step(429, b"", {"x-request-id": "req_2", "retry-after-ms": "10"}),
        page("a"),
    )
    harness.list()
    got = [(e.stage, e.http_status, e.request_id) for e in harness.events]
    assert got == [("http", 500, "req_1"), ("http", 429, "req_2")]
    assert "attempt 1 of 3" in harness.events[0].message and "boom" in harness.events[0].message
    assert harness.events[0].payload is not None and "boom" in harness.events[0].payload


# --- endpoint-specific errors -------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_list_without_after_not_served(server: Script, harness: Harness, status: int) -> None:
    server.add(Step(status, {"error": {"message": "Not found"}}))
    with pytest.raises(NotServedError, match="does not serve the Videos API"):
        harness.list()


@pytest.mark.parametrize("status", [400, 404])
def test_list_with_after_cursor_rejected(server: Script, harness: Harness, status: int) -> None:
    server.add(Step(status, {"error": {"message": "No video found"}}, {"x-request-id": "r"}))
    with pytest.raises(CursorRejectedError) as info:
        harness.list(after="video_1")
    assert info.value.status == status and info.value.request_id == "r"
    assert "video_1" in str(info.value) and "No video found" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [b"<html>bad gateway</html>", b"[]", {"data": {}, "has_more": False},
     {"data": [], "has_more": "no"}, {"data": [], "has_more": False, "last_id": 5},
     {"has_more": False}, {"data": [], "has_more": False, "first_id": ["x"]}],
)  # fmt: skip
def test_bad_envelopes_are_decode_errors(server: Script, harness: Harness, body: Any) -> None:
    server.add(Step(200, body, {"x-request-id": "req_bad"}))
    with pytest.raises(DecodeError) as info:
        harness.list()
    assert info.value.status == 200 and info.value.request_id == "req_bad"
    assert info.value.payload and len(info.value.payload) <= 2000
    assert len(server.seen) == 1
    assert [(e.stage, e.request_id) for e in harness.events] == [("decode", "req_bad")]


def test_payload_is_truncated(server: Script, harness: Harness) -> None:
    server.add(Step(200, b"x" * 9000))
    with pytest.raises(DecodeError) as info:
        harness.list()
    assert info.value.payload is not None and len(info.value.payload) == 2000


@pytest.mark.parametrize("action", [None, "chunked"])
def test_body_over_the_cap_is_refused(server: Script, harness: Harness, action: str | None) -> None:
    big = {"object": "list", "data": [{"id": f"v{i}"} for i in range(2000)], "has_more": False}
    server.add(Step(200, big, action=action))
    with pytest.raises(DecodeError, match="larger than 10000 bytes"):
        harness.list()
    assert len(server.seen) == 1


def test_missing_first_and_last_id_read_as_null(server: Script, harness: Harness) -> None:
    server.add(Step(200, {"data": [], "has_more": False}))
    got = harness.list()
    assert (got.first_id, got.last_id, got.items) == (None, None, [])


# --- secrets ----------------------------------------------------------------------------------


def test_the_key_never_appears_in_errors_or_events(server: Script) -> None:
    h = Harness(server, max_retries=1)
    echo = {"error": {"message": f"bad key: Bearer {KEY}", "code": "invalid_api_key"}}
    masked = {"error": {"message": "Incorrect API key provided: sk-test-***cdef", "code": None}}
    raised: list[ApiError] = []
    for steps in (
        [Step(401, masked)],
        [Step(400, echo)],
        [Step(422, {"error": {"message": "x" * 280 + KEY}})],  # the key across the cut
        [Step(500, echo), Step(500, echo)],
        [Step(200, f"<html>{KEY}</html>".encode())],
    ):
        server.add(*steps)
        with pytest.raises(ApiError) as info:
            h.list()
        raised.append(info.value)
    server.add(Step(404, echo))
    with pytest.raises(CursorRejectedError) as cursor:
        h.list(after=f"x{KEY}")
    raised.append(cursor.value)
    assert isinstance(raised[0], AuthError) and "refused the API key" in str(raised[0])
    assert raised[0].payload is None and h.events[0].payload is None  # OpenAI echoes a masked key
    assert "cdef" not in h.events[0].message
    assert len(h.events) == 7
    assert_no_secret(*raised, *h.events)
    assert "***" in (raised[1].payload or "")
    assert "key=" not in repr(h.client.source) and KEY not in repr(h.client.source)


# --- rate-limit headers, counters, budget -----------------------------------------------


def test_rate_limit_headers_are_parsed_and_an_empty_window_waits(server: Script) -> None:
    now = [100.0]
    source = SourceSettings(base_url=server.url, api_key=Secret(KEY))
    sleeps: list[float] = []
    client = VideosClient(source, sleep=sleeps.append, clock=lambda: now[0])
    limits = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    server.add(Step(200, page("a").body, limits), page("b"))
    client.list_page(after=None, order="asc", limit=100)
    assert sleeps == []
    now[0] += 10.0
    client.list_page(after="a", order="asc", limit=100)
    assert sleeps == [110.0]  # until reset, bounded by max_retry_wait_s from when it was said
    client.close()


def test_rate_limit_wait_is_the_time_left(server: Script) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    source = SourceSettings(base_url=server.url, api_key=Secret(KEY))
    with VideosClient(source, sleep=sleep, clock=lambda: now[0]) as client:
        limits = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
        server.add(Step(200, page().body, limits), page(), page())
        client.list_page(after=None, order="asc", limit=100)
        now[0] = 0.25
        client.list_page(after=None, order="asc", limit=100)
        client.list_page(after=None, order="asc", limit=100)
    assert sleeps == [0.75]  # once: the second answer carried no rate-limit headers


def test_a_429_pauses_the_whole_budget(server: Script) -> None:
    now = [0.0]
    budget_sleeps: list[float] = []

    def budget_sleep(seconds: float) -> None:
        budget_sleeps.append(seconds)
        now[0] += seconds

    budget = RequestBudget(None, sleep=budget_sleep, clock=lambda: now[0])
    source = SourceSettings(base_url=server.url, api_key=Secret(KEY))
    with VideosClient(source, sleep=lambda _s: None, budget=budget) as client:
        server.add(Step(429, b"", {"retry-after": "2"}), page())
        client.list_page(after=None, order="asc", limit=100)
    assert budget_sleeps == [2.0]  # the retry waited in the budget too: other callers would
    assert len(server.seen) == 2


def test_every_wait_is_served_by_the_shared_budget(server: Script) -> None:
    """Back-off, Retry-After and an empty x-ratelimit window: all through the source's budget,
    so the other client of the source (the head chain of a full scan) waits as well."""
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    def never(_seconds: float) -> None:
        raise AssertionError("a client waited outside its budget")

    budget = RequestBudget(None, sleep=sleep, clock=lambda: now[0])
    source = SourceSettings(base_url=server.url, api_key=Secret(KEY))
    limits = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5s"}
    server.add(Step(500), Step(200, page("a").body, limits), Step(200, {"id": "a"}))
    with VideosClient(source, sleep=never, budget=budget) as client:
        client.list_page(after=None, order="asc", limit=100)
    assert len(slept) == 1 and 0.375 <= slept[0] <= 0.5  # the back-off of the 500
    with VideosClient(source, sleep=never, budget=budget) as head:
        assert head.get_video("a") == {"id": "a"}
    assert slept[1:] == [5.0]  # no request was left in the window until it reset
