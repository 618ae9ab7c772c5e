"""Helpers the test layers and bench/ share: plain functions and classes, no pytest, so a
benchmark can use them without the test runner (the fixtures that wrap them stay in the
conftest and test modules)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from hub.store.sql import normalise_url


@contextmanager
def throwaway_database(base_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named `prefix` + a random suffix on the server `base_url`
    points at; its URL is yielded, and the database is dropped afterwards (whoever is still
    connected is cut off first)."""
    admin_url = normalise_url(base_url)
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
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
