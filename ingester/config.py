"""Settings: one immutable object, built in one place from flags, environment and a TOML file.

Precedence is flags, then environment, then the TOML file (`--config` / `INGESTER_CONFIG`),
then defaults. Secrets are held in `Secret`, whose `repr` and `str` never show the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///ingester.db"
PROVIDERS = ("openai", "azure", "litellm")
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}
_AUTH_HEADERS = ("authorization", "api-key")  # a key given as a header of the TOML instead
# The statuses of the Videos API and of the gateways that serve it today (DESIGN.md §1a)
OPEN_STATUSES = ("queued", "in_progress", "pending", "processing", "preprocessing", "running")
TERMINAL_STATUSES = ("completed", "failed", "cancelled", "expired", "succeeded")
# LiteLLM's proxy answers 400 "LLM Provider NOT provided" without it
LITELLM_HEADER = ("custom-llm-provider", "openai")


class Secret:
    """A string that never shows itself in `repr`, `str`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class SourceSettings:
    """One provider endpoint to mirror: where it is, how to authenticate, how to sync it."""

    name: str = "default"
    provider: str = "openai"
    base_url: str = DEFAULT_BASE_URLS["openai"]
    api_key: Secret | None = field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    page_size: int = 100
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    max_retries: int = 2
    max_retry_wait_s: float = 120.0
    allow_insecure_http: bool = False
    open_statuses: tuple[str, ...] = OPEN_STATUSES
    terminal_statuses: tuple[str, ...] = TERMINAL_STATUSES
    stale_after_s: float = 24 * 3600.0
    stale_refresh_s: float = 600.0
    list_window_s: float | None = None
    requests_per_minute: float | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise ConfigError(f"source name {self.name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"source {self.name}: provider {self.provider!r} is not one of "
                f"{', '.join(PROVIDERS)}"
            )
        if not 1 <= self.page_size <= 100:
            raise ConfigError(f"source {self.name}: page_size must be 1..100, got {self.page_size}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError(f"source {self.name}: timeouts must be positive")
        if self.max_retries < 0:
            raise ConfigError(f"source {self.name}: max_retries must be >= 0")
        if set(self.open_statuses) & set(self.terminal_statuses):
            raise ConfigError(f"source {self.name}: a status cannot be both open and terminal")
        if self.stale_after_s <= 0 or self.stale_refresh_s <= 0:
            raise ConfigError(f"source {self.name}: stale_after_s and stale_refresh_s must be > 0")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ConfigError(f"source {self.name}: requests_per_minute must be > 0")
        check_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)

    def require_key(self) -> None:
        """Raise ConfigError, saying where a key is read from, if this source has none."""
        if self.api_key or any(k.lower() in _AUTH_HEADERS for k, _ in self.extra_headers):
            return
        raise ConfigError(
            f"source {self.name} has no API key: it is read from OPENAI_API_KEY, "
            "OPENAI_API_KEY_FILE or the systemd credential openai-api-key, or, for a "
            "[[sources]] entry of the TOML config, from its api_key_env or api_key_file "
            f"(or the credential {self.name}-api-key)"
        )

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate this source, secrets included: send, never log."""
        headers: dict[str, str] = {}
        if self.api_key:
            key = self.api_key.reveal()
            if self.provider == "azure":
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        given = {name.lower() for name, _ in self.extra_headers}
        if self.provider == "litellm" and LITELLM_HEADER[0] not in given:
            headers[LITELLM_HEADER[0]] = LITELLM_HEADER[1]
        headers.update(dict(self.extra_headers))
        return headers


@dataclass(frozen=True)
class Settings:
    """Everything one ingester process needs; built once by the CLI."""

    database_url: Secret = field(default_factory=lambda: Secret(DEFAULT_DATABASE_URL))
    sources: tuple[SourceSettings, ...] = field(default_factory=lambda: (SourceSettings(),))
    sync_interval_s: float = 60.0
    idle_interval_s: float | None = None
    reconcile_interval_s: float = 24 * 3600.0
    jitter_s: float = 5.0
    lease_ttl_s: float = 120.0
    metrics_address: str | None = None
    health_max_age_s: float | None = None
    log_format: str = "text"

    def __post_init__(self) -> None:
        if self.sync_interval_s <= 0:
            raise ConfigError("sync_interval_s must be > 0")
        if self.idle_interval_s is not None and self.idle_interval_s <= 0:
            raise ConfigError("idle_interval_s must be > 0")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format {self.log_format!r} is not text or json")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError("source names must be unique")
        if not self.sources:
            raise ConfigError("no source configured")

    @property
    def effective_idle_interval_s(self) -> float:
        """Interval while no job is open: the idle setting, or the pass interval."""
        return self.idle_interval_s if self.idle_interval_s is not None else self.sync_interval_s

    def source(self, name: str | None) -> SourceSettings:
        """The source called `name`, or the only one when `name` is None."""
        if name is None:
            if len(self.sources) == 1:
                return self.sources[0]
            raise ConfigError(
                "several sources are configured; choose one with --source "
                f"({', '.join(s.name for s in self.sources)})"
            )
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"no source named {name!r}")


def check_base_url(url: str, *, allow_insecure_http: bool) -> None:
    """Refuse URLs that are not http(s), and plain http to anything but loopback unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {redact_url(url)!r} must be an http(s) URL with a host")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ConfigError(
            f"base URL {redact_url(url)!r} uses plain http to a non-loopback host; "
            "use https or set allow_insecure_http"
        )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


# --- building Settings from flags, environment and TOML -------------------------------------

