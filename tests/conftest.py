"""Shared fixtures: a time that tests control, the test database URLs, and data keys."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hub.crypto import fields
from hub.render import wording
from hub.system.clock import ManualClock

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
PG_URL_VAR = "STOPHUB_TEST_DATABASE_URL"


@pytest.fixture(scope="session", autouse=True)
def data_keys() -> Iterator[fields.Keyring]:
    """Every test seals personal data under one test keyring; `stophub` processes the tests
    start inherit it through the environment."""
    ring = fields.Keyring.generate("dk-test")
    inline = f"{ring.current}:{base64.b64encode(ring.keys[ring.current]).decode()}"
    saved = {k: os.environ.pop(k, None) for k in (fields.ENV_KEYS, fields.ENV_FILE)}
    os.environ[fields.ENV_KEYS] = inline
    fields.configure(ring)
    try:
        yield ring
    finally:
        fields.configure(None)
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _data_keys_restored(data_keys: fields.Keyring) -> Iterator[None]:
    # The demo and `stophub` commands run in-process configure keyrings of their own.
    yield
    fields.configure(data_keys)


@pytest.fixture(autouse=True)
def _display_zone_restored() -> Iterator[None]:
    # `stophub` commands run in-process set the process's display zone (--tz, the policy's).
    zone = wording.display_zone()
    yield
    wording.set_display_zone(zone)


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
    from tests.support import throwaway_database

    with throwaway_database(base, "stophub_t_") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """Each integration test runs on the embedded default and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hub.db"
    else:
        yield request.getfixturevalue("postgres_url")
