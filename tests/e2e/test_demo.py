"""`stophub demo` runs the whole case, on a slow hub too, prints no error or warning, says what
it waited for when a step does not come about, and leaves a database that the commands it
prints at the end read."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.bank import BankAgent
from adapters.blacklist import Form, Replica
from adapters.sdk import Delivery
from hub.api.delivery import DeliveryRouter
from hub.api.runner import Runner
from hub.cli import demo_cast, main
from hub.cli.demo_story import run_demo
from hub.cli.demo_views import inspect_commands, stophub_command
from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import load_private_key
from hub.crypto.listkey import load_list_key_file
from hub.domain.appeals import AppealState
from hub.domain.cases import CaseState, OrderKind, OrderState
from hub.domain.clocks import ClockState
from hub.render.screen import make_console
from hub.store.sql import SqlStore
from stophub.v1 import blacklist_pb2, delivery_pb2

ROOT = Path(__file__).resolve().parents[2]


def complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines at WARNING or above a run printed: a demo prints none."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ]


class _Offline:
    """The demo's copy, opened to read it: never syncs, checks checkpoints with the hub's key."""

    def __init__(self, hub_public_key: bytes) -> None:
        self.hub_public_key = hub_public_key

    def sync_list(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise AssertionError("not syncing")

    def open_checkpoint(self, envelope: Any) -> blacklist_pb2.ListCheckpoint:
        assert verify_envelope(envelope, self.hub_public_key)
        return blacklist_pb2.ListCheckpoint.FromString(envelope.body)


async def test_demo_carries_the_case_to_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Where `make demo` runs it: relative to the directory it was started in.
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    status = await run_demo(Path("demo"), make_console(file=out, width=160))
    text = out.getvalue()
    assert status == 0, text
    assert complaints(caplog) == []
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            second, case = uow.cases.list(None, 10, None)  # newest first
    finally:
        store.dispose()
    assert case.state is CaseState.CLOSED and second.state is CaseState.CLOSED
    assert case.loss_fen == case.returned_fen == 5_000_000
    # The hub followed the money three layers deep, in the centre's name.
    stops = [o for o in case.orders if o.kind is OrderKind.STOP]
    assert [(o.account_institution, o.layer) for o in stops] == [
        ("BANKB", 1),
        ("PAYX", 2),
        ("BANKA", 3),
    ]
    assert all(o.auto_stop_rule_id and o.authorization_envelope for o in stops)
    assert [o.upstream_order_id for o in stops] == ["", stops[0].order_id, stops[1].order_id]
    assert all(o.state is OrderState.CONVERTED for o in stops)
    assert all(o.answer_envelope for o in case.orders), "every answer is kept as signed bytes"
    # The second victim's money reached the same mule: one share of the mule's freeze each.
    returns = [o for c in (case, second) for o in c.orders if o.kind is OrderKind.RETURN]
    paid = {
        (o.beneficiary_case_id, o.account_institution, o.account_number): o.returned_fen
        for o in returns
        if o.account_institution == "PAYX"
    }
    assert paid == {(second.case_id, "PAYX", "PX88000007"): 400_000}
    assert sum(o.returned_fen for o in returns) == 5_400_000
    assert "money trail of case" in text and "BEYOND REACH" in text
    assert "pro rata" in text and "traced" in text and "pooled" in text
    assert "signed messages of the case" in text and "¥50,000.00 back with the first" in text
    assert "re-verified with the" in text and "all good" in text
    assert re.search(
        r"audit log: \d+ entries in a Merkle tree .*, [1-9]\d* signed checkpoint", text
    )
    assert "intact" in text
    assert re.search(r"lead L\d{8}-[0-9A-F]{8} \(red\)", text)
    assert "refused from PayX's own copy before any money moved" in text
    assert "appear nowhere in stophub.db" in text
    assert "serving mutual TLS" in text
    assert (tmp_path / "demo" / f"trail-{case.case_id}.svg").exists()

    # PayX answers its stop 12 minutes (of case time) late: reminded, then breached.
    appeal_ids = list(dict.fromkeys(re.findall(r"A\d{8}-[0-9A-F]{8}", text)))
    key = load_list_key_file(tmp_path / "demo" / "list-key.json")
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            clocks = uow.clocks.query(
                institution="PAYX",
                case_id=case.case_id,
                open_only=False,
                breached_only=False,
                limit=50,
                offset=0,
            )
            late_stop = next(c for c in clocks if c.kind == "stop")
            steps = [e.event for e in uow.clocks.entries([late_stop.clock_id])[late_stop.clock_id]]
            list_state = uow.lists.state()
            appeals = sorted(
                (a for a in (uow.appeals.get(i) for i in appeal_ids) if a is not None),
                key=lambda a: a.filed_at,
            )
            others = uow.clocks.query(
                institution=None,
                case_id=case.case_id,
                open_only=False,
                breached_only=True,
                limit=50,
                offset=0,
            )
    finally:
        store.dispose()
    # The blacklist: three listings and one from Bank B's lead, one removed by the upheld
    # appeal; PayX's copy agrees.
    assert list_state.version == 5 and list_state.count == 3
    assert [a.state for a in appeals] == [AppealState.REJECTED, AppealState.UPHELD]
    hub_key = load_private_key(tmp_path / "demo" / "keys" / "hub.key").public_key
    demo_copy = tmp_path / "demo" / "payx-list.db"
    with Replica(demo_copy, _Offline(hub_key), Form.TOKENS, list_key=key) as copy:
        assert copy.version == 5 and copy.entry_count == 3
        assert copy.digest == list_state.token_digest.to_bytes(32, "big")
        assert copy.verify_local().ok
    assert "refused from PayX's own copy" in text and "is no longer listed" in text

    assert late_stop.state is ClockState.MISSED and late_stop.breached
    assert steps == ["started", "reminder", "breach", "missed"]
    assert [c.clock_id for c in others] == [late_stop.clock_id], "only the slow bank breached"
    assert late_stop.order_id == stops[1].order_id, "the wallet's downstream stop"
    assert "case clocks" in text and "clock_breach to CENTRE" in text

    shown = CliRunner().invoke(
        main, ["case", "show", case.case_id, "--db", f"sqlite:///{tmp_path}/demo/stophub.db"]
    )
    assert shown.exit_code == 0, shown.output
    assert "case.closed" in shown.output and "report → verified" in shown.output

    # The closing hint's commands, pasted into a shell where the demo ran, work as printed.
    hint = text.split("look at it again, from this directory:\n", 1)[1].splitlines()[:3]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOPHUB_")}
    for pasted in hint:
        assert f" {case.case_id} " in pasted
        done = await asyncio.to_thread(
            subprocess.run,
            pasted,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (pasted, done.stdout, done.stderr)
        assert case.case_id in done.stdout or "wrote sla.html" in done.stdout
    assert (tmp_path / "trail.svg").exists()
    assert case.case_id in (tmp_path / "sla.html").read_text(encoding="utf-8")
    assert "which --hub-key vouches for" in done.stdout  # the report's, last of the three


def test_the_hint_names_the_stophub_that_a_shell_here_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "stophub"
    assert script.exists(), "make install puts stophub beside the Python that runs the tests"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(ROOT)
    # After `make demo`, from the project directory: only .venv/bin/stophub exists.
    expected = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else str(script)
    assert stophub_command() == expected
    monkeypatch.chdir(tmp_path)
    assert stophub_command() == str(script)
    # With the environment activated, plain `stophub` is this one.
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert stophub_command() == "stophub"


def test_the_readme_shows_the_commands_make_demo_ends_with(monkeypatch: pytest.MonkeyPatch) -> None:
    # `make demo`: .venv in the project directory, run from there, .venv/bin not on PATH.
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not (venv_python.parent / "stophub").exists():
        pytest.skip("no .venv/bin/stophub here: `make install` makes it")
    monkeypatch.setattr(sys, "executable", str(venv_python))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(ROOT)
    printed = inspect_commands(Path("var/demo"), "sqlite:///var/demo/stophub.db", "<CASE_ID>")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in printed:
        assert command.startswith(".venv/bin/stophub ")
        assert f"\n{command}\n" in readme


async def test_demo_settles_on_a_slow_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The hub takes 0.4 s to look at each acknowledgement and 50 ms more for each request.
    Case time runs 120 times faster, so the acknowledgements of the notices just before the
    30-day jump are checked after it and refused as expired; the members' delivery streams
    sign anew and go on, and the run prints no error or warning."""
    acknowledge = DeliveryRouter.acknowledge
    call = Runner.call

    async def slow_acknowledge(self: DeliveryRouter, *args: Any) -> Any:
        await asyncio.sleep(0.4)
        return await acknowledge(self, *args)

    async def slow_call(self: Runner, *args: Any) -> Any:
        await asyncio.sleep(0.05)
        return await call(self, *args)

    monkeypatch.setattr(DeliveryRouter, "acknowledge", slow_acknowledge)
    monkeypatch.setattr(Runner, "call", slow_call)
    out = io.StringIO()
    status = await run_demo(tmp_path / "demo", make_console(file=out, width=160))
    assert status == 0, out.getvalue()
    assert complaints(caplog) == []
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            refused = [r.entry.detail for r in uow.audit.scan(0, 100_000)]
    finally:
        store.dispose()
    expired = [d for d in refused if "ENVELOPE_EXPIRED" in d]
    assert expired, "the slow hub did refuse acknowledgements as expired"


async def test_a_demo_that_stalls_says_what_it_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bank A never answers the stop of the cash-out account."""
    monkeypatch.setattr(demo_cast, "WAIT", 4.0)
    handle = BankAgent.handle

    async def deaf(self: BankAgent, delivery: Delivery) -> bool:
        if (
            self.client.institution == "BANKA"
            and delivery.notice.kind == delivery_pb2.NOTICE_KIND_ORDER
        ):
            return False
        return await handle(self, delivery)

    monkeypatch.setattr(BankAgent, "handle", deaf)
    out = io.StringIO()
    status = await run_demo(tmp_path / "demo", make_console(file=out, width=160))
    text = out.getvalue()
    assert status == 1, text
    assert re.search(
        r"the demo stopped in the step 'the first victim: report, verification, the stops layer "
        r"by layer': it waited 12\.\d s \(24m \d+s of case time\) for BANKA to answer the third "
        r"layer's stop of C\d{8}-[0-9A-F]{8}",
        text,
    ), text
    # What the hub did last, from its audit log: Bank A reminded, then breached.
    assert "the hub's last 20 audit log entries (case time)" in text
    assert "order C" in text and "BANKA has not acted" in text
    assert "see the timeline above" not in text and "Traceback" not in text
