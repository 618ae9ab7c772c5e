"""Case clocks survive a crash: `stophub serve` killed with SIGKILL and started again.

The hub runs as a real process on a SQLite file with a policy whose verify clock is six
seconds long (reminder at 3 s, breach at 6 s, escalation to the regulator at 12 s). It is
killed right after it answers a report, stays down past all three steps, and is started
again: each step fires once, late by about the downtime, with one notice per recipient. A
second crash and start fires nothing again. The waiting is real wall-clock time (about 25 s).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select

from adapters.sdk.client import tls_credentials, tls_options
from hub.bootstrap import migrate
from hub.cli import main
from hub.crypto import pki
from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey, save_private_key
from hub.domain.institutions import InstitutionKind
from hub.service import sweep as sla
from hub.service.admin import Registry
from hub.store.sql import SqlStore
from hub.store.tables import clocks, deliveries, sla_log
from hub.system.clock import SystemClock
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import case_pb2, case_pb2_grpc, delivery_pb2, envelope_pb2
from tests.e2e.conftest import CHILDREN
from tests.e2e.wire_helpers import report, sign
from tests.support import add_members

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = {
    "CENTRE": InstitutionKind.ANTI_FRAUD_CENTRE,
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "REG": InstitutionKind.REGULATOR,
}
STEPS = ("reminder", "breach", "regulator")
# When each step of the short verify clock falls due, after the report arrived.
DUE_AFTER = {"reminder": 3.0, "breach": 6.0, "regulator": 12.0}
RECIPIENTS = {"reminder": {"BANKA"}, "breach": {"BANKA", "CENTRE"}, "regulator": {"REG"}}
ON_TIME = sla.ON_TIME.total_seconds()  # steps later than this are marked late


def short_verify_policy(path: Path) -> Path:
    """The default policy with a 6-second verify clock; every other clock as shipped."""
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    block = re.search(r"^\[clocks\.verify\]\n(?:[^\[].*\n)*", text, re.MULTILINE)
    assert block is not None
    short = re.sub(r'^window = ".*"$', 'window = "6 seconds"', block.group(0), flags=re.M)
    short = re.sub(
        r"^ladder = .*$",
        'ladder = ["reminder@50%", "breach@100%", "regulator@200%"]',
        short,
        flags=re.M,
    )
    assert short != block.group(0)
    path.write_text(text.replace(block.group(0), short), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hub:
    """`python -m hub.cli serve` as a child process, started and killed by the test.

    It serves mutual TLS with a PKI made in `tmp_path/pki` (`stophub pki` files); open
    channels to it with `channel(code)`, which presents `code`'s client certificate."""

    def __init__(
        self, tmp_path: Path, db_url: str, policy: Path, *, args: tuple[str, ...] = ()
    ) -> None:
        self.tmp_path, self.db_url, self.policy = tmp_path, db_url, policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.target = ""
        self.metrics = ""
        self.runs = 0
        self.pki_dir = tmp_path / "pki"
        # More `serve` options, after those given here (`args`, or set before a start).
        self.extra: list[str] = list(args)
        self._issuing = threading.Lock()
        if not pki.has_server_material(self.pki_dir):
            pki.init(self.pki_dir, datetime.now(UTC))

    def tls(self, code: str) -> pki.TlsConfig:
        """`code`'s client certificate from this hub's CA, issued on first use (under a
        lock: a test may open its members' channels from several threads)."""
        with self._issuing:
            if not (self.pki_dir / pki.client_cert_file(code)).exists():
                pki.issue(self.pki_dir, code, datetime.now(UTC))
            return pki.client_tls(self.pki_dir, code)

    def channel(self, code: str) -> grpc.Channel:
        """A blocking channel to the hub over mutual TLS as member `code`."""
        tls = self.tls(code)
        return grpc.secure_channel(self.target, tls_credentials(tls), options=tls_options(tls))

    @property
    def log_file(self) -> Path:
        return self.tmp_path / f"serve-{self.runs}.log"

    def start(self, *, same_address: bool = False) -> None:
        """Start the process (again); on the address of its last run if `same_address`."""
        self.runs += 1
        if not (same_address and self.target):
            self.target = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hub.cli",
                    "serve",
                    "--address",
                    self.target,
                    "--db",
                    self.db_url,
                    "--hub-key",
                    str(self.tmp_path / "hub.key"),
                    "--policy",
                    str(self.policy),
                    "--tls-dir",
                    str(self.pki_dir),
                    "--metrics-address",
                    self.metrics,
                    *self.extra,
                ],
                cwd=ROOT,
                env={k: v for k, v in os.environ.items() if k != "STOPHUB_DATABASE_URL"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        CHILDREN.add(self.proc)
        # Any certificate from the CA gets through the handshake; readiness is all this asks.
        with self.channel("PROBE") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=30)
            except grpc.FutureTimeoutError:
                self.kill()
                raise AssertionError(f"the hub did not start:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")

    def sweeps_run(self) -> int:
        """Sweeps this run of the process has finished, whatever their outcome (its
        `stophub_clock_sweeps_total`)."""
        return int(self.metric("stophub_clock_sweeps_total"))

    def metric(self, name: str, unreachable: float | None = None) -> float:
        """The sum of metric `name`'s samples now; `unreachable` when the process does not
        answer (None: an AssertionError with its output)."""
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as page:
                text = page.read().decode()
        except OSError as err:
            if unreachable is not None:
                return unreachable
            raise AssertionError(f"no metrics from the hub ({err}):\n{self.output()}") from None
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def wait_for_sweeps(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sweeps_run() < count:
            assert time.monotonic() < deadline, f"no sweep ran:\n{self.output()}"
            time.sleep(0.1)


def register_members(db_url: str) -> dict[str, PrivateKey]:
    migrate(db_url)
    store = SqlStore(db_url)
    keys = add_members(Registry(store, SystemClock()), MEMBERS)
    store.dispose()
    return keys


def read(db_url: str, table: Any) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table)))
    finally:
        engine.dispose()


def aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def clock_notices(db_url: str) -> list[tuple[str, str, delivery_pb2.Notice]]:
    out = []
    for row in read(db_url, deliveries):
        notice = delivery_pb2.Notice.FromString(envelope_pb2.Envelope.FromString(row.envelope).body)
        if notice.HasField("clock_step"):
            out.append((notice.clock_step.step, row.recipient, notice))
    return out


def test_clocks_fire_once_each_after_a_crash(tmp_path: Path) -> None:
    hub_key = PrivateKey.generate()
    save_private_key(hub_key, tmp_path / "hub.key")
    db_url = f"sqlite:///{tmp_path}/hub.db"
    keys = register_members(db_url)
    hub = Hub(tmp_path, db_url, short_verify_policy(tmp_path / "policy.toml"))

    hub.start()
    # Serving without a list key is allowed, and said once.
    assert hub.output().count("no list key (") == 1, hub.output()
    now = datetime.now(UTC)
    envelope = sign(keys["BANKA"], "BANKA", report(now), now)
    with hub.channel("BANKA") as channel:
        answer = case_pb2_grpc.CaseServiceStub(channel).CreateReport(
            case_pb2.CreateReportRequest(envelope=envelope), timeout=10
        )
    hub.kill()  # right after the answer: nothing of the verify clock was due yet
    crashed_at = datetime.now(UTC)
    assert verify_envelope(answer.envelope, hub_key.public_key)
    case_id = case_pb2.Case.FromString(answer.envelope.body).case_id

    (verify,) = [c for c in read(db_url, clocks) if c.kind == "verify"]
    assert verify.case_id == case_id and verify.state == "open"
    started = aware(verify.started_at)
    due = {step: started + timedelta(seconds=s) for step, s in DUE_AFTER.items()}
    assert aware(verify.deadline_at) == due["breach"]
    assert {r.event for r in read(db_url, sla_log)} <= {"started", "met"}, "fired before crash"

    # Down until well past the last step (and past the on-time grace), then up again.
    time.sleep(max(0.0, (due["regulator"] - datetime.now(UTC)).total_seconds() + ON_TIME + 1))
    restarted_at = datetime.now(UTC)
    hub.start()
    hub.wait_for_sweeps(1)
    deadline = time.monotonic() + 10
    while len([r for r in read(db_url, sla_log) if r.event in STEPS]) < 3:
        assert time.monotonic() < deadline, hub.output()
        time.sleep(0.2)
    hub.wait_for_sweeps(hub.sweeps_run() + 2)  # and a couple more, which must fire nothing

    fired = [r for r in read(db_url, sla_log) if r.event in STEPS]
    assert Counter(r.event for r in fired) == Counter(STEPS), fired
    for r in fired:
        assert r.clock_id == verify.clock_id
        assert aware(r.due_at) == due[r.event]
        assert aware(r.at) >= restarted_at, "fired by the restarted hub, on recovery"
        # Late by about the downtime: from its due time to when the hub came back.
        assert r.late_seconds == pytest.approx((aware(r.at) - due[r.event]).total_seconds())
        assert r.late_seconds > ON_TIME
        assert r.late_seconds >= (restarted_at - due[r.event]).total_seconds()
        assert r.late_seconds < (restarted_at - due[r.event]).total_seconds() + 15
        assert aware(r.at) - crashed_at > timedelta(seconds=12)
    notices = clock_notices(db_url)
    assert Counter((step, to) for step, to, _ in notices) == Counter(
        {(step, to): 1 for step in STEPS for to in RECIPIENTS[step]}
    )
    for _, _, notice in notices:
        assert notice.case_id == case_id
        assert notice.clock_step.late.ToTimedelta() > timedelta(seconds=ON_TIME)
        assert "late" in notice.summary, notice.summary
    after_first_recovery = (read(db_url, sla_log), read(db_url, deliveries))

    # A second crash and start: the steps are done and nothing fires again.
    hub.kill()
    hub.start()
    hub.wait_for_sweeps(3)
    hub.kill()
    assert (read(db_url, sla_log), read(db_url, deliveries)) == after_first_recovery
    (verify,) = [c for c in read(db_url, clocks) if c.kind == "verify"]
    assert verify.state == "ended" and verify.steps_done == 3 and verify.breached


