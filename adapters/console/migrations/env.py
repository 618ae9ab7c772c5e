"""Alembic environment of the console's own database (adapters/console/db.py runs it)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from adapters.console.models import Base

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = create_engine(str(config.attributes["url"]))
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
