"""Two `stophub serve` processes on one PostgreSQL database: every clock step fires once.

Each process runs its own APScheduler sweep every 0.5 s over the same clock rows; the
sweeps claim due rows with SELECT … FOR UPDATE SKIP LOCKED. Reports go to both processes;
after every step of every clock fell due, the SLA log and the outbox hold each step once.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hub.crypto.keys import PrivateKey, save_private_key
from stophub.v1 import case_pb2, case_pb2_grpc
from tests.e2e.test_restart import (
    DUE_AFTER,
    RECIPIENTS,
    STEPS,
    Hub,
    clock_notices,
    read,
    register_members,
    short_verify_policy,
)
from tests.e2e.wire_helpers import report, sign

REPORTS = 12


def test_two_hub_processes_fire_each_step_once(tmp_path: Path, postgres_url: str) -> None:
    from hub.store.tables import sla_log

    hub_key = PrivateKey.generate()
    keys = register_members(postgres_url)
    policy = short_verify_policy(tmp_path / "policy.toml")
    hubs = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        save_private_key(hub_key, home / "hub.key")
        hubs.append(Hub(home, postgres_url, policy))
    try:
        for hub in hubs:
            hub.start()
        for i in range(REPORTS):
            hub = hubs[i % 2]
            now = datetime.now(UTC)
            with hub.channel("BANKA") as channel:
                case_pb2_grpc.CaseServiceStub(channel).CreateReport(
                    case_pb2.CreateReportRequest(
                        envelope=sign(keys["BANKA"], "BANKA", report(now), now)
                    ),
                    timeout=10,
                )
        # Until every step of every verify clock fired (the last falls due 12 s after its
        # report), with both hubs sweeping all the while.
        expected = REPORTS * len(STEPS)
        deadline = time.monotonic() + max(DUE_AFTER.values()) + 20
        while len([r for r in read(postgres_url, sla_log) if r.event in STEPS]) < expected:
            assert time.monotonic() < deadline, hubs[0].output() + hubs[1].output()
            time.sleep(0.5)
        time.sleep(1.5)  # a few more sweeps by both, which must fire nothing
        for hub in hubs:
            assert hub.proc is not None and hub.proc.poll() is None, hub.output()
            assert hub.sweeps_run() > 3, "both processes were sweeping"
    finally:
        for hub in hubs:
            if hub.proc is not None and hub.proc.poll() is None:
                hub.kill()

    fired = Counter((r.clock_id, r.event) for r in read(postgres_url, sla_log) if r.event in STEPS)
    assert len(fired) == expected and set(fired.values()) == {1}, fired
    notices = Counter(
        (n.clock_step.clock.clock_id, step, to) for step, to, n in clock_notices(postgres_url)
    )
    assert set(notices.values()) == {1}
    assert len(notices) == REPORTS * sum(len(RECIPIENTS[s]) for s in STEPS)