def test_a_bad_policy_file_stops_serve_naming_the_line(tmp_path: Path) -> None:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    bad = tmp_path / "bad.toml"
    lines = DEFAULT_POLICY.read_text(encoding="utf-8").splitlines()
    line = lines.index('window = "5 minutes"') + 1  # the verify clock's
    lines[line - 1] = 'window = "5 fortnights"'
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "never.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--address",
            f"127.0.0.1:{free_port()}",
            "--db",
            f"sqlite:///{db}",
            "--hub-key",
            str(tmp_path / "hub.key"),
            "--policy",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert f"bad.toml, line {line}:" in message and "5 fortnights" in message
    assert not db.exists(), "a refused start touches no database"


@pytest.mark.parametrize(
    "change, needle",
    [
        (('ladder = ["breach@100%"]', 'ladder = ["nap@100%"]'), "unknown kind 'nap'"),
        (('responsible = "reporter"', 'responsible = "nobody"'), "'nobody'"),
        (("[clocks.stop]", "[clocks.stop"), "line"),
    ],
)
def test_other_bad_policies_are_refused_with_their_line(
    tmp_path: Path, change: tuple[str, str], needle: str
) -> None:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    old, new = change
    line = text[: text.index(old)].count("\n") + 1
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--db",
            f"sqlite:///{tmp_path}/never.db",
            "--hub-key",
            str(tmp_path / "hub.key"),
            "--policy",
            str(bad),
        ],
    )
    assert result.exit_code == 1, result.output
    assert f"line {line}" in result.output and needle in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "never.db").exists()
