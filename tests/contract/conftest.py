"""The metadata database for the contract suites: SQLite, and PostgreSQL when OPENSAGE_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from opensage.store.sql import SqlStore, open_store

PG_URL = os.environ.get("OPENSAGE_TEST_POSTGRES_URL", "")


def _fresh_pg_database() -> str:
    name = f"opensage_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'opensage.db'}"
        return
    if not PG_URL:
        pytest.skip("OPENSAGE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL and sets it)")
    url = _fresh_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(url)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(db_url, tmp_path / "master.key")
    try:
        yield s
    finally:
        s.close()
