"""`serve --workers`: what each worker is started with (hub/cli/workers.py)."""

from __future__ import annotations

import click
import pytest

from hub.cli import workers as workers_module
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


def test_each_worker_is_told_its_number_for_its_log_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[dict[str, str]] = []

    class Recorded:
        def __init__(self, args: list[str], env: dict[str, str], preexec_fn: object) -> None:
            started.append(env)

    monkeypatch.setattr(workers_module.subprocess, "Popen", Recorded)
    monkeypatch.setenv("STOPHUB_WORKER", "9")  # a parent that is itself a worker's child
    pool = workers_module.Workers(3, ["serve", "--workers", "3"], None, 1.0)
    for index in range(3):
        pool.spawn(index)
    assert [env["STOPHUB_WORKER"] for env in started] == ["1", "2", "3"]
