"""The HTTP side of the Videos API: one session, one retry policy, errors translated here.

`VideosClient` implements `protocols.PageSource`. Each call is one HTTP request wrapped in one
tenacity policy: retry 408/409/429/5xx, timeouts, resets and truncated bodies, never another
4xx; `x-should-retry` overrides that; `retry-after-ms` / `Retry-After` is honoured up to
`max_retry_wait_s`. Every wait (back-off, a server-requested wait, the rate) is served by the
source's `RequestBudget`. Every failed attempt goes to `on_error`; every error raised is an
ApiError.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from .budget import RequestBudget
from .config import SourceSettings, redact_url
from .errors import (
    ApiError,
    AuthError,
    CursorRejectedError,
    DecodeError,
    NotServedError,
    TransientApiError,
)
from .protocols import ErrorEvent, ErrorSink, Order, Page, Stage
from .records import BadBody, decode_list, decode_object

MAX_BODY_BYTES = 64 * 1024 * 1024  # a full list page is ~100 KB; refuse anything absurd
PAYLOAD_CHARS = 2_000
MESSAGE_CHARS = 300
BACKOFF_INITIAL_S, BACKOFF_MAX_S, JITTER = 0.5, 8.0, 0.25
RETRY_STATUSES = frozenset({408, 409, 429})
_TRANSIENT = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_T = TypeVar("_T")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
try:
    USER_AGENT = f"ingester/{version('ingester')} python-requests/{requests.__version__}"
except PackageNotFoundError:  # a checkout that was never installed
    USER_AGENT = f"ingester/0 python-requests/{requests.__version__}"


class RetryableAttempt(Exception):
    """One failed attempt worth another try, with the error to raise if no try is left."""

    def __init__(self, error: ApiError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s  # the wait the server asked for, if it did


def backoff_s(retry: int, rng: Callable[[], float] = random.random) -> float:
    """The wait before retry number `retry` (from 1): 0.5 s doubling to 8 s, less up to 25%."""
    return min(BACKOFF_INITIAL_S * 2.0 ** (retry - 1), BACKOFF_MAX_S) * (1.0 - JITTER * rng())


def retry_policy(max_retries: int, max_wait_s: float, sleep: Callable[[float], None]) -> Retrying:
    """Retry `RetryableAttempt` up to `max_retries` times; stop if the server asks > max_wait_s.

    `sleep(s)` runs before each retry with the wait chosen (the server's, else a back-off).
    """

    def asked(state: RetryCallState) -> float | None:
        exc = state.outcome.exception() if state.outcome is not None else None
        return exc.wait_s if isinstance(exc, RetryableAttempt) else None

    def wait(state: RetryCallState) -> float:
        server = asked(state)
        return server if server is not None and server > 0 else backoff_s(state.attempt_number)

    def stop(state: RetryCallState) -> bool:
        server = asked(state)
        return state.attempt_number > max_retries or (server or 0.0) > max_wait_s

    retry = retry_if_exception_type(RetryableAttempt)
    return Retrying(retry=retry, wait=wait, stop=stop, sleep=sleep, reraise=True)


def parse_duration(text: str | None) -> float | None:
    """Seconds in a duration like "6m0s", "1s", "20ms" or "0.5"; None when unreadable."""
    text = (text or "").strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    if not text or not re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


def server_wait_s(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """The wait asked for by `retry-after-ms`, else by `Retry-After` (seconds or HTTP date).

    An HTTP date is measured against the response's own `Date` when it has one: the
    provider's clock and ours may disagree by hours.
    """
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
    except (KeyError, ValueError):
        pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    when = _http_date(raw)
    if when is None:
        return None
    sent = _http_date(headers.get("date"))
    return max(0.0, when - (sent if sent is not None else now()))


def _http_date(raw: str | None) -> float | None:
    """Unix seconds of an HTTP date, or None."""
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=when.tzinfo or UTC).timestamp()


class _KeyAuth(requests.auth.AuthBase):
    """Adds the auth headers to each request (so ~/.netrc cannot replace them)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.update(self._headers)
        return r

    def __repr__(self) -> str:
        return "_KeyAuth(<redacted>)"


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int | None
    headers: Mapping[str, str]
    body: bytes = b""
    retries: int = 0

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id") or None


class _TooLarge(Exception):
    pass


class VideosClient:
    """`PageSource` over HTTP: `GET /videos` and `GET /videos/{id}` of one source."""

    def __init__(
        self,
        source: SourceSettings,
        *,
        on_error: ErrorSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        budget: RequestBudget | None = None,
        on_response: Callable[[int | None, float], None] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.source = source
        self._base = source.base_url.rstrip("/")
        self._on_error, self._on_response = on_error, on_response
        self._clock = clock
        # the one gate of every request (shared by the clients of a source when handed in);
        # `sleep` and `clock` serve only a budget of the client's own
        if budget is None:
            budget = RequestBudget(source.requests_per_minute, sleep, clock)
        self._budget = budget
        self._max_body = max_body_bytes
        self._owns_session = session is None
        self._session = session if session is not None else _new_session()
        headers = source.auth_headers()
        self._auth = _KeyAuth(headers)
        key = source.api_key.reveal() if source.api_key else ""
        # never kept in any text: the key, and header values long enough to be tokens
        self._secrets = sorted({key, *(v for v in headers.values() if len(v) >= 8)} - {""})
        self._timeout = (source.connect_timeout_s, source.timeout_s)
        # a retry's wait is its turn in the budget: back-off, any pause, the rate
        self._policy = retry_policy(
            source.max_retries, source.max_retry_wait_s, self._budget.acquire
        )
        self.requests = 0
        self.retries = 0
        self.last_request_id: str | None = None

    def close(self) -> None:
        """Close the session, unless it was handed in."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> VideosClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def list_page(self, *, after: str | None, order: Order, limit: int) -> Page:
        """One page of `GET /videos`; `limit` and `order` are always sent."""
        params = {"limit": str(limit), "order": order}
        if after is not None:
            params["after"] = after
        what = "GET /videos" if after is None else f"GET /videos after {after}"
        reply = self._call(f"{self._base}/videos", params, what)
        if reply.status == 410 or (reply.status == 404 and after is None):
            base = redact_url(self._base)
            raise self._http_error(
                reply, what, NotServedError, f"{base} does not serve the Videos API"
            )
        if after is not None and reply.status in (400, 404):
            raise self._http_error(reply, what, CursorRejectedError, f"{what}: cursor rejected")
        if reply.status != 200:
            raise self._http_error(reply, what)
        body = self._decode(decode_list, reply, what)
        return Page(body.items, body.has_more, body.first_id, body.last_id, reply.request_id)

    def get_video(self, video_id: str) -> Any | None:
        """The raw object of `GET /videos/{id}`, or None on 404."""
        what = f"GET /videos/{video_id}"
        reply = self._call(f"{self._base}/videos/{quote(video_id, safe='')}", {}, what, video_id)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._http_error(reply, what, video_id=video_id)
        return self._decode(decode_object, reply, what, video_id)

    # --- one request under the retry policy ---------------------------------------------

    def _call(self, url: str, params: dict[str, str], what: str, vid: str | None = None) -> _Reply:
        attempts = 0

        def once() -> _Reply:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.retries += 1
            note = f" (attempt {attempts} of {self.source.max_retries + 1})"
            return self._attempt(url, params, what, note, vid)

        self._budget.acquire()  # the first attempt's turn; each retry's is the policy's sleep
        try:
            reply = self._policy(once)
        except RetryableAttempt as exc:
            err, limit = exc.error, self.source.max_retry_wait_s
            if (exc.wait_s or 0.0) > limit:
                why = f"the server asked for a wait of {exc.wait_s:.0f} s, longer than {limit:g} s"
            else:
                why = f"gave up after {attempts - 1} retries"
            raise TransientApiError(
                f"{err.message}; {why}", status=err.status, request_id=err.request_id,
                payload=err.payload, retries=attempts - 1,
            ) from exc.__cause__  # fmt: skip
        except ApiError as exc:
            exc.retries = attempts - 1
            raise
        return _Reply(reply.status, reply.headers, reply.body, attempts - 1)

    def _attempt(
        self, url: str, params: dict[str, str], what: str, note: str, vid: str | None
    ) -> _Reply:
        self.requests += 1
        started, resp = self._clock(), None
        try:
            resp = self._session.get(
                url, params=params, auth=self._auth, timeout=self._timeout, stream=True,
                allow_redirects=False,  # a redirect would carry the key elsewhere
            )  # fmt: skip
            self.last_request_id = resp.headers.get("x-request-id") or self.last_request_id
            self._note_rate_limit(resp.headers)
            reply = _Reply(resp.status_code, resp.headers, self._read(resp))
        except _TooLarge:
            stub = _stub(resp)
            message = f"{what}: the body is larger than {self._max_body} bytes"
            raise self._fail(DecodeError, "decode", message, stub, vid, note) from None
        except _TRANSIENT as exc:
            stub = _stub(resp)
            message = f"{what}: {type(exc).__name__}: {exc}"
            error = self._fail(TransientApiError, "http", message, stub, vid, note)
            raise RetryableAttempt(error) from exc
        except requests.RequestException as exc:
            message = f"{what}: request failed: {type(exc).__name__}: {exc}"
            raise self._fail(ApiError, "http", message, _Reply(None, {}), vid, note) from exc
        finally:
            if resp is not None:
                resp.close()
            if self._on_response is not None:
                self._on_response(_stub(resp).status, self._clock() - started)
        if not _should_retry(reply):
            return reply
        wait = server_wait_s(reply.headers)
        if wait or reply.status == 429:
            # every request of the source waits, not only this one (1 s when no wait was
            # given), and so does the next call if this one gives up
            self._budget.pause(min(wait or 1.0, self.source.max_retry_wait_s))
        error = self._fail(TransientApiError, "http", _describe(reply, what), reply, vid, note)
        raise RetryableAttempt(error, wait)

    def _read(self, resp: requests.Response) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise _TooLarge
        chunks, size = [], 0
        for chunk in resp.iter_content(chunk_size=65_536):
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
        if declared.isdigit() and size < int(declared) and not resp.headers.get("content-encoding"):
            raise requests.exceptions.ChunkedEncodingError(f"body ended at {size} of {declared}")
        return b"".join(chunks)

    def _note_rate_limit(self, headers: Mapping[str, str]) -> None:
        """No request left until the window resets: hold the source's requests until then."""
        if headers.get("x-ratelimit-remaining-requests", "").strip() == "0":
            reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
            if reset:
                self._budget.pause(min(reset, self.source.max_retry_wait_s))

    # --- translating failures -------------------------------------------------------------

    def _decode(
        self, decode: Callable[[bytes], _T], reply: _Reply, what: str, vid: str | None = None
    ) -> _T:
        try:
            return decode(reply.body)
        except BadBody as exc:
            raise self._fail(DecodeError, "decode", f"{what}: {exc}", reply, vid) from exc

    def _http_error(
        self,
        reply: _Reply,
        what: str,
        cls: type[ApiError] = ApiError,
        message: str | None = None,
        video_id: str | None = None,
    ) -> ApiError:
        if reply.status in (401, 403):
            # OpenAI echoes a masked key in its 401 body: keep the error code, drop the body
            code = _error_field(reply.body, "code") or _error_field(reply.body, "type")
            message = f"{what}: the provider refused the API key" + (f" ({code})" if code else "")
            bare = _Reply(reply.status, reply.headers, b"", reply.retries)
            return self._fail(AuthError, "http", message, bare, video_id)
        if message is None:
            message = _describe(reply, what)
        elif detail := _error_field(reply.body, "message"):
            message = f"{message}: {detail}"
        return self._fail(cls, "http", message, reply, video_id)

    def _fail(
        self,
        cls: type[ApiError],
        stage: Stage,
        message: str,
        reply: _Reply,
        video_id: str | None = None,
        note: str = "",
    ) -> ApiError:
        """Build the error (secrets redacted, text truncated) and report it to `on_error`."""
        message = self._clean(message, MESSAGE_CHARS * 2)
        payload = self._clean(reply.body[: PAYLOAD_CHARS * 4 + 4096].decode("utf-8", "replace"))
        error = cls(message, status=reply.status, request_id=reply.request_id,
                    payload=payload or None, retries=reply.retries)  # fmt: skip
        if self._on_error is not None:
            self._on_error(ErrorEvent(stage, message + note, reply.status, reply.request_id,
                                      error.payload, video_id))  # fmt: skip
        return error

    def _clean(self, text: str, limit: int = PAYLOAD_CHARS) -> str:
        """`text` with every secret replaced, then cut to `limit` characters."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _stub(resp: requests.Response | None) -> _Reply:
    """The status and headers of a response whose body could not be read."""
    return _Reply(None, {}) if resp is None else _Reply(resp.status_code, resp.headers)


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)  # tenacity retries
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


def _should_retry(reply: _Reply) -> bool:
    status = reply.status or 0
    if 200 <= status < 300:
        return False
    override = reply.headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return override == "true"
    return status in RETRY_STATUSES or status >= 500


def _describe(reply: _Reply, what: str) -> str:
    if 300 <= (reply.status or 0) < 400:
        return (
            f"{what}: unexpected redirect (HTTP {reply.status}) to {reply.headers.get('location')}"
        )
    detail = _error_field(reply.body, "message")
    return f"{what}: HTTP {reply.status}" + (f": {detail}" if detail else "")


def _error_field(body: bytes, name: str) -> str | None:
    """A string field of the provider's `{"error": {...}}` body, if there is one."""
    if len(body) > 65_536:
        return None
    try:
        value = json.loads(body)["error"][name]
    except (ValueError, RecursionError, TypeError, KeyError):
        return None
    return value if isinstance(value, str) and value else None  # cut after redaction, not here