_SOURCE_KEYS = {
    "name", "provider", "base_url", "api_key_env", "api_key_file", "organization", "project",
    "headers", "page_size", "timeout_s", "connect_timeout_s", "max_retries",
    "max_retry_wait_s", "allow_insecure_http", "open_statuses", "terminal_statuses",
    "stale_after_s", "stale_refresh_s", "list_window_s", "requests_per_minute",
}  # fmt: skip
_TOP_KEYS = {
    "database_url", "sync_interval_s", "idle_interval_s", "reconcile_interval_s", "jitter_s",
    "lease_ttl_s", "metrics_address", "health_max_age_s", "log_format", "sources",
}  # fmt: skip


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Build Settings: flags win over environment, environment over the TOML file."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    path = config_path or env.get("INGESTER_CONFIG")
    doc = _read_toml(path) if path else {}
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")

    top: dict[str, Any] = {k: v for k, v in doc.items() if k != "sources"}
    env_top = {
        "database_url": env.get("INGESTER_DATABASE_URL"),
        "sync_interval_s": _num(env, "INGESTER_SYNC_INTERVAL_S"),
        "idle_interval_s": _num(env, "INGESTER_IDLE_INTERVAL_S"),
        "reconcile_interval_s": _num(env, "INGESTER_RECONCILE_INTERVAL_S"),
        "metrics_address": env.get("INGESTER_METRICS_ADDRESS"),
        "health_max_age_s": _num(env, "INGESTER_HEALTH_MAX_AGE_S"),
        "log_format": env.get("INGESTER_LOG_FORMAT"),
    }
    top.update({k: v for k, v in env_top.items() if v is not None})
    top.update({k: v for k, v in flags.items() if k in _TOP_KEYS})
    if "database_url" in top:
        top["database_url"] = Secret(str(top["database_url"]))

    raw_sources = doc.get("sources")
    sources: tuple[SourceSettings, ...]
    if raw_sources is None:
        sources = (_env_source(env, flags),)
    else:
        if not isinstance(raw_sources, list) or not raw_sources:
            raise ConfigError(f"{path}: [[sources]] must be a non-empty array of tables")
        sources = tuple(_toml_source(s, env, flags, path or "") for s in raw_sources)
    try:
        return Settings(sources=sources, **top)
    except TypeError as exc:
        raise ConfigError(f"bad setting: {exc}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _num(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _read_key_file(path: str) -> Secret:
    try:
        return Secret(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"cannot read API key file {path}: {exc.strerror}") from None


def _credentials_key(env: Mapping[str, str], name: str) -> Secret | None:
    """A key handed over by systemd `LoadCredential=` ($CREDENTIALS_DIRECTORY/<name>)."""
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / name).is_file():
        return _read_key_file(str(Path(creds) / name))
    return None


def _env_source(env: Mapping[str, str], flags: Mapping[str, Any]) -> SourceSettings:
    provider = flags.get("provider") or env.get("INGESTER_PROVIDER") or "openai"
    base_url = flags.get("base_url") or env.get("OPENAI_BASE_URL")
    if base_url is None:
        if provider not in DEFAULT_BASE_URLS:
            raise ConfigError(f"provider {provider} needs a base URL (OPENAI_BASE_URL)")
        base_url = DEFAULT_BASE_URLS[provider]
    key: Secret | None = None
    if env.get("OPENAI_API_KEY"):
        key = Secret(env["OPENAI_API_KEY"])
    elif env.get("OPENAI_API_KEY_FILE"):
        key = _read_key_file(env["OPENAI_API_KEY_FILE"])
    else:
        key = _credentials_key(env, "openai-api-key")
    page_size = flags.get("page_size") or _num(env, "INGESTER_PAGE_SIZE") or 100
    return SourceSettings(
        name=str(flags.get("source_name") or env.get("INGESTER_SOURCE") or "default"),
        provider=str(provider),
        base_url=str(base_url).rstrip("/"),
        api_key=key,
        organization=env.get("OPENAI_ORG_ID") or None,
        project=env.get("OPENAI_PROJECT_ID") or None,
        page_size=int(page_size),
        allow_insecure_http=bool(flags.get("allow_insecure_http"))
        or env.get("INGESTER_ALLOW_INSECURE_HTTP", "") in ("1", "true", "yes"),
    )


def _toml_source(
    raw: Any, env: Mapping[str, str], flags: Mapping[str, Any], path: str
) -> SourceSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: each [[sources]] entry must be a table")
    unknown = set(raw) - _SOURCE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown source setting(s) {', '.join(sorted(unknown))}")
    values = dict(raw)
    name = str(values.get("name", "default"))
    key: Secret | None = None
    key_env = values.pop("api_key_env", None)
    key_file = values.pop("api_key_file", None)
    if key_file:
        key = _read_key_file(str(key_file))
    elif key_env:
        if not env.get(str(key_env)):
            raise ConfigError(f"source {name}: environment variable {key_env} is not set")
        key = Secret(env[str(key_env)])
    else:
        key = _credentials_key(env, f"{name}-api-key")
    headers = values.pop("headers", {}) or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"source {name}: headers must be a table of strings")
    provider = str(values.get("provider", "openai"))
    values.setdefault("base_url", DEFAULT_BASE_URLS.get(provider))
    if values["base_url"] is None:
        raise ConfigError(f"source {name}: provider {provider} needs base_url")
    values["base_url"] = str(values["base_url"]).rstrip("/")
    for k in ("open_statuses", "terminal_statuses"):
        if k in values:
            values[k] = tuple(str(x) for x in values[k])
    if flags.get("allow_insecure_http"):
        values["allow_insecure_http"] = True
    try:
        return SourceSettings(
            api_key=key,
            extra_headers=tuple((str(k), str(v)) for k, v in headers.items()),
            **values,
        )
    except TypeError as exc:
        raise ConfigError(f"source {name}: bad setting: {exc}") from None
