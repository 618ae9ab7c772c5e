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
        run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
run_migrations_online()
