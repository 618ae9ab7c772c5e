"""Integration fixtures: a migrated database behind a real SqlStore, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.bootstrap import migrate
from hub.store.sql import SqlStore
from tests.integration.test_hub_on_db import net  # noqa: F401  (shared by other modules)


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    """`database_url` migrated to head, with the store the hub would use on it."""
    migrate(database_url)
    sql_store = SqlStore(database_url)
    try:
        yield sql_store
    finally:
        sql_store.dispose()
