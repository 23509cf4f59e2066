"""The exceptions of ingester: one root, context carried, foreign errors translated at the edge.

    IngesterError
     ├── ConfigError            bad settings or bad input; nothing was attempted
     ├── ApiError               the provider answered with an error (status, request_id)
     │    ├── AuthError             401/403: the key was refused
     │    ├── NotServedError        404/410 on the list endpoint: no Videos API here
     │    ├── CursorRejectedError   404/400 for a request that carried `after`
     │    ├── TransientApiError     retryable failure that outlived its retries
     │    └── DecodeError           the body is not the JSON shape we expect
     ├── StoreError             the database failed (driver errors translated here)
     │    └── SchemaError           the schema is not at the migration head
     ├── LeaseBusyError         another process holds this source's lease
     ├── PagingError            a full scan met a page that ignored `after`/`order`/`limit`
     └── Interrupted            a stop was requested during a wait

Every message is safe to print and log: no API key or password is ever put in one.
"""

from __future__ import annotations


class IngesterError(Exception):
    """Root of every error ingester raises on purpose."""


class ConfigError(IngesterError):
    """Settings or command-line input that cannot be used."""


class ApiError(IngesterError):
    """An HTTP request to the provider failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        payload: str | None = None,
        retries: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.payload = payload
        self.retries = retries

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.request_id:
            parts.append(f"[request {self.request_id}]")
        return " ".join(parts)


class AuthError(ApiError):
    """The provider refused the credentials (401/403)."""


class NotServedError(ApiError):
    """The provider does not serve the Videos list endpoint (404/410 without a cursor)."""


class CursorRejectedError(ApiError):
    """The provider rejected a request that carried an `after` cursor (404/400)."""


class TransientApiError(ApiError):
    """A retryable failure (429, 5xx, timeout, reset) that outlived its retries."""


class DecodeError(ApiError):
    """The response body is not the JSON list/video shape."""


class StoreError(IngesterError):
    """The database refused or could not be reached."""


class SchemaError(StoreError):
    """The database schema is not at the migration head."""


class LeaseBusyError(IngesterError):
    """Another process holds the lease of this source."""


class PagingError(IngesterError):
    """A page proved nothing (the provider ignores `after`, `order` or `limit`): a full scan
    cannot be complete."""


class Interrupted(IngesterError):
    """A stop was requested while waiting (back-off, budget); the pass ends as interrupted."""
