"""The console's own database: its Alembic revisions build exactly the tables its models
describe (on SQLite here, on PostgreSQL when the tests have one), and a second migrate does
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.console.db import ConsoleDb
from adapters.console.models import Base


def _differences(url: str) -> list[object]:
    db = ConsoleDb(url)
    try:
        db.migrate()
        db.migrate()
        assert db.current()
        with db.engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        db.dispose()


def test_migrations_build_the_models_on_sqlite(tmp_path: Path) -> None:
    assert _differences(f"sqlite:///{tmp_path}/console.db") == []


@pytest.mark.postgres
def test_migrations_build_the_models_on_postgres(postgres_url: str) -> None:
    assert _differences(postgres_url) == []
