"""Alembic environment: the URL comes from the caller (stophub migrate) or the environment."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from hub.store.sql import make_engine
from hub.store.tables import metadata

config = context.config


def database_url() -> str:
    url = config.attributes.get("url") or os.environ.get("STOPHUB_DATABASE_URL")
    if not url:
        raise SystemExit("set STOPHUB_DATABASE_URL or pass --db to `stophub migrate`")
    return str(url)


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = make_engine(database_url())
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            run_sqlite(conn)
        else:
            run(conn)
    engine.dispose()


def run_sqlite(conn: Connection) -> None:
    """SQLite changes a column's type by copying the table and dropping the old one; with
    foreign keys enforced, dropping a referenced table fails. The pragma only takes effect
    outside a transaction, so it is set on the raw connection before the migration begins,
    and the keys are checked before they are enforced again."""
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        run(conn)
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise SystemExit(f"the migration left foreign keys broken: {broken[:10]}")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
run_migrations_online()
