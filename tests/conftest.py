"""Shared fixtures: real databases (SQLite, PostgreSQL, MariaDB), migrated once per session.

PostgreSQL and MariaDB come from INGESTER_TEST_POSTGRES_URL / INGESTER_TEST_MARIADB_URL
(a server URL; the tests create and drop their own database on it). When a URL is absent
the backend's tests are skipped, unless INGESTER_REQUIRE_DATABASES=1 (as `.ci/run` sets),
which turns the skip into a failure. `litellm_proxy`: the real LiteLLM proxy in front of a
simulator (tests/litellm_proxy.py), skipped or failed the same way without its venv.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from ingester.database import make_engine, migrate
from ingester.models import metadata
from tests.litellm_proxy import LiteLLMProxy, running_litellm_proxy

BACKENDS = ("sqlite", "postgresql", "mariadb")
_ENV = {"postgresql": "INGESTER_TEST_POSTGRES_URL", "mariadb": "INGESTER_TEST_MARIADB_URL"}


def server_url(backend: str) -> str | None:
    """The configured server URL of a backend, or None."""
    return os.environ.get(_ENV[backend]) or None


def _unavailable(backend: str) -> None:
    msg = f"{backend} tests need {_ENV[backend]}"
    if os.environ.get("INGESTER_REQUIRE_DATABASES") == "1":
        pytest.fail(f"{msg} (INGESTER_REQUIRE_DATABASES=1: database tests must not be skipped)")
    pytest.skip(msg)


def create_database(backend: str, tmp: Path) -> tuple[str, Engine | None]:
    """A fresh empty database on `backend`: (its URL, an admin engine to drop it with)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'mirror.db'}", None
    base = server_url(backend)
    if base is None:
        _unavailable(backend)
        raise AssertionError("unreachable")
    name = f"ingester_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    return make_url(base).set(database=name).render_as_string(hide_password=False), admin


def drop_database(admin: Engine | None, url: str) -> None:
    """Drop a database made by create_database."""
    if admin is None:
        return
    name = make_url(url).database
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database URL per backend, shared by the session (tables emptied per test)."""
    url, admin = create_database(request.param, tmp_path_factory.mktemp(request.param))
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    drop_database(admin, url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty, migrated database of each backend."""
    eng = make_engine(db_url)
    with eng.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def litellm_proxy() -> Iterator[LiteLLMProxy]:
    """The real LiteLLM proxy in front of a simulator, started once a session (`serve` a world)."""
    with running_litellm_proxy() as proxy:
        yield proxy


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, un-migrated database URL (parametrize indirectly with a backend name)."""
    backend = getattr(request, "param", "sqlite")
    url, admin = create_database(backend, tmp_path)
    yield url
    drop_database(admin, url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tier (kills, outages) runs only with INGESTER_SLOW=1, as `.ci/run` sets."""
    if os.environ.get("INGESTER_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: set INGESTER_SLOW=1 (.ci/run does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
