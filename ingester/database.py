"""Engines and schema: connect to any of the three backends, migrate, check the head.

Only `cli` and `daemon` call `make_engine`; the rest receive an engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from .config import Secret
from .errors import ConfigError, SchemaError, StoreError


def make_engine(url: Secret | str, **kw: Any) -> Engine:
    """An engine for `url` with the per-backend settings the store relies on."""
    raw = url.reveal() if isinstance(url, Secret) else url
    try:
        u = make_url(raw)
    except ArgumentError:
        raise ConfigError("the database URL is not a valid SQLAlchemy URL") from None
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    if u.get_backend_name() == "sqlite":
        kw.setdefault("connect_args", {"timeout": 30})
    else:
        kw.setdefault("pool_pre_ping", True)
        kw.setdefault("pool_size", 2)
    try:
        engine = sa.create_engine(u, **kw)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"no driver for {u.drivername}: install ingester[postgres] or ingester[mysql] ({exc})"
        ) from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        sa.event.listen(engine, "connect", _postgres_settings)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (status, SQL users) never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
    # A backfill inserts into random places of the id indexes: a 16 MiB page cache (default
    # 2 MiB) and a checkpoint every ~40 MB of WAL (default ~4 MB) cut its writes. The cache
    # is per connection and grows with the mirror: 16 MiB keeps the peak RSS of a backfill
    # of 1,000,000 jobs within 1.02x of 100,000 (bench/README.md, section 4).
    cur.execute("PRAGMA cache_size=-16384")
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _postgres_settings(dbapi_conn: Any, _record: Any) -> None:
    # Plan every execution for the table as it is now. The driver prepares statements it
    # runs often, and a generic plan made while `video_jobs` was small (a fresh mirror being
    # backfilled) reads the whole table for each page's lookup by id until the next ANALYZE.
    cur = dbapi_conn.cursor()
    cur.execute("SET plan_cache_mode = force_custom_plan")
    cur.close()
    dbapi_conn.commit()


def safe_url(engine: Engine) -> str:
    """The engine's URL with the password hidden."""
    return engine.url.render_as_string(hide_password=True)


def migrations_dir() -> Path:
    """Where the Alembic scripts are: in the installed package, or the checkout's migrations/."""
    try:
        packaged = Path(str(resources.files("ingester.migrations")))
        if (packaged / "env.py").is_file():
            return packaged
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at our scripts, handing `engine` to env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


@contextmanager
def translated(what: str, *also: type[Exception]) -> Iterator[None]:
    """Driver errors within become a one-line StoreError: `what`, then the driver's words.

    The one place they are translated; the SQL statement and its parameters (which may hold
    user data) are left out.
    """
    caught: tuple[type[Exception], ...] = (SQLAlchemyError, *also)
    try:
        yield
    except caught as exc:
        orig = getattr(exc, "orig", None) or exc
        raise StoreError(f"{what}: {' '.join(str(orig).split())[:300]}") from exc


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision`."""
    with translated(f"migration failed on {safe_url(engine)}"):
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to `revision`."""
    with translated(f"downgrade failed on {safe_url(engine)}"):
        command.downgrade(alembic_config(engine), revision)


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(current revision of the database, head revision of the scripts)."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    with translated(f"cannot reach the database {safe_url(engine)}"), engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def require_head(engine: Engine) -> None:
    """Raise SchemaError unless the database schema is at the migration head."""
    current, head = schema_revision(engine)
    if current != head:
        state = "empty" if current is None else f"at {current}"
        raise SchemaError(
            f"the database schema is {state}, not at {head}: run `ingester migrate` first"
        )
