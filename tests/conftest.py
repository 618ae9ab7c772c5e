"""Shared fixtures: a time that tests control, and the test database URLs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from hub.clock import ManualClock

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
PG_URL_VAR = "STOPHUB_TEST_DATABASE_URL"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def _postgres_url() -> str | None:
    return os.environ.get(PG_URL_VAR) or None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards."""
    base = _postgres_url()
    if base is None:
        pytest.skip(f"{PG_URL_VAR} is not set: PostgreSQL tests run in CI (.ci/run sets it)")
    from hub.store.sql import normalise_url

    admin_url = normalise_url(base)
    name = f"stophub_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """Each integration test runs on the embedded default and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hub.db"
    else:
        yield request.getfixturevalue("postgres_url")
