"""`serve --workers`: what each worker is started with (hub/cli/workers.py)."""

from __future__ import annotations

import click
import pytest

from hub.cli.workers import metrics_address_of, refuse_sqlite, worker_args


def test_a_worker_gets_the_parents_line_without_what_the_parent_sets() -> None:
    argv = [
        "--log-format", "json", "serve", "--workers", "4", "--address", "0.0.0.0:7443",
        "--metrics-address=0.0.0.0:9464", "--migrate", "--db", "postgresql://h/db",
        "--workers=4",
    ]  # fmt: skip
    assert worker_args(argv, "0.0.0.0:9466") == [
        "--log-format", "json", "serve", "--address", "0.0.0.0:7443", "--db",
        "postgresql://h/db", "--workers", "1", "--no-migrate", "--metrics-address",
        "0.0.0.0:9466",
    ]  # fmt: skip
    assert "--metrics-address" not in worker_args(["serve", "--metrics-address", "h:1"], None)


def test_metrics_ports_follow_the_worker_and_sqlite_is_refused() -> None:
    assert [metrics_address_of("127.0.0.1:9464", i) for i in range(3)] == [
        "127.0.0.1:9464",
        "127.0.0.1:9465",
        "127.0.0.1:9466",
    ]
    assert metrics_address_of(None, 2) is None
    refuse_sqlite("sqlite:///var/hub.db", 1)
    refuse_sqlite("postgresql://h/db", 8)
    for url in ("sqlite:///var/hub.db", "var/hub.db"):
        with pytest.raises(click.ClickException, match="--workers 2 needs PostgreSQL"):
            refuse_sqlite(url, 2)
