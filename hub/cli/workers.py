"""`stophub serve --workers N`: N hub processes on one host, sharing one port (ADR 22).

Each worker is a whole `stophub serve` of its own, a replica like those on other hosts: it
listens on the same address (gRPC sets SO_REUSEPORT on Linux, so the kernel spreads new
connections over the workers), wakes the others through PostgreSQL, sweeps clocks with them.
This parent process only starts, watches and stops them:

- it migrates the schema once, starts the first worker and waits until it listens (so a new
  database's hub registration is done by one), then starts the rest;
- SIGTERM or SIGINT to it is passed to every worker, which stops as `serve` does; SIGHUP is
  passed on too (data keys reloaded);
- a worker gets SIGTERM when the parent dies, however it dies (Linux's parent-death signal);
- a worker that exits on its own is not restarted: the parent stops the others and exits
  non-zero naming it, so the supervisor that started `serve` (systemd, Kubernetes) sees one
  failed hub and restarts it whole, instead of a host serving at a fraction of its size
  without anybody knowing;
- with `--metrics-address HOST:PORT`, worker i serves its metrics on PORT + i.

SQLite allows one hub process: several workers are refused there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

import click

from hub import bootstrap
from hub.cli.common import announce
from hub.observability import logs as observability_logs
from hub.observability.metrics import parse_address
from hub.store.sql import normalise_url

# Options the parent gives each worker itself.
_OWN = ("--workers", "--metrics-address", "--migrate", "--no-migrate")
# How long a worker may take to stop after SIGTERM, beyond its --drain-seconds, before it is
# killed.
STOP_GRACE = 10.0
# How long the first worker may take to listen (migrations are done by then).
START_TIMEOUT = 120.0


def refuse_sqlite(database_url: str, workers: int) -> None:
    if workers > 1 and normalise_url(database_url).startswith("sqlite"):
        raise click.ClickException(
            f"--workers {workers} needs PostgreSQL: SQLite allows one hub process (one writer); "
            "run one worker, or serve a PostgreSQL database (--db postgresql://...)"
        )


def worker_args(argv: Sequence[str], metrics_address: str | None) -> list[str]:
    """The command line of one worker: the parent's, without the options it sets itself."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN:
            # `--workers 4` takes the next word; `--workers=4` and the flags do not.
            skip = "=" not in arg and name in ("--workers", "--metrics-address")
            continue
        args.append(arg)
    args += ["--workers", "1", "--no-migrate"]
    if metrics_address is not None:
        args += ["--metrics-address", metrics_address]
    return args


def metrics_address_of(given: str | None, index: int) -> str | None:
    if given is None:
        return None
    host, port = parse_address(given)
    return f"{host}:{port + index}" if port else given


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the worker, before it runs: SIGTERM when the parent dies, even by SIGKILL, so no
    worker serves on unwatched (Linux; elsewhere the parent's own stop must do)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


class Workers:
    """The running workers and the signals that reach the parent."""

    def __init__(
        self, count: int, argv: Sequence[str], metrics_address: str | None, drain_seconds: float
    ) -> None:
        self.count = count
        self.drain_seconds = drain_seconds
        self.argv = list(argv)
        self.metrics_address = metrics_address
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.env = {k: v for k, v in os.environ.items() if k != "STOPHUB_METRICS_ADDRESS"}

    def spawn(self, index: int) -> subprocess.Popen[bytes]:
        args = worker_args(self.argv, metrics_address_of(self.metrics_address, index))
        env = {**self.env, observability_logs.ENV_WORKER: str(index + 1)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", *args], env=env, preexec_fn=_die_with_parent
        )
        self.procs.append(proc)
        return proc

    def signal_all(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def stop_all(self) -> None:
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + STOP_GRACE
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.signal_all(signum)
        else:
            self.stopping = True

    def dead(self) -> tuple[int, subprocess.Popen[bytes]] | None:
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                return index, proc
        return None


def run(
    count: int,
    address: str,
    argv: Sequence[str],
    *,
    database_url: str,
    migrate: bool,
    metrics_address: str | None,
    drain_seconds: float,
) -> None:
    """Start `count` workers serving `address` (after migrating `database_url` if `migrate`);
    return when SIGTERM stopped them all, or raise a one-line error when one exited by
    itself. `argv`: the parent's command line, after the program's name."""
    if address.rpartition(":")[2] in ("", "0"):
        raise click.ClickException(
            f"--workers {count} needs a fixed port in --address (not {address!r}): every "
            "worker listens on the same one"
        )
    if migrate:
        bootstrap.migrate(database_url)  # once, before any worker opens the database
    workers = Workers(count, argv, metrics_address, drain_seconds)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, workers.on_signal)
    failed: str | None = None
    try:
        first = workers.spawn(0)
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(address):
            if workers.stopping:
                return
            if first.poll() is not None:
                failed = f"the first worker (pid {first.pid}) exited with code {first.returncode}"
                break
            if time.monotonic() > deadline:
                failed = f"the first worker did not listen on {address} in {START_TIMEOUT:.0f} s"
                break
            time.sleep(0.1)
        if failed is None:
            for index in range(1, count):
                workers.spawn(index)
            pids = ", ".join(str(p.pid) for p in workers.procs)
            announce(f"{count} workers serving on {address} (pids {pids})")
        while failed is None and not workers.stopping:
            ended = workers.dead()
            if ended is not None:
                index, proc = ended
                failed = f"worker {index + 1} (pid {proc.pid}) exited with code {proc.returncode}"
                break
            time.sleep(0.2)
    finally:
        workers.stop_all()
    if failed is not None:
        raise click.ClickException(
            f"{failed}; the other workers were stopped: read its lines above, then start "
            "`stophub serve` again"
        )
