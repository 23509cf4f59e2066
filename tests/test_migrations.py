"""Alembic: up, down, up again on every backend; models and migrations never drift."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ingester.database import downgrade, make_engine, migrate, require_head, schema_revision
from ingester.errors import SchemaError
from ingester.models import metadata

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"video_jobs", "video_job_transitions", "sync_runs", "sync_errors", "sync_state"}


@pytest.mark.parametrize("fresh_db", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_upgrade_downgrade_upgrade_and_no_pending_diff(fresh_db: str) -> None:
    engine = make_engine(fresh_db)
    with pytest.raises(SchemaError, match="ingester migrate"):
        require_head(engine)
    migrate(engine)
    require_head(engine)
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    downgrade(engine, "base")
    assert not TABLES & set(sa.inspect(engine).get_table_names())
    assert schema_revision(engine)[0] is None
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("video_jobs")}
    assert {"ix_video_jobs_status", "ix_video_jobs_created_at", "ix_video_jobs_model"} <= names
    engine.dispose()


def test_migrate_works_from_an_installed_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    wheel = next(dist.glob("ingester-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    # The wheel's dependencies come from this environment's site-packages via a .pth file,
    # so the test needs no network; the ingester package itself comes only from the wheel.
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    py = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTER_")}
    env["PYTHONPATH"] = ""
    where = subprocess.run(
        [str(py), "-c", "import ingester, ingester.migrations as m; print(ingester.__file__); "
         "print(m.__file__)"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(site) in where and str(ROOT) not in where, where
    db = workdir / "mirror.db"
    out = subprocess.run(
        [str(py), "-m", "ingester.cli", "--database-url", f"sqlite:///{db}", "migrate"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "schema at" in out.stdout
    engine = make_engine(f"sqlite:///{db}")
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    require_head(engine)
